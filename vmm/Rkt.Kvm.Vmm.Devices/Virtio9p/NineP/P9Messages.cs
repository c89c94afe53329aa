// One record per 9P2000.L message: the constructor lists the fields in wire order, and Read and
// Write take them in that same order, so a record reads exactly what it writes.
using System.Buffers.Binary;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>A 9P2000.L message body: its type byte, and how it is read and written (after size[4] type[1] tag[2]).</summary>
public interface IP9Message<TSelf> where TSelf : IP9Message<TSelf>
{
    static abstract byte Type { get; }
    static abstract TSelf Read(ref P9Reader r);
    void Write(ref P9Writer w);
}

/// <summary>
/// Rread, Rreaddir and Twrite carry count[4] then data; the records hold only the header part,
/// since the server moves the data straight between guest memory and host files.
/// </summary>
public static class P9Messages
{
    /// <summary>Encodes a whole message (header, body) into <paramref name="buffer"/>; returns its length.</summary>
    public static int Encode<T>(Span<byte> buffer, ushort tag, in T message) where T : IP9Message<T>
    {
        var w = new P9Writer(buffer);
        w.Header(T.Type, tag);
        message.Write(ref w);
        return w.Finish();
    }

    /// <summary>Decodes a whole message whose type must be <typeparamref name="T"/>'s; the size field must match.</summary>
    public static T Decode<T>(ReadOnlySpan<byte> message, out ushort tag) where T : IP9Message<T>
    {
        var r = new P9Reader(message);
        uint size = r.U32();
        byte type = r.U8();
        tag = r.U16();
        if (size != message.Length || type != T.Type) throw new P9Error(HostFs.EPROTO, "the header does not match the message");
        var m = T.Read(ref r);
        r.End();
        return m;
    }

    /// <summary>
    /// Rread/Rreaddir's size[4] type[1] tag[2] count[4]; the size covers the <paramref name="count"/> data bytes
    /// whether they are inline after the header or already in the guest's buffers. Returns the bytes of the
    /// reply buffer used: the header, plus the data when it is <paramref name="inline"/>.
    /// </summary>
    internal static int EncodeDataHeader(Span<byte> reply, byte type, ushort tag, int count, bool inline)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(reply, (uint)(P9.ReadReplyHeader + count));
        reply[4] = type;
        BinaryPrimitives.WriteUInt16LittleEndian(reply[5..], tag);
        BinaryPrimitives.WriteUInt32LittleEndian(reply[7..], (uint)count);
        return inline ? P9.ReadReplyHeader + count : P9.ReadReplyHeader;
    }

    internal static string[] ReadNames(ref P9Reader r)
    {
        int n = r.U16();
        if (n > P9.MaxWalkNames) throw new P9Error(HostFs.EINVAL, $"a walk of {n} names (at most {P9.MaxWalkNames})");
        var names = new string[n];
        for (int i = 0; i < n; i++) names[i] = r.Str();
        return names;
    }

    internal static void WriteNames(ref P9Writer w, string[] names)
    {
        w.U16((ushort)names.Length);
        foreach (var s in names) w.Str(s);
    }

    internal static P9.Qid[] ReadQids(ref P9Reader r)
    {
        int n = r.U16();
        if (n > P9.MaxWalkNames) throw new P9Error(HostFs.EPROTO, $"{n} qids in a walk reply");
        var qids = new P9.Qid[n];
        for (int i = 0; i < n; i++) qids[i] = r.Qid();
        return qids;
    }

    internal static void WriteQids(ref P9Writer w, P9.Qid[] qids)
    {
        w.U16((ushort)qids.Length);
        foreach (var q in qids) w.Qid(q);
    }
}

public readonly record struct Tversion(uint Msize, string Version) : IP9Message<Tversion>
{
    public static byte Type => P9.Tversion;
    public static Tversion Read(ref P9Reader r) => new(r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(Msize); w.Str(Version); }
}

public readonly record struct Rversion(uint Msize, string Version) : IP9Message<Rversion>
{
    public static byte Type => P9.Rversion;
    public static Rversion Read(ref P9Reader r) => new(r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(Msize); w.Str(Version); }
}

public readonly record struct Tauth(uint Afid, string Uname, string Aname, uint NUname) : IP9Message<Tauth>
{
    public static byte Type => P9.Tauth;
    public static Tauth Read(ref P9Reader r) => new(r.U32(), r.Str(), r.Str(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Afid); w.Str(Uname); w.Str(Aname); w.U32(NUname); }
}

public readonly record struct Rauth(P9.Qid Aqid) : IP9Message<Rauth>
{
    public static byte Type => P9.Rauth;
    public static Rauth Read(ref P9Reader r) => new(r.Qid());
    public void Write(ref P9Writer w) { w.Qid(Aqid); }
}

public readonly record struct Tattach(uint Fid, uint Afid, string Uname, string Aname, uint NUname) : IP9Message<Tattach>
{
    public static byte Type => P9.Tattach;
    public static Tattach Read(ref P9Reader r) => new(r.U32(), r.U32(), r.Str(), r.Str(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U32(Afid); w.Str(Uname); w.Str(Aname); w.U32(NUname); }
}

public readonly record struct Rattach(P9.Qid Qid) : IP9Message<Rattach>
{
    public static byte Type => P9.Rattach;
    public static Rattach Read(ref P9Reader r) => new(r.Qid());
    public void Write(ref P9Writer w) { w.Qid(Qid); }
}

public readonly record struct Rlerror(uint Ecode) : IP9Message<Rlerror>
{
    public static byte Type => P9.Rlerror;
    public static Rlerror Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Ecode); }
}

public readonly record struct Tflush(ushort OldTag) : IP9Message<Tflush>
{
    public static byte Type => P9.Tflush;
    public static Tflush Read(ref P9Reader r) => new(r.U16());
    public void Write(ref P9Writer w) { w.U16(OldTag); }
}

public readonly record struct Rflush() : IP9Message<Rflush>
{
    public static byte Type => P9.Rflush;
    public static Rflush Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Twalk(uint Fid, uint NewFid, string[] Names) : IP9Message<Twalk>
{
    public static byte Type => P9.Twalk;
    public static Twalk Read(ref P9Reader r) => new(r.U32(), r.U32(), P9Messages.ReadNames(ref r));
    public void Write(ref P9Writer w) { w.U32(Fid); w.U32(NewFid); P9Messages.WriteNames(ref w, Names); }
}

public readonly record struct Rwalk(P9.Qid[] Qids) : IP9Message<Rwalk>
{
    public static byte Type => P9.Rwalk;
    public static Rwalk Read(ref P9Reader r) => new(P9Messages.ReadQids(ref r));
    public void Write(ref P9Writer w) { P9Messages.WriteQids(ref w, Qids); }
}

public readonly record struct Tgetattr(uint Fid, ulong RequestMask) : IP9Message<Tgetattr>
{
    public static byte Type => P9.Tgetattr;
    public static Tgetattr Read(ref P9Reader r) => new(r.U32(), r.U64());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U64(RequestMask); }
}

public readonly record struct Rgetattr(ulong Valid, P9.Qid Qid, uint Mode, uint Uid, uint Gid, ulong Nlink, ulong Rdev, ulong Size, ulong BlkSize, ulong Blocks, ulong AtimeSec, ulong AtimeNsec, ulong MtimeSec, ulong MtimeNsec, ulong CtimeSec, ulong CtimeNsec, ulong BtimeSec, ulong BtimeNsec, ulong Gen, ulong DataVersion) : IP9Message<Rgetattr>
{
    public static byte Type => P9.Rgetattr;
    public static Rgetattr Read(ref P9Reader r) => new(r.U64(), r.Qid(), r.U32(), r.U32(), r.U32(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64());
    public void Write(ref P9Writer w) { w.U64(Valid); w.Qid(Qid); w.U32(Mode); w.U32(Uid); w.U32(Gid); w.U64(Nlink); w.U64(Rdev); w.U64(Size); w.U64(BlkSize); w.U64(Blocks); w.U64(AtimeSec); w.U64(AtimeNsec); w.U64(MtimeSec); w.U64(MtimeNsec); w.U64(CtimeSec); w.U64(CtimeNsec); w.U64(BtimeSec); w.U64(BtimeNsec); w.U64(Gen); w.U64(DataVersion); }
}

public readonly record struct Tsetattr(uint Fid, uint Valid, uint Mode, uint Uid, uint Gid, ulong Size, ulong AtimeSec, ulong AtimeNsec, ulong MtimeSec, ulong MtimeNsec) : IP9Message<Tsetattr>
{
    public static byte Type => P9.Tsetattr;
    public static Tsetattr Read(ref P9Reader r) => new(r.U32(), r.U32(), r.U32(), r.U32(), r.U32(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U32(Valid); w.U32(Mode); w.U32(Uid); w.U32(Gid); w.U64(Size); w.U64(AtimeSec); w.U64(AtimeNsec); w.U64(MtimeSec); w.U64(MtimeNsec); }
}

public readonly record struct Rsetattr() : IP9Message<Rsetattr>
{
    public static byte Type => P9.Rsetattr;
    public static Rsetattr Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Tlopen(uint Fid, uint Flags) : IP9Message<Tlopen>
{
    public static byte Type => P9.Tlopen;
    public static Tlopen Read(ref P9Reader r) => new(r.U32(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U32(Flags); }
}

public readonly record struct Rlopen(P9.Qid Qid, uint Iounit) : IP9Message<Rlopen>
{
    public static byte Type => P9.Rlopen;
    public static Rlopen Read(ref P9Reader r) => new(r.Qid(), r.U32());
    public void Write(ref P9Writer w) { w.Qid(Qid); w.U32(Iounit); }
}

public readonly record struct Tlcreate(uint Fid, string Name, uint Flags, uint Mode, uint Gid) : IP9Message<Tlcreate>
{
    public static byte Type => P9.Tlcreate;
    public static Tlcreate Read(ref P9Reader r) => new(r.U32(), r.Str(), r.U32(), r.U32(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.Str(Name); w.U32(Flags); w.U32(Mode); w.U32(Gid); }
}

public readonly record struct Rlcreate(P9.Qid Qid, uint Iounit) : IP9Message<Rlcreate>
{
    public static byte Type => P9.Rlcreate;
    public static Rlcreate Read(ref P9Reader r) => new(r.Qid(), r.U32());
    public void Write(ref P9Writer w) { w.Qid(Qid); w.U32(Iounit); }
}

public readonly record struct Tread(uint Fid, ulong Offset, uint Count) : IP9Message<Tread>
{
    public static byte Type => P9.Tread;
    public static Tread Read(ref P9Reader r) => new(r.U32(), r.U64(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U64(Offset); w.U32(Count); }
}

public readonly record struct Rread(uint Count) : IP9Message<Rread>
{
    public static byte Type => P9.Rread;
    public static Rread Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Count); }
}

public readonly record struct Twrite(uint Fid, ulong Offset, uint Count) : IP9Message<Twrite>
{
    public static byte Type => P9.Twrite;
    public static Twrite Read(ref P9Reader r) => new(r.U32(), r.U64(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U64(Offset); w.U32(Count); }
}

public readonly record struct Rwrite(uint Count) : IP9Message<Rwrite>
{
    public static byte Type => P9.Rwrite;
    public static Rwrite Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Count); }
}

public readonly record struct Treaddir(uint Fid, ulong Offset, uint Count) : IP9Message<Treaddir>
{
    public static byte Type => P9.Treaddir;
    public static Treaddir Read(ref P9Reader r) => new(r.U32(), r.U64(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U64(Offset); w.U32(Count); }
}

public readonly record struct Rreaddir(uint Count) : IP9Message<Rreaddir>
{
    public static byte Type => P9.Rreaddir;
    public static Rreaddir Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Count); }
}

public readonly record struct Tmkdir(uint Dfid, string Name, uint Mode, uint Gid) : IP9Message<Tmkdir>
{
    public static byte Type => P9.Tmkdir;
    public static Tmkdir Read(ref P9Reader r) => new(r.U32(), r.Str(), r.U32(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Dfid); w.Str(Name); w.U32(Mode); w.U32(Gid); }
}

public readonly record struct Rmkdir(P9.Qid Qid) : IP9Message<Rmkdir>
{
    public static byte Type => P9.Rmkdir;
    public static Rmkdir Read(ref P9Reader r) => new(r.Qid());
    public void Write(ref P9Writer w) { w.Qid(Qid); }
}

public readonly record struct Tsymlink(uint Fid, string Name, string Target, uint Gid) : IP9Message<Tsymlink>
{
    public static byte Type => P9.Tsymlink;
    public static Tsymlink Read(ref P9Reader r) => new(r.U32(), r.Str(), r.Str(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.Str(Name); w.Str(Target); w.U32(Gid); }
}

public readonly record struct Rsymlink(P9.Qid Qid) : IP9Message<Rsymlink>
{
    public static byte Type => P9.Rsymlink;
    public static Rsymlink Read(ref P9Reader r) => new(r.Qid());
    public void Write(ref P9Writer w) { w.Qid(Qid); }
}

public readonly record struct Tlink(uint Dfid, uint Fid, string Name) : IP9Message<Tlink>
{
    public static byte Type => P9.Tlink;
    public static Tlink Read(ref P9Reader r) => new(r.U32(), r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(Dfid); w.U32(Fid); w.Str(Name); }
}

public readonly record struct Rlink() : IP9Message<Rlink>
{
    public static byte Type => P9.Rlink;
    public static Rlink Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Trenameat(uint OldDirFid, string OldName, uint NewDirFid, string NewName) : IP9Message<Trenameat>
{
    public static byte Type => P9.Trenameat;
    public static Trenameat Read(ref P9Reader r) => new(r.U32(), r.Str(), r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(OldDirFid); w.Str(OldName); w.U32(NewDirFid); w.Str(NewName); }
}

public readonly record struct Rrenameat() : IP9Message<Rrenameat>
{
    public static byte Type => P9.Rrenameat;
    public static Rrenameat Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Trename(uint Fid, uint Dfid, string Name) : IP9Message<Trename>
{
    public static byte Type => P9.Trename;
    public static Trename Read(ref P9Reader r) => new(r.U32(), r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U32(Dfid); w.Str(Name); }
}

public readonly record struct Rrename() : IP9Message<Rrename>
{
    public static byte Type => P9.Rrename;
    public static Rrename Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Tunlinkat(uint DirFid, string Name, uint Flags) : IP9Message<Tunlinkat>
{
    public static byte Type => P9.Tunlinkat;
    public static Tunlinkat Read(ref P9Reader r) => new(r.U32(), r.Str(), r.U32());
    public void Write(ref P9Writer w) { w.U32(DirFid); w.Str(Name); w.U32(Flags); }
}

public readonly record struct Runlinkat() : IP9Message<Runlinkat>
{
    public static byte Type => P9.Runlinkat;
    public static Runlinkat Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Treadlink(uint Fid) : IP9Message<Treadlink>
{
    public static byte Type => P9.Treadlink;
    public static Treadlink Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); }
}

public readonly record struct Rreadlink(string Target) : IP9Message<Rreadlink>
{
    public static byte Type => P9.Rreadlink;
    public static Rreadlink Read(ref P9Reader r) => new(r.Str());
    public void Write(ref P9Writer w) { w.Str(Target); }
}

public readonly record struct Tstatfs(uint Fid) : IP9Message<Tstatfs>
{
    public static byte Type => P9.Tstatfs;
    public static Tstatfs Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); }
}

public readonly record struct Rstatfs(uint FsType, uint BSize, ulong Blocks, ulong BFree, ulong BAvail, ulong Files, ulong FFree, ulong Fsid, uint NameLen) : IP9Message<Rstatfs>
{
    public static byte Type => P9.Rstatfs;
    public static Rstatfs Read(ref P9Reader r) => new(r.U32(), r.U32(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U64(), r.U32());
    public void Write(ref P9Writer w) { w.U32(FsType); w.U32(BSize); w.U64(Blocks); w.U64(BFree); w.U64(BAvail); w.U64(Files); w.U64(FFree); w.U64(Fsid); w.U32(NameLen); }
}

public readonly record struct Tfsync(uint Fid, uint Datasync) : IP9Message<Tfsync>
{
    public static byte Type => P9.Tfsync;
    public static Tfsync Read(ref P9Reader r) => new(r.U32(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U32(Datasync); }
}

public readonly record struct Rfsync() : IP9Message<Rfsync>
{
    public static byte Type => P9.Rfsync;
    public static Rfsync Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Txattrwalk(uint Fid, uint NewFid, string Name) : IP9Message<Txattrwalk>
{
    public static byte Type => P9.Txattrwalk;
    public static Txattrwalk Read(ref P9Reader r) => new(r.U32(), r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U32(NewFid); w.Str(Name); }
}

public readonly record struct Rxattrwalk(ulong Size) : IP9Message<Rxattrwalk>
{
    public static byte Type => P9.Rxattrwalk;
    public static Rxattrwalk Read(ref P9Reader r) => new(r.U64());
    public void Write(ref P9Writer w) { w.U64(Size); }
}

public readonly record struct Txattrcreate(uint Fid, string Name, ulong AttrSize, uint Flags) : IP9Message<Txattrcreate>
{
    public static byte Type => P9.Txattrcreate;
    public static Txattrcreate Read(ref P9Reader r) => new(r.U32(), r.Str(), r.U64(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); w.Str(Name); w.U64(AttrSize); w.U32(Flags); }
}

public readonly record struct Rxattrcreate() : IP9Message<Rxattrcreate>
{
    public static byte Type => P9.Rxattrcreate;
    public static Rxattrcreate Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Tlock(uint Fid, byte LockType, uint Flags, ulong Start, ulong Length, uint ProcId, string ClientId) : IP9Message<Tlock>
{
    public static byte Type => P9.Tlock;
    public static Tlock Read(ref P9Reader r) => new(r.U32(), r.U8(), r.U32(), r.U64(), r.U64(), r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U8(LockType); w.U32(Flags); w.U64(Start); w.U64(Length); w.U32(ProcId); w.Str(ClientId); }
}

public readonly record struct Rlock(byte Status) : IP9Message<Rlock>
{
    public static byte Type => P9.Rlock;
    public static Rlock Read(ref P9Reader r) => new(r.U8());
    public void Write(ref P9Writer w) { w.U8(Status); }
}

public readonly record struct Tgetlock(uint Fid, byte LockType, ulong Start, ulong Length, uint ProcId, string ClientId) : IP9Message<Tgetlock>
{
    public static byte Type => P9.Tgetlock;
    public static Tgetlock Read(ref P9Reader r) => new(r.U32(), r.U8(), r.U64(), r.U64(), r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U32(Fid); w.U8(LockType); w.U64(Start); w.U64(Length); w.U32(ProcId); w.Str(ClientId); }
}

public readonly record struct Rgetlock(byte LockType, ulong Start, ulong Length, uint ProcId, string ClientId) : IP9Message<Rgetlock>
{
    public static byte Type => P9.Rgetlock;
    public static Rgetlock Read(ref P9Reader r) => new(r.U8(), r.U64(), r.U64(), r.U32(), r.Str());
    public void Write(ref P9Writer w) { w.U8(LockType); w.U64(Start); w.U64(Length); w.U32(ProcId); w.Str(ClientId); }
}

public readonly record struct Tmknod(uint Dfid, string Name, uint Mode, uint Major, uint Minor, uint Gid) : IP9Message<Tmknod>
{
    public static byte Type => P9.Tmknod;
    public static Tmknod Read(ref P9Reader r) => new(r.U32(), r.Str(), r.U32(), r.U32(), r.U32(), r.U32());
    public void Write(ref P9Writer w) { w.U32(Dfid); w.Str(Name); w.U32(Mode); w.U32(Major); w.U32(Minor); w.U32(Gid); }
}

public readonly record struct Rmknod(P9.Qid Qid) : IP9Message<Rmknod>
{
    public static byte Type => P9.Rmknod;
    public static Rmknod Read(ref P9Reader r) => new(r.Qid());
    public void Write(ref P9Writer w) { w.Qid(Qid); }
}

public readonly record struct Tclunk(uint Fid) : IP9Message<Tclunk>
{
    public static byte Type => P9.Tclunk;
    public static Tclunk Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); }
}

public readonly record struct Rclunk() : IP9Message<Rclunk>
{
    public static byte Type => P9.Rclunk;
    public static Rclunk Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

public readonly record struct Tremove(uint Fid) : IP9Message<Tremove>
{
    public static byte Type => P9.Tremove;
    public static Tremove Read(ref P9Reader r) => new(r.U32());
    public void Write(ref P9Writer w) { w.U32(Fid); }
}

public readonly record struct Rremove() : IP9Message<Rremove>
{
    public static byte Type => P9.Rremove;
    public static Rremove Read(ref P9Reader r) => new();
    public void Write(ref P9Writer w) {  }
}

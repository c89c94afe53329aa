using Rkt.Kvm.Posix;
using static Rkt.Kvm.Vmm.Devices.Virtio9p.NineP.P9Checks;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Requests on one file: attributes (Tgetattr, Tsetattr, Tstatfs, Treadlink), opening (Tlopen,
/// Tlcreate) and I/O (Tread, Twrite, Tfsync). Only regular files and directories are ever opened,
/// through the fid's pinned O_PATH fd, and Tread/Twrite data moves through the <see cref="IP9Transfer"/>
/// without a copy here.
/// </summary>
internal sealed class P9FileOps(P9Session session)
{
    private P9FidTable Fids => session.Fids;

    // ------------------------------------------------------------------ attributes

    public Rgetattr Getattr(Tgetattr m)
    {
        var fid = Fids.Get(m.Fid);
        using var scope = fid.Export.Enter();
        var st = HostFs.Stat(fid.Path);
        // The listing root's backing directory is deleted (nlink 0): show a plain read-only directory.
        if (fid.Export.IsExportListing) (st.Mode, st.Nlink) = (HostFs.S_IFDIR | 0x16D /* 0555 */, 2);
        return new Rgetattr(P9.StatsBasic, P9.Qid.From(st), st.Mode, st.Uid, st.Gid, st.Nlink, st.Rdev, (ulong)st.Size, (ulong)st.BlkSize, (ulong)st.Blocks,
            (ulong)st.AtimeSec, (ulong)st.AtimeNsec, (ulong)st.MtimeSec, (ulong)st.MtimeNsec, (ulong)st.CtimeSec, (ulong)st.CtimeNsec, 0, 0, 0, 0);
    }

    public Rsetattr Setattr(Tsetattr m)
    {
        var fid = Fids.Get(m.Fid);
        Writable(fid);
        using var scope = fid.Export.Enter();
        var path = fid.Path;
        var st = HostFs.Stat(path);
        bool plain = st.IsRegular || st.IsDirectory;
        if ((m.Valid & P9.AttrMode) != 0)
        {
            if (!plain) throw new P9Error(HostFs.EOPNOTSUPP, "chmod of a symlink or special file");
            HostFs.Chmod(path, SafeMode(m.Mode, st.IsDirectory));
        }
        if ((m.Valid & (P9.AttrUid | P9.AttrGid)) != 0)
            HostFs.Chown(path, (m.Valid & P9.AttrUid) != 0 ? m.Uid : uint.MaxValue, (m.Valid & P9.AttrGid) != 0 ? m.Gid : uint.MaxValue);
        if ((m.Valid & P9.AttrSize) != 0)
        {
            if (!st.IsRegular) throw new P9Error(st.IsDirectory ? HostFs.EISDIR : HostFs.EINVAL);
            if (m.Size > long.MaxValue) throw new P9Error(HostFs.EFBIG);
            HostFs.Truncate(path, (long)m.Size);
        }
        if ((m.Valid & (P9.AttrAtime | P9.AttrMtime)) != 0)
        {
            if (!plain) throw new P9Error(HostFs.EOPNOTSUPP, "times of a symlink or special file");
            (long, long) Time(uint bit, uint setBit, ulong sec, ulong nsec)
            {
                if ((m.Valid & bit) == 0) return (0, HostFs.UTIME_OMIT);
                if ((m.Valid & setBit) == 0) return (0, HostFs.UTIME_NOW);
                if (nsec >= 1_000_000_000 || sec > long.MaxValue) throw new P9Error(HostFs.EINVAL, "an invalid time");
                return ((long)sec, (long)nsec);
            }
            var (aSec, aNsec) = Time(P9.AttrAtime, P9.AttrAtimeSet, m.AtimeSec, m.AtimeNsec);
            var (mSec, mNsec) = Time(P9.AttrMtime, P9.AttrMtimeSet, m.MtimeSec, m.MtimeNsec);
            HostFs.SetTimes(path, aSec, aNsec, mSec, mNsec);
        }
        return new();
    }

    public Rstatfs Statfs(Tstatfs m)
    {
        var fid = Fids.Get(m.Fid);
        using var scope = fid.Export.Enter();
        var s = HostFs.StatFs(fid.Path);
        return new Rstatfs((uint)s.Type, (uint)s.BSize, s.Blocks, s.BFree, s.BAvail, s.Files, s.FFree, s.Fsid, (uint)s.NameLen);
    }

    public Rreadlink Readlink(Treadlink m)
    {
        var fid = Fids.Get(m.Fid);
        using var scope = fid.Export.Enter();
        if (fid.FileType != HostFs.S_IFLNK) throw new P9Error(HostFs.EINVAL, "not a symlink");
        return new Rreadlink(HostFs.ReadLink(fid.Path));
    }

    // ------------------------------------------------------------------ open and create

    public Rlopen Lopen(Tlopen m)
    {
        var fid = Fids.Get(m.Fid);
        using var scope = fid.Export.Enter();
        lock (fid)
        {
            if (fid.OpenFd is not null || fid.Xattr is not null) throw new P9Error(HostFs.EBADF, "the fid is already open");
            var path = fid.Path;
            var st = HostFs.Stat(path);
            FileDescriptor fd;
            int flags;
            if (st.IsDirectory)
            {
                flags = HostFs.O_RDONLY;
                if (((int)m.Flags & HostFs.O_ACCMODE) != HostFs.O_RDONLY) throw new P9Error(HostFs.EISDIR);
            }
            else if (st.IsRegular) flags = OpenFlags(m.Flags, fid.Export.ReadOnly);
            else throw new P9Error(st.IsSymlink ? HostFs.ELOOP : HostFs.EPERM, "only regular files and directories are opened");
            // The open fd is a second host fd for this fid: it counts against the fid limit.
            Fids.ReserveOpen();
            try
            {
                // The listing root is read from the export table, not the host: its "open" fd is never read.
                // A regular file is opened only now, with the inode pinned and its type known, through its magic link.
                fd = !st.IsDirectory ? HostFs.Reopen(path, flags)
                    : fid.Export.IsExportListing ? HostFs.Dup(path) : HostFs.OpenAt(path, ".", HostFs.O_RDONLY | HostFs.O_DIRECTORY);
            }
            catch
            {
                Fids.ReleaseOpen();
                throw;
            }
            fid.OpenFd = fd;
            fid.OpenFlags = flags;
            fid.DirOffset = 0;
            return new Rlopen(P9.Qid.From(st), 0);
        }
    }

    public Rlcreate Lcreate(Tlcreate m)
    {
        var fid = Fids.Get(m.Fid);
        Writable(fid);
        string name = Name(m.Name);
        using var scope = fid.Export.Enter();
        lock (fid)
        {
            Directory(fid);
            if (fid.OpenFd is not null) throw new P9Error(HostFs.EBADF, "the directory fid is open");
            int flags = OpenFlags(m.Flags, false) | HostFs.O_NOFOLLOW;
            var dir = fid.Path;
            Fids.ReserveOpen(); // the created file's open fd, as in Lopen
            FileDescriptor fd;
            bool created;
            try { fd = CreateOrOpen(dir, name, flags, exclusive: ((int)m.Flags & HostFs.O_EXCL) != 0, out created); }
            catch
            {
                Fids.ReleaseOpen();
                throw;
            }
            FileDescriptor? pathFd = null;
            try
            {
                var st = HostFs.Stat(fd);
                // An existing FIFO or device under that name was opened non-blocking above; refuse it now.
                if (!st.IsRegular) throw new P9Error(HostFs.EEXIST, "the name exists and is not a regular file");
                // Only a file made here becomes the guest user's; an existing one keeps its owner and mode.
                if (created) P9NewEntry.Own(session, fid, name, fd, st, m.Gid, m.Mode);
                pathFd = HostFs.Reopen(fd, HostFs.O_PATH);
                fid.PathFd!.Dispose();
                fid.PathFd = pathFd;
                fid.Components = [.. fid.Components, name];
                fid.FileType = HostFs.S_IFREG;
                fid.OpenFd = fd;
                fid.OpenFlags = flags;
                return new Rlcreate(P9.Qid.From(st), 0);
            }
            catch
            {
                pathFd?.Dispose();
                fd.Dispose();
                Fids.ReleaseOpen();
                throw;
            }
        }
    }

    /// <summary>
    /// Makes <paramref name="name"/> with O_CREAT|O_EXCL first, so that the server knows whether it made
    /// the file (only then does it get the guest's owner and mode); without the guest's O_EXCL an
    /// existing file is opened as it is (and one removed in between is made after all).
    /// </summary>
    private static FileDescriptor CreateOrOpen(FileDescriptor dir, string name, int flags, bool exclusive, out bool created)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                var fd = HostFs.OpenAt(dir, name, flags | HostFs.O_CREAT | HostFs.O_EXCL, P9NewEntry.InitialMode);
                created = true;
                return fd;
            }
            catch (P9Error e) when (e.Errno == HostFs.EEXIST && !exclusive) { }
            try
            {
                var fd = HostFs.OpenAt(dir, name, flags);
                created = false;
                return fd;
            }
            catch (P9Error e) when (e.Errno == HostFs.ENOENT && attempt < 3) { }
        }
    }

    /// <summary>Guest open flags (P9_DOTL_*, equal to x86 Linux's) reduced to what is safe here; O_NONBLOCK so nothing can block a worker.</summary>
    private static int OpenFlags(uint flags, bool readOnlyExport)
    {
        int f = (int)flags;
        int access = f & HostFs.O_ACCMODE;
        if (access == HostFs.O_ACCMODE) throw new P9Error(HostFs.EINVAL, "an invalid access mode"); // 3: no such access mode
        int result = access | (f & (HostFs.O_TRUNC | HostFs.O_APPEND | HostFs.O_SYNC));
        if (readOnlyExport && (access != HostFs.O_RDONLY || (f & HostFs.O_TRUNC) != 0)) throw new P9Error(HostFs.EROFS);
        return result | HostFs.O_NONBLOCK | HostFs.O_NOCTTY;
    }

    // ------------------------------------------------------------------ read, write, fsync

    private static FileDescriptor OpenFile(P9Fid fid, bool write)
    {
        var fd = fid.OpenFd ?? throw new P9Error(HostFs.EBADF, "the fid is not open");
        if (fid.IsDirectory) throw new P9Error(HostFs.EISDIR);
        int access = fid.OpenFlags & HostFs.O_ACCMODE;
        if (write ? access == HostFs.O_RDONLY : access == HostFs.O_WRONLY) throw new P9Error(HostFs.EBADF, "the fid is not open for that");
        return fd;
    }

    /// <summary>Tread: an xattr fid's value inline in the reply; a file's bytes straight into the guest's buffers.</summary>
    public P9Reply Read(Tread m, ushort tag, Span<byte> reply, IP9Transfer transfer)
    {
        var fid = Fids.Get(m.Fid);
        if (m.Offset > long.MaxValue) throw new P9Error(HostFs.EINVAL, "a negative offset");
        int count = (int)Math.Min(m.Count, Math.Min(session.Msize - P9.ReadReplyHeader, Math.Max(0, transfer.ReplyCapacity - P9.ReadReplyHeader)));
        if (reply.Length < P9.ReadReplyHeader) throw new P9Error(HostFs.EMSGSIZE);
        if (fid.Xattr is { } value)
        {
            int n = (int)Math.Min((ulong)Math.Max(0, value.Length - (long)Math.Min(m.Offset, (ulong)value.Length)), (ulong)Math.Min(count, reply.Length - P9.ReadReplyHeader));
            value.AsSpan((int)Math.Min(m.Offset, (ulong)value.Length), n).CopyTo(reply[P9.ReadReplyHeader..]);
            return new P9Reply(P9Messages.EncodeDataHeader(reply, P9.Rread, tag, n, inline: true), 0);
        }
        using var scope = fid.Export.Enter();
        int read = transfer.ReadFile(OpenFile(fid, write: false), (long)m.Offset, count);
        return new P9Reply(P9Messages.EncodeDataHeader(reply, P9.Rread, tag, read, inline: false), read);
    }

    /// <summary>Twrite: <paramref name="size"/> is the whole message's; the data the transfer writes follows the header in the guest's buffers.</summary>
    public Rwrite Write(Twrite m, uint size, IP9Transfer transfer)
    {
        var fid = Fids.Get(m.Fid);
        Writable(fid);
        if (m.Offset > long.MaxValue || m.Offset + m.Count > long.MaxValue) throw new P9Error(HostFs.EINVAL, "a negative offset");
        if (size < P9.WriteRequestHeader || m.Count > size - P9.WriteRequestHeader) throw new P9Error(HostFs.EPROTO, $"a write of {m.Count} bytes carries {size - Math.Min(size, P9.WriteRequestHeader)}");
        using var scope = fid.Export.Enter();
        return new Rwrite((uint)transfer.WriteFile(OpenFile(fid, write: true), (long)m.Offset, (int)m.Count));
    }

    public Rfsync Fsync(Tfsync m)
    {
        var fid = Fids.Get(m.Fid);
        using var scope = fid.Export.Enter();
        if (fid.OpenFd is { } fd) HostFs.Fsync(fd, m.Datasync != 0);
        return new();
    }
}

using System.Buffers.Binary;
using System.Text;
using Rkt.Kvm.Posix;
using static Rkt.Kvm.Vmm.Devices.Virtio9p.NineP.P9Checks;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Requests on directories: listing (Treaddir, including the export-listing root's) and changing
/// entries (Tmkdir, Tmknod, Tsymlink, Tlink, Trename, Trenameat, Tunlinkat, Tremove). New names are
/// single validated components, new entries belong to the guest user that made them with exactly
/// the mode asked for (<see cref="P9NewEntry"/>), new files never get set-id bits, mknod makes only
/// regular files, links and renames stay inside one export, and nothing is written on a read-only export.
/// </summary>
internal sealed class P9DirectoryOps(P9Session session, P9Exports exports)
{
    /// <summary>The most getdents bytes read per Treaddir step.</summary>
    private const int DirentChunk = 32 * 1024;
    /// <summary>linux_dirent64: d_ino[8] d_off[8] d_reclen[2] d_type[1], then the NUL-terminated name.</summary>
    private const int DirentNameOffset = 19;
    /// <summary>An Rreaddir entry without its name: qid[13] offset[8] type[1] name length[2].</summary>
    private const int EntryHeader = P9.QidSize + 8 + 1 + 2;
    /// <summary>d_type values (dirent.h; Tmds.LibC has no DT_ constants).</summary>
    private const byte DT_DIR = 4, DT_LNK = 10;

    [ThreadStatic] private static byte[]? t_dirents;

    private P9FidTable Fids => session.Fids;

    // ------------------------------------------------------------------ listing

    public unsafe P9Reply Readdir(Treaddir m, ushort tag, Span<byte> reply, IP9Transfer transfer)
    {
        var fid = Fids.Get(m.Fid);
        if (m.Offset > long.MaxValue) throw new P9Error(HostFs.EINVAL, "a negative offset");
        using var scope = fid.Export.Enter();
        if (!fid.IsDirectory || fid.OpenFd is null) throw new P9Error(fid.IsDirectory ? HostFs.EBADF : HostFs.ENOTDIR);
        int count = (int)Math.Min(m.Count, Math.Min(session.Msize - P9.ReadReplyHeader, Math.Min(reply.Length, transfer.ReplyCapacity) - P9.ReadReplyHeader));
        if (count < 0) throw new P9Error(HostFs.EMSGSIZE);
        var w = new P9Writer(reply.Slice(P9.ReadReplyHeader, count));
        if (fid.Export.IsExportListing) return ListingReaddir(m.Offset, tag, reply, ref w);
        var buffer = t_dirents ??= new byte[DirentChunk];
        lock (fid)
        {
            var fd = fid.OpenFd ?? throw new P9Error(HostFs.EBADF);
            if ((long)m.Offset != fid.DirOffset)
            {
                HostFs.Seek(fd, (long)m.Offset);
                fid.DirOffset = (long)m.Offset;
            }
            long position = fid.DirOffset;
            bool full = false;
            while (!full)
            {
                int n;
                fixed (byte* p = buffer) n = HostFs.GetDents(fd, p, buffer.Length);
                if (n == 0) break;
                for (int at = 0; at < n;)
                {
                    ulong ino = BinaryPrimitives.ReadUInt64LittleEndian(buffer.AsSpan(at));
                    long off = BinaryPrimitives.ReadInt64LittleEndian(buffer.AsSpan(at + 8));
                    int reclen = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(at + 16));
                    byte dtype = buffer[at + 18];
                    var nameBytes = buffer.AsSpan(at + DirentNameOffset, reclen - DirentNameOffset);
                    nameBytes = nameBytes[..nameBytes.IndexOf((byte)0)];
                    at += reclen;
                    int entry = EntryHeader + nameBytes.Length;
                    if (entry > w.Remaining) { full = true; break; }
                    w.Qid(new P9.Qid(dtype == DT_DIR ? P9.QidDir : dtype == DT_LNK ? P9.QidSymlink : P9.QidFile, 0, ino));
                    w.U64((ulong)off);
                    w.U8(dtype);
                    w.U16((ushort)nameBytes.Length);
                    w.Bytes(nameBytes);
                    position = off;
                }
            }
            if (w.Position == 0 && full) throw new P9Error(HostFs.EINVAL, "the readdir count is too small for one entry");
            // getdents read ahead of what fitted: continue next time right after the last entry sent.
            HostFs.Seek(fd, position);
            fid.DirOffset = position;
        }
        return new P9Reply(P9Messages.EncodeDataHeader(reply, P9.Rreaddir, tag, w.Position, inline: true), 0);
    }

    /// <summary>The listing root's entries: ".", "..", then the exports by name; the offset cookie of entry i is i + 1.</summary>
    private P9Reply ListingReaddir(ulong offset, ushort tag, Span<byte> reply, ref P9Writer w)
    {
        List<(string Name, P9.Qid Qid)> entries = [(".", exports.ListingQid()), ("..", exports.ListingQid())];
        foreach (var e in exports.Sorted())
        {
            if (!e.TryEnter()) continue;
            try { entries.Add((e.Name, P9.Qid.Of(e.Root))); }
            finally { e.Exit(); }
        }
        for (int i = (int)Math.Min(offset, (ulong)entries.Count); i < entries.Count; i++)
        {
            var name = Encoding.UTF8.GetBytes(entries[i].Name);
            if (EntryHeader + name.Length > w.Remaining)
            {
                if (w.Position == 0) throw new P9Error(HostFs.EINVAL, "the readdir count is too small for one entry");
                break;
            }
            w.Qid(entries[i].Qid);
            w.U64((ulong)(i + 1));
            w.U8(DT_DIR);
            w.U16((ushort)name.Length);
            w.Bytes(name);
        }
        return new P9Reply(P9Messages.EncodeDataHeader(reply, P9.Rreaddir, tag, w.Position, inline: true), 0);
    }

    // ------------------------------------------------------------------ new entries

    public Rmkdir Mkdir(Tmkdir m)
    {
        var dir = Directory(Fids.Get(m.Dfid));
        Writable(dir);
        string name = Name(m.Name);
        using var scope = dir.Export.Enter();
        HostFs.MkdirAt(dir.Path, name, P9NewEntry.InitialMode);
        return new Rmkdir(P9NewEntry.Own(session, dir, name, HostFs.S_IFDIR, m.Gid, m.Mode));
    }

    public Rsymlink Symlink(Tsymlink m)
    {
        var dir = Directory(Fids.Get(m.Fid));
        Writable(dir);
        string name = Name(m.Name);
        // The target is only text for the guest to resolve in its own namespace; the host never follows it.
        if (m.Target.Length == 0 || m.Target.Contains('\0') || Encoding.UTF8.GetByteCount(m.Target) > P9.MaxSymlinkTarget)
            throw new P9Error(HostFs.EINVAL, "an invalid symlink target");
        using var scope = dir.Export.Enter();
        HostFs.SymlinkAt(m.Target, dir.Path, name);
        return new Rsymlink(P9NewEntry.Own(session, dir, name, HostFs.S_IFLNK, m.Gid, 0));
    }

    public Rmknod Mknod(Tmknod m)
    {
        var dir = Directory(Fids.Get(m.Dfid));
        Writable(dir);
        string name = Name(m.Name);
        // Device nodes would hand the guest host devices; FIFOs and sockets could block or confuse host programs.
        if ((m.Mode & HostFs.S_IFMT) != HostFs.S_IFREG) throw new P9Error(HostFs.EPERM, "only regular files may be made with mknod");
        using var scope = dir.Export.Enter();
        HostFs.MknodAt(dir.Path, name, HostFs.S_IFREG | P9NewEntry.InitialMode);
        return new Rmknod(P9NewEntry.Own(session, dir, name, HostFs.S_IFREG, m.Gid, m.Mode));
    }

    public Rlink Link(Tlink m)
    {
        var dir = Directory(Fids.Get(m.Dfid));
        var target = Fids.Get(m.Fid);
        SameExport(dir, target);
        Writable(dir);
        string name = Name(m.Name);
        using var scope = dir.Export.Enter();
        if (target.FileType != HostFs.S_IFREG) throw new P9Error(HostFs.EPERM, "only regular files are hard-linked");
        HostFs.LinkAt(target.Path, dir.Path, name);
        return new();
    }

    // ------------------------------------------------------------------ renames and removals

    public Rrenameat Renameat(Trenameat m)
    {
        var from = Directory(Fids.Get(m.OldDirFid));
        var to = Directory(Fids.Get(m.NewDirFid));
        SameExport(from, to);
        Writable(from);
        string oldName = Name(m.OldName), newName = Name(m.NewName);
        using var scope = from.Export.Enter();
        HostFs.RenameAt(from.Path, oldName, to.Path, newName);
        return new();
    }

    public Rrename Rename(Trename m)
    {
        var fid = Fids.Get(m.Fid);
        var to = Directory(Fids.Get(m.Dfid));
        SameExport(fid, to);
        Writable(fid);
        string name = Name(m.Name);
        if (fid.Components.Length == 0) throw new P9Error(HostFs.EBUSY, "the export root cannot be renamed");
        using var scope = fid.Export.Enter();
        using var parent = P9Walker.FromRoot(fid.Export, fid.Components, fid.Components.Length - 1);
        HostFs.RenameAt(parent, fid.Components[^1], to.Path, name);
        lock (fid) fid.Components = [.. to.Components, name];
        return new();
    }

    public Runlinkat Unlinkat(Tunlinkat m)
    {
        var dir = Directory(Fids.Get(m.DirFid));
        Writable(dir);
        string name = Name(m.Name);
        if ((m.Flags & ~(uint)HostFs.AT_REMOVEDIR) != 0) throw new P9Error(HostFs.EINVAL, "unknown unlink flags");
        using var scope = dir.Export.Enter();
        HostFs.UnlinkAt(dir.Path, name, (int)m.Flags);
        return new();
    }

    public Rremove Remove(Tremove m)
    {
        var fid = Fids.Get(m.Fid);
        try
        {
            Writable(fid);
            if (fid.Components.Length == 0) throw new P9Error(HostFs.EBUSY, "the export root cannot be removed");
            using var scope = fid.Export.Enter();
            using var parent = P9Walker.FromRoot(fid.Export, fid.Components, fid.Components.Length - 1);
            HostFs.UnlinkAt(parent, fid.Components[^1], fid.IsDirectory ? HostFs.AT_REMOVEDIR : 0);
        }
        finally
        {
            // Tremove clunks the fid whether or not the remove worked.
            try { Fids.Clunk(m.Fid); } catch (P9Error) { }
        }
        return new();
    }
}

using System.Buffers.Binary;
using System.Text;
using Rkt.Kvm.Vmm.Kvm;
using Serilog;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Where Tread data goes and Twrite data comes from, so file bytes move straight between host files
/// and the guest's buffers (the virtio device passes its descriptor chain; tests pass arrays).
/// </summary>
public interface IP9Transfer
{
    /// <summary>Total bytes the guest offered for the reply.</summary>
    long ReplyCapacity { get; }
    /// <summary>preads up to <paramref name="count"/> bytes into the reply after its 11-byte Rread header; returns how many.</summary>
    int ReadFile(FileDescriptor fd, long offset, int count);
    /// <summary>pwrites <paramref name="count"/> request bytes that follow the 23-byte Twrite header; returns how many.</summary>
    int WriteFile(FileDescriptor fd, long offset, int count);
}

/// <summary>A reply: <see cref="Length"/> bytes in the reply buffer, then <see cref="DataLength"/> bytes the transfer already wrote after them.</summary>
public readonly record struct P9Reply(int Length, int DataLength)
{
    public int Used => Length + DataLength;
}

/// <summary>What the control socket shows of an export.</summary>
public sealed record P9ExportInfo(string Name, string Path, bool ReadOnly, int Fids);

/// <summary>
/// A 9P2000.L file server for one guest session over a set of exports (picked by Tattach's aname).
/// Requests may run concurrently on several threads. Nothing the guest sends is trusted: names are
/// single validated components, walks go one component at a time with O_PATH|O_NOFOLLOW from the
/// fid's pinned fd, ".." is resolved by the fid's path inside the export (never the host's ".."),
/// symlinks are never followed on the host, only regular files and directories are ever opened,
/// counts and offsets are checked, and any failure becomes Rlerror, never an exception out of here.
/// </summary>
public sealed class P9Server : IDisposable
{
    /// <summary>The most getdents bytes read per Treaddir step.</summary>
    private const int DirentChunk = 32 * 1024;
    private const int MaxXattrSize = 64 * 1024;

    private readonly Dictionary<string, P9Export> _exports = new(StringComparer.Ordinal);
    private readonly P9Export _listing = P9Export.ExportListingRoot();
    private readonly P9FidTable _fids;
    private readonly ILogger _log;
    private volatile uint _msize = 8192;

    [ThreadStatic] private static byte[]? t_dirents;

    /// <summary><paramref name="maxFids"/> bounds the host fds one guest can hold open through us.</summary>
    public P9Server(ILogger log, int maxFids = P9FidTable.DefaultMaxFids)
    {
        _log = log;
        _fids = new P9FidTable(maxFids);
    }

    public uint Msize => _msize;
    public int FidCount => _fids.Count;

    // ------------------------------------------------------------------ exports (control socket, CLI)

    public void AddExport(string name, string hostPath, bool readOnly)
    {
        P9Export.ValidateName(name);
        lock (_exports)
        {
            if (_exports.ContainsKey(name)) throw new ArgumentException($"Export '{name}' already exists.");
            _exports[name] = P9Export.Open(name, hostPath, readOnly);
        }
        _log.Information("9p: export {Name} -> {Path} ({Mode})", name, hostPath, readOnly ? "read-only" : "read-write");
    }

    /// <summary>
    /// Removes an export: new attaches and requests on its fids fail at once, requests inside finish,
    /// then every host fd under it is closed before this returns. Returns how many fds were closed.
    /// </summary>
    public int RemoveExport(string name)
    {
        P9Export? export;
        lock (_exports)
        {
            if (!_exports.Remove(name, out export)) throw new ArgumentException($"No export is named '{name}'.");
        }
        export.CloseGate();
        int closed = _fids.CloseExport(export) + 1;
        export.Root.Dispose();
        _log.Information("9p: removed export {Name}, closed {Fds} host fds", name, closed);
        return closed;
    }

    public IReadOnlyList<P9ExportInfo> ListExports()
    {
        List<P9Export> exports;
        lock (_exports) exports = [.. _exports.Values];
        return exports.OrderBy(e => e.Name, StringComparer.Ordinal)
            .Select(e => new P9ExportInfo(e.Name, e.HostPath, e.ReadOnly, _fids.CountExport(e))).ToList();
    }

    /// <summary>The guest reset the device: its fids are gone.</summary>
    public void ResetSession()
    {
        _fids.Clear();
        _msize = 8192;
    }

    public void Dispose()
    {
        _fids.Clear();
        lock (_exports)
        {
            foreach (var e in _exports.Values) { e.CloseGate(); e.Root.Dispose(); }
            _exports.Clear();
        }
        _listing.Root.Dispose();
    }

    // ------------------------------------------------------------------ framing

    /// <summary>
    /// Serves one request. <paramref name="request"/> holds the start of the request stream (the whole
    /// message, except Twrite's data, which the transfer reads in place); <paramref name="requestTotal"/>
    /// is the stream's full length. The reply goes into <paramref name="reply"/> (at most the guest's buffer).
    /// </summary>
    public P9Reply Process(ReadOnlySpan<byte> request, long requestTotal, Span<byte> reply, IP9Transfer transfer)
    {
        ushort tag = P9.NoTag;
        try
        {
            if (request.Length < P9.HeaderSize) throw new P9Error(HostFs.EPROTO, "a request shorter than its header");
            uint size = BinaryPrimitives.ReadUInt32LittleEndian(request);
            byte type = request[4];
            tag = BinaryPrimitives.ReadUInt16LittleEndian(request[5..]);
            if (size < P9.HeaderSize || size > requestTotal) throw new P9Error(HostFs.EPROTO, $"size {size} disagrees with the {requestTotal} bytes sent");
            if (size > (type == P9.Tversion ? P9.MaxMsize : _msize)) throw new P9Error(HostFs.EMSGSIZE, $"a {size}-byte request exceeds msize {_msize}");
            int bodyEnd = type == P9.Twrite ? (int)Math.Min(size, P9.WriteRequestHeader) : (int)size;
            if (request.Length < bodyEnd) throw new P9Error(HostFs.EMSGSIZE, "the request does not fit the server's buffer");
            var body = request[P9.HeaderSize..bodyEnd];
            return Dispatch(type, tag, body, size, reply, transfer);
        }
        catch (P9Error e)
        {
            return Error(reply, tag, e.Errno);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A server bug, never the guest's doing: the guest gets EIO and the device goes on.
            _log.Error(e, "9p: request failed unexpectedly");
            return Error(reply, tag, HostFs.EIO);
        }
    }

    public static P9Reply Error(Span<byte> reply, ushort tag, int errno)
    {
        if (reply.Length < 11) return new P9Reply(0, 0);
        return new P9Reply(P9Messages.Encode(reply, tag, new Rlerror((uint)errno)), 0);
    }

    private static T Read<T>(ReadOnlySpan<byte> body) where T : IP9Message<T>
    {
        var r = new P9Reader(body);
        var m = T.Read(ref r);
        r.End();
        return m;
    }

    private static P9Reply R<T>(Span<byte> reply, ushort tag, in T message) where T : IP9Message<T> =>
        new(P9Messages.Encode(reply, tag, message), 0);

    private P9Reply Dispatch(byte type, ushort tag, ReadOnlySpan<byte> body, uint size, Span<byte> reply, IP9Transfer transfer) => type switch
    {
        P9.Tversion => R(reply, tag, Version(Read<Tversion>(body))),
        P9.Tauth => throw new P9Error(HostFs.EOPNOTSUPP, "no authentication"),
        P9.Tattach => R(reply, tag, Attach(Read<Tattach>(body))),
        P9.Tflush => R(reply, tag, Flush(Read<Tflush>(body))),
        P9.Twalk => R(reply, tag, Walk(Read<Twalk>(body))),
        P9.Tgetattr => R(reply, tag, Getattr(Read<Tgetattr>(body))),
        P9.Tsetattr => R(reply, tag, Setattr(Read<Tsetattr>(body))),
        P9.Tlopen => R(reply, tag, Lopen(Read<Tlopen>(body))),
        P9.Tlcreate => R(reply, tag, Lcreate(Read<Tlcreate>(body))),
        P9.Tread => ReadFile(Read<Tread>(body), tag, reply, transfer),
        P9.Twrite => R(reply, tag, WriteFile(Read<Twrite>(body), size, transfer)),
        P9.Treaddir => Readdir(Read<Treaddir>(body), tag, reply, transfer),
        P9.Tmkdir => R(reply, tag, Mkdir(Read<Tmkdir>(body))),
        P9.Tsymlink => R(reply, tag, Symlink(Read<Tsymlink>(body))),
        P9.Tlink => R(reply, tag, Link(Read<Tlink>(body))),
        P9.Trenameat => R(reply, tag, Renameat(Read<Trenameat>(body))),
        P9.Trename => R(reply, tag, Rename(Read<Trename>(body))),
        P9.Tunlinkat => R(reply, tag, Unlinkat(Read<Tunlinkat>(body))),
        P9.Treadlink => R(reply, tag, Readlink(Read<Treadlink>(body))),
        P9.Tstatfs => R(reply, tag, Statfs(Read<Tstatfs>(body))),
        P9.Tfsync => R(reply, tag, Fsync(Read<Tfsync>(body))),
        P9.Txattrwalk => R(reply, tag, Xattrwalk(Read<Txattrwalk>(body))),
        P9.Txattrcreate => R(reply, tag, Xattrcreate(Read<Txattrcreate>(body))),
        P9.Tlock => R(reply, tag, Lock(Read<Tlock>(body))),
        P9.Tgetlock => R(reply, tag, Getlock(Read<Tgetlock>(body))),
        P9.Tmknod => R(reply, tag, Mknod(Read<Tmknod>(body))),
        P9.Tclunk => R(reply, tag, Clunk(Read<Tclunk>(body))),
        P9.Tremove => R(reply, tag, Remove(Read<Tremove>(body))),
        _ => throw new P9Error(HostFs.EINVAL, $"unknown message type {type}"),
    };

    // ------------------------------------------------------------------ helpers

    /// <summary>Holds an export open for one request; removal waits for it.</summary>
    private readonly ref struct Gate
    {
        private readonly P9Export _export;
        public Gate(P9Export export)
        {
            if (!export.TryEnter()) throw new P9Error(HostFs.EIO, $"export {export.Name} was removed");
            _export = export;
        }
        public void Dispose() => _export.Exit();
    }

    private static void Writable(P9Fid fid)
    {
        if (fid.Export.ReadOnly) throw new P9Error(HostFs.EROFS, $"export {fid.Export.Name} is read-only");
    }

    private static void SameExport(P9Fid a, P9Fid b)
    {
        if (a.Export != b.Export) throw new P9Error(HostFs.EXDEV, "the fids are on different exports");
    }

    private static string Name(string name)
    {
        if (!P9.IsValidName(name)) throw new P9Error(name.Length > P9.MaxNameBytes ? HostFs.ENAMETOOLONG : HostFs.EINVAL, "an invalid file name");
        return name;
    }

    private static P9Fid Directory(P9Fid fid)
    {
        if (!fid.IsDirectory) throw new P9Error(HostFs.ENOTDIR);
        return fid;
    }

    /// <summary>
    /// The VMM runs as root: a guest-made setuid (or setgid) file would be a root door on the host.
    /// Permission bits and sticky pass; set-id bits go (setgid stays on directories, where it only means group inheritance).
    /// </summary>
    private static uint SafeMode(uint mode, bool directory) => (mode & 0x3FF) | (directory ? mode & 0x400 : 0); // rwx + sticky; S_ISGID on dirs only; never S_ISUID

    private static P9.Qid QidOf(FileDescriptor fd)
    {
        var st = HostFs.Stat(fd);
        return P9.Qid.From(st);
    }

    /// <summary>Qid of dir/name without following a symlink there.</summary>
    private static P9.Qid QidAt(FileDescriptor dir, string name)
    {
        using var fd = HostFs.OpenAt(dir, name, HostFs.O_PATH | HostFs.O_NOFOLLOW);
        return QidOf(fd);
    }

    /// <summary>The directory at <paramref name="components"/> inside the export, walked from its root one component at a time, never following a symlink.</summary>
    private static FileDescriptor WalkFromRoot(P9Export export, IReadOnlyList<string> components, int count)
    {
        var cur = HostFs.Dup(export.Root);
        for (int i = 0; i < count; i++)
        {
            var next = HostFs.OpenAt(cur, components[i], HostFs.O_PATH | HostFs.O_NOFOLLOW | HostFs.O_DIRECTORY);
            cur.Dispose();
            cur = next;
        }
        return cur;
    }

    /// <summary>Guest open flags (P9_DOTL_*, equal to x86 Linux's) reduced to what is safe here; O_NONBLOCK so nothing can block a worker.</summary>
    private static int OpenFlags(uint flags, bool readOnlyExport)
    {
        int f = (int)flags;
        int access = f & HostFs.O_ACCMODE;
        if (access == 3) throw new P9Error(HostFs.EINVAL, "an invalid access mode");
        int result = access | (f & (HostFs.O_TRUNC | HostFs.O_APPEND | HostFs.O_SYNC));
        if (readOnlyExport && (access != HostFs.O_RDONLY || (f & HostFs.O_TRUNC) != 0)) throw new P9Error(HostFs.EROFS);
        return result | HostFs.O_NONBLOCK | HostFs.O_NOCTTY;
    }

    // ------------------------------------------------------------------ session

    private Rversion Version(Tversion m)
    {
        if (m.Msize < P9.MinMsize) throw new P9Error(HostFs.EINVAL, $"msize {m.Msize} is below {P9.MinMsize}");
        _fids.Clear();
        if (!m.Version.StartsWith(P9.Version, StringComparison.Ordinal)) return new Rversion(Math.Min(m.Msize, P9.MaxMsize), "unknown");
        _msize = Math.Min(m.Msize, P9.MaxMsize);
        return new Rversion(_msize, P9.Version);
    }

    private Rattach Attach(Tattach m)
    {
        if (m.Afid != P9.NoFid) throw new P9Error(HostFs.EINVAL, "authentication is not supported");
        P9Export? export;
        // aname "" or "/": the export-listing root (one mount for all exports); else the export itself.
        if (m.Aname is "" or "/") export = _listing;
        else lock (_exports) _exports.TryGetValue(m.Aname, out export);
        if (export is null) throw new P9Error(HostFs.ENOENT, $"no export named '{m.Aname}'");
        using var gate = new Gate(export);
        var fd = HostFs.Dup(export.Root);
        try
        {
            var qid = QidOf(fd);
            _fids.Put(m.Fid, new P9Fid(export, fd, [], HostFs.S_IFDIR));
            return new Rattach(qid);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>The device answers Tflush itself once the old request completed; here (no concurrency) there is nothing in flight.</summary>
    private static Rflush Flush(Tflush _) => new();

    private Rclunk Clunk(Tclunk m)
    {
        _fids.Clunk(m.Fid);
        return new();
    }

    // ------------------------------------------------------------------ walking

    private Rwalk Walk(Twalk m)
    {
        var fid = _fids.Get(m.Fid);
        if (m.NewFid != m.Fid && _fids.Contains(m.NewFid)) throw new P9Error(HostFs.EEXIST, $"fid {m.NewFid} is in use");
        foreach (var name in m.Names)
            if (!P9.IsValidName(name, allowDots: true)) throw new P9Error(HostFs.EINVAL, "an invalid name in a walk");
        var qids = new P9.Qid[m.Names.Length];
        int walked = 0;
        var export = fid.Export;
        if (export.IsExportListing)
        {
            // In the listing root: "." and ".." stay; a name enters that export at its root.
            var rootQid = ListingQid();
            for (; walked < m.Names.Length && m.Names[walked] is "." or ".."; walked++) qids[walked] = rootQid;
            if (walked == m.Names.Length)
            {
                _fids.Put(m.NewFid, new P9Fid(_listing, HostFs.Dup(fid.Path), [], HostFs.S_IFDIR), replace: m.NewFid == m.Fid);
                return new Rwalk(qids);
            }
            P9Export? entered;
            lock (_exports) _exports.TryGetValue(m.Names[walked], out entered);
            if (entered is null)
            {
                if (walked == 0) throw new P9Error(HostFs.ENOENT, $"no export named '{m.Names[walked]}'");
                return new Rwalk(qids[..walked]);
            }
            export = entered;
        }
        using var gate = new Gate(export);
        var components = export == fid.Export ? new List<string>(fid.Components) : [];
        FileDescriptor current = export == fid.Export ? HostFs.Dup(fid.Path) : HostFs.Dup(export.Root);
        uint type = export == fid.Export ? fid.FileType : HostFs.S_IFDIR;
        if (export != fid.Export) qids[walked++] = QidOf(current);
        try
        {
            for (; walked < m.Names.Length; walked++)
            {
                string name = m.Names[walked];
                FileDescriptor next;
                try
                {
                    if (type != HostFs.S_IFDIR) throw new P9Error(HostFs.ENOTDIR);
                    if (name == ".") next = HostFs.Dup(current);
                    else if (name == "..")
                    {
                        // 9P: ".." of the root is the root. Elsewhere, by name from the root: the host's ".." could lead out.
                        if (components.Count > 0) components.RemoveAt(components.Count - 1);
                        next = WalkFromRoot(export, components, components.Count);
                    }
                    else
                    {
                        next = HostFs.OpenAt(current, name, HostFs.O_PATH | HostFs.O_NOFOLLOW);
                        components.Add(name);
                    }
                }
                catch (P9Error) when (walked > 0)
                {
                    break; // a partial walk answers the qids so far and creates no fid
                }
                current.Dispose();
                current = next;
                var st = HostFs.Stat(current);
                qids[walked] = P9.Qid.From(st);
                type = st.FileType;
            }
            if (walked < m.Names.Length)
            {
                current.Dispose();
                return new Rwalk(qids[..walked]);
            }
            _fids.Put(m.NewFid, new P9Fid(export, current, [.. components], type), replace: m.NewFid == m.Fid);
            return new Rwalk(qids);
        }
        catch
        {
            current.Dispose();
            throw;
        }
    }

    // ------------------------------------------------------------------ attributes

    private Rgetattr Getattr(Tgetattr m)
    {
        var fid = _fids.Get(m.Fid);
        using var gate = new Gate(fid.Export);
        var st = HostFs.Stat(fid.Path);
        // The listing root's backing directory is deleted (nlink 0): show a plain read-only directory.
        if (fid.Export.IsExportListing) (st.Mode, st.Nlink) = (HostFs.S_IFDIR | 0x16D /* 0555 */, 2);
        return new Rgetattr(P9.StatsBasic, P9.Qid.From(st), st.Mode, st.Uid, st.Gid, st.Nlink, st.Rdev, (ulong)st.Size, (ulong)st.BlkSize, (ulong)st.Blocks,
            (ulong)st.AtimeSec, (ulong)st.AtimeNsec, (ulong)st.MtimeSec, (ulong)st.MtimeNsec, (ulong)st.CtimeSec, (ulong)st.CtimeNsec, 0, 0, 0, 0);
    }

    private Rsetattr Setattr(Tsetattr m)
    {
        var fid = _fids.Get(m.Fid);
        Writable(fid);
        using var gate = new Gate(fid.Export);
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

    private Rstatfs Statfs(Tstatfs m)
    {
        var fid = _fids.Get(m.Fid);
        using var gate = new Gate(fid.Export);
        var s = HostFs.StatFs(fid.Path);
        return new Rstatfs((uint)s.Type, (uint)s.BSize, s.Blocks, s.BFree, s.BAvail, s.Files, s.FFree, s.Fsid, (uint)s.NameLen);
    }

    private Rreadlink Readlink(Treadlink m)
    {
        var fid = _fids.Get(m.Fid);
        using var gate = new Gate(fid.Export);
        if (fid.FileType != HostFs.S_IFLNK) throw new P9Error(HostFs.EINVAL, "not a symlink");
        return new Rreadlink(HostFs.ReadLink(fid.Path));
    }

    // ------------------------------------------------------------------ open, read, write

    private Rlopen Lopen(Tlopen m)
    {
        var fid = _fids.Get(m.Fid);
        using var gate = new Gate(fid.Export);
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
                // The listing root is read from the export table, not the host: its "open" fd is never read.
                fd = fid.Export.IsExportListing ? HostFs.Dup(path) : HostFs.OpenAt(path, ".", HostFs.O_RDONLY | HostFs.O_DIRECTORY);
            }
            else if (st.IsRegular)
            {
                // Only now, with the inode pinned and known to be a regular file, through its magic link.
                flags = OpenFlags(m.Flags, fid.Export.ReadOnly);
                fd = HostFs.Reopen(path, flags);
            }
            else throw new P9Error(st.IsSymlink ? HostFs.ELOOP : HostFs.EPERM, "only regular files and directories are opened");
            fid.OpenFd = fd;
            fid.OpenFlags = flags;
            fid.DirOffset = 0;
            return new Rlopen(P9.Qid.From(st), 0);
        }
    }

    private Rlcreate Lcreate(Tlcreate m)
    {
        var fid = _fids.Get(m.Fid);
        Writable(fid);
        string name = Name(m.Name);
        using var gate = new Gate(fid.Export);
        lock (fid)
        {
            Directory(fid);
            if (fid.OpenFd is not null) throw new P9Error(HostFs.EBADF, "the directory fid is open");
            int flags = OpenFlags(m.Flags, false) | HostFs.O_CREAT | HostFs.O_NOFOLLOW | ((int)m.Flags & HostFs.O_EXCL);
            var fd = HostFs.OpenAt(fid.Path, name, flags, SafeMode(m.Mode, false));
            FileDescriptor? pathFd = null;
            try
            {
                var st = HostFs.Stat(fd);
                // An existing FIFO or device under that name was opened non-blocking above; refuse it now.
                if (!st.IsRegular) throw new P9Error(HostFs.EEXIST, "the name exists and is not a regular file");
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
                throw;
            }
        }
    }

    private FileDescriptor OpenFile(P9Fid fid, bool write)
    {
        var fd = fid.OpenFd ?? throw new P9Error(HostFs.EBADF, "the fid is not open");
        if (fid.IsDirectory) throw new P9Error(HostFs.EISDIR);
        int access = fid.OpenFlags & HostFs.O_ACCMODE;
        if (write ? access == HostFs.O_RDONLY : access == HostFs.O_WRONLY) throw new P9Error(HostFs.EBADF, "the fid is not open for that");
        return fd;
    }

    private P9Reply ReadFile(Tread m, ushort tag, Span<byte> reply, IP9Transfer transfer)
    {
        var fid = _fids.Get(m.Fid);
        if (m.Offset > long.MaxValue) throw new P9Error(HostFs.EINVAL, "a negative offset");
        int count = (int)Math.Min(m.Count, Math.Min(_msize - P9.ReadReplyHeader, Math.Max(0, transfer.ReplyCapacity - P9.ReadReplyHeader)));
        if (reply.Length < P9.ReadReplyHeader) throw new P9Error(HostFs.EMSGSIZE);
        if (fid.Xattr is { } value)
        {
            int n = (int)Math.Min((ulong)Math.Max(0, value.Length - (long)Math.Min(m.Offset, (ulong)value.Length)), (ulong)Math.Min(count, reply.Length - P9.ReadReplyHeader));
            value.AsSpan((int)Math.Min(m.Offset, (ulong)value.Length), n).CopyTo(reply[P9.ReadReplyHeader..]);
            return new P9Reply(ReadHeader(reply, P9.Rread, tag, n, inline: true), 0);
        }
        using var gate = new Gate(fid.Export);
        int read = transfer.ReadFile(OpenFile(fid, write: false), (long)m.Offset, count);
        return new P9Reply(ReadHeader(reply, P9.Rread, tag, read, inline: false), read);
    }

    /// <summary>size[4] type[1] tag[2] count[4]; the size covers the data whether it is inline or already in the guest's buffers.</summary>
    private static int ReadHeader(Span<byte> reply, byte type, ushort tag, int count, bool inline)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(reply, (uint)(P9.ReadReplyHeader + count));
        reply[4] = type;
        BinaryPrimitives.WriteUInt16LittleEndian(reply[5..], tag);
        BinaryPrimitives.WriteUInt32LittleEndian(reply[7..], (uint)count);
        return inline ? P9.ReadReplyHeader + count : P9.ReadReplyHeader;
    }

    private Rwrite WriteFile(Twrite m, uint size, IP9Transfer transfer)
    {
        var fid = _fids.Get(m.Fid);
        Writable(fid);
        if (m.Offset > long.MaxValue || m.Offset + m.Count > long.MaxValue) throw new P9Error(HostFs.EINVAL, "a negative offset");
        if (size < P9.WriteRequestHeader || m.Count > size - P9.WriteRequestHeader) throw new P9Error(HostFs.EPROTO, $"a write of {m.Count} bytes carries {size - Math.Min(size, P9.WriteRequestHeader)}");
        using var gate = new Gate(fid.Export);
        return new Rwrite((uint)transfer.WriteFile(OpenFile(fid, write: true), (long)m.Offset, (int)m.Count));
    }

    private Rfsync Fsync(Tfsync m)
    {
        var fid = _fids.Get(m.Fid);
        using var gate = new Gate(fid.Export);
        if (fid.OpenFd is { } fd) HostFs.Fsync(fd, m.Datasync != 0);
        return new();
    }

    private unsafe P9Reply Readdir(Treaddir m, ushort tag, Span<byte> reply, IP9Transfer transfer)
    {
        var fid = _fids.Get(m.Fid);
        if (m.Offset > long.MaxValue) throw new P9Error(HostFs.EINVAL, "a negative offset");
        using var gate = new Gate(fid.Export);
        if (!fid.IsDirectory || fid.OpenFd is null) throw new P9Error(fid.IsDirectory ? HostFs.EBADF : HostFs.ENOTDIR);
        int count = (int)Math.Min(m.Count, Math.Min(_msize - P9.ReadReplyHeader, Math.Min(reply.Length, transfer.ReplyCapacity) - P9.ReadReplyHeader));
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
                    var nameBytes = buffer.AsSpan(at + 19, reclen - 19);
                    nameBytes = nameBytes[..nameBytes.IndexOf((byte)0)];
                    at += reclen;
                    int entry = P9.QidSize + 8 + 1 + 2 + nameBytes.Length;
                    if (entry > w.Remaining) { full = true; break; }
                    w.Qid(new P9.Qid(dtype == 4 ? P9.QidDir : dtype == 10 ? P9.QidSymlink : P9.QidFile, 0, ino));
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
        return new P9Reply(ReadHeader(reply, P9.Rreaddir, tag, w.Position, inline: true), 0);
    }

    private P9.Qid ListingQid() => P9.Qid.From(HostFs.Stat(_listing.Root));

    /// <summary>The listing root's entries: ".", "..", then the exports by name; the offset cookie of entry i is i + 1.</summary>
    private P9Reply ListingReaddir(ulong offset, ushort tag, Span<byte> reply, ref P9Writer w)
    {
        List<(string Name, P9.Qid Qid)> entries = [(".", ListingQid()), ("..", ListingQid())];
        List<P9Export> exports;
        lock (_exports) exports = [.. _exports.Values.OrderBy(e => e.Name, StringComparer.Ordinal)];
        foreach (var e in exports)
        {
            if (!e.TryEnter()) continue;
            try { entries.Add((e.Name, QidOf(e.Root))); }
            finally { e.Exit(); }
        }
        for (int i = (int)Math.Min(offset, (ulong)entries.Count); i < entries.Count; i++)
        {
            var name = System.Text.Encoding.UTF8.GetBytes(entries[i].Name);
            if (P9.QidSize + 8 + 1 + 2 + name.Length > w.Remaining)
            {
                if (w.Position == 0) throw new P9Error(HostFs.EINVAL, "the readdir count is too small for one entry");
                break;
            }
            w.Qid(entries[i].Qid);
            w.U64((ulong)(i + 1));
            w.U8(4); // DT_DIR
            w.U16((ushort)name.Length);
            w.Bytes(name);
        }
        return new P9Reply(ReadHeader(reply, P9.Rreaddir, tag, w.Position, inline: true), 0);
    }

    // ------------------------------------------------------------------ directory changes

    private Rmkdir Mkdir(Tmkdir m)
    {
        var dir = Directory(_fids.Get(m.Dfid));
        Writable(dir);
        string name = Name(m.Name);
        using var gate = new Gate(dir.Export);
        HostFs.MkdirAt(dir.Path, name, SafeMode(m.Mode, true));
        return new Rmkdir(QidAt(dir.Path, name));
    }

    private Rsymlink Symlink(Tsymlink m)
    {
        var dir = Directory(_fids.Get(m.Fid));
        Writable(dir);
        string name = Name(m.Name);
        // The target is only text for the guest to resolve in its own namespace; the host never follows it.
        if (m.Target.Length == 0 || m.Target.Contains('\0') || Encoding.UTF8.GetByteCount(m.Target) > P9.MaxSymlinkTarget)
            throw new P9Error(HostFs.EINVAL, "an invalid symlink target");
        using var gate = new Gate(dir.Export);
        HostFs.SymlinkAt(m.Target, dir.Path, name);
        return new Rsymlink(QidAt(dir.Path, name));
    }

    private Rmknod Mknod(Tmknod m)
    {
        var dir = Directory(_fids.Get(m.Dfid));
        Writable(dir);
        string name = Name(m.Name);
        // Device nodes would hand the guest host devices; FIFOs and sockets could block or confuse host programs.
        if ((m.Mode & HostFs.S_IFMT) != HostFs.S_IFREG) throw new P9Error(HostFs.EPERM, "only regular files may be made with mknod");
        using var gate = new Gate(dir.Export);
        HostFs.MknodAt(dir.Path, name, HostFs.S_IFREG | SafeMode(m.Mode, false));
        return new Rmknod(QidAt(dir.Path, name));
    }

    private Rlink Link(Tlink m)
    {
        var dir = Directory(_fids.Get(m.Dfid));
        var target = _fids.Get(m.Fid);
        SameExport(dir, target);
        Writable(dir);
        string name = Name(m.Name);
        using var gate = new Gate(dir.Export);
        if (target.FileType != HostFs.S_IFREG) throw new P9Error(HostFs.EPERM, "only regular files are hard-linked");
        HostFs.LinkAt(target.Path, dir.Path, name);
        return new();
    }

    private Rrenameat Renameat(Trenameat m)
    {
        var from = Directory(_fids.Get(m.OldDirFid));
        var to = Directory(_fids.Get(m.NewDirFid));
        SameExport(from, to);
        Writable(from);
        string oldName = Name(m.OldName), newName = Name(m.NewName);
        using var gate = new Gate(from.Export);
        HostFs.RenameAt(from.Path, oldName, to.Path, newName);
        return new();
    }

    private Rrename Rename(Trename m)
    {
        var fid = _fids.Get(m.Fid);
        var to = Directory(_fids.Get(m.Dfid));
        SameExport(fid, to);
        Writable(fid);
        string name = Name(m.Name);
        if (fid.Components.Length == 0) throw new P9Error(HostFs.EBUSY, "the export root cannot be renamed");
        using var gate = new Gate(fid.Export);
        using var parent = WalkFromRoot(fid.Export, fid.Components, fid.Components.Length - 1);
        HostFs.RenameAt(parent, fid.Components[^1], to.Path, name);
        lock (fid) fid.Components = [.. to.Components, name];
        return new();
    }

    private Runlinkat Unlinkat(Tunlinkat m)
    {
        var dir = Directory(_fids.Get(m.DirFid));
        Writable(dir);
        string name = Name(m.Name);
        if ((m.Flags & ~(uint)HostFs.AT_REMOVEDIR) != 0) throw new P9Error(HostFs.EINVAL, "unknown unlink flags");
        using var gate = new Gate(dir.Export);
        HostFs.UnlinkAt(dir.Path, name, (int)m.Flags);
        return new();
    }

    private Rremove Remove(Tremove m)
    {
        var fid = _fids.Get(m.Fid);
        try
        {
            Writable(fid);
            if (fid.Components.Length == 0) throw new P9Error(HostFs.EBUSY, "the export root cannot be removed");
            using var gate = new Gate(fid.Export);
            using var parent = WalkFromRoot(fid.Export, fid.Components, fid.Components.Length - 1);
            HostFs.UnlinkAt(parent, fid.Components[^1], fid.IsDirectory ? HostFs.AT_REMOVEDIR : 0);
        }
        finally
        {
            // Tremove clunks the fid whether or not the remove worked.
            try { _fids.Clunk(m.Fid); } catch (P9Error) { }
        }
        return new();
    }

    // ------------------------------------------------------------------ xattrs and locks

    private Rxattrwalk Xattrwalk(Txattrwalk m)
    {
        var fid = _fids.Get(m.Fid);
        if (m.NewFid != m.Fid && _fids.Contains(m.NewFid)) throw new P9Error(HostFs.EEXIST, $"fid {m.NewFid} is in use");
        using var gate = new Gate(fid.Export);
        bool list = m.Name.Length == 0;
        if (!list && !IsServedXattr(m.Name)) throw new P9Error(HostFs.ENODATA);
        byte[] value;
        if (fid.FileType is not (HostFs.S_IFREG or HostFs.S_IFDIR)) value = list ? [] : throw new P9Error(HostFs.ENODATA);
        else
        {
            var buffer = new byte[MaxXattrSize];
            int n = HostFs.GetXattr(fid.Path, list ? null : m.Name, buffer);
            value = list ? FilterXattrList(buffer.AsSpan(0, n)) : buffer[..n];
        }
        _fids.Put(m.NewFid, new P9Fid(fid.Export, null, fid.Components, 0) { Xattr = value }, replace: m.NewFid == m.Fid);
        return new Rxattrwalk((ulong)value.Length);
    }

    /// <summary>Only user.* and security.* reach the guest: trusted.* and system.* describe the host, not the files.</summary>
    private static bool IsServedXattr(string name) => name.StartsWith("user.", StringComparison.Ordinal) || name.StartsWith("security.", StringComparison.Ordinal);

    private static byte[] FilterXattrList(ReadOnlySpan<byte> names)
    {
        var kept = new List<byte>();
        foreach (var range in names.Split((byte)0))
        {
            var name = names[range];
            if (name.IsEmpty || !IsServedXattr(Encoding.UTF8.GetString(name))) continue;
            kept.AddRange(name);
            kept.Add(0);
        }
        return [.. kept];
    }

    private Rxattrcreate Xattrcreate(Txattrcreate m)
    {
        Writable(_fids.Get(m.Fid));
        throw new P9Error(HostFs.EOPNOTSUPP, "setting xattrs is not supported");
    }

    private static HostFlock Flock(byte type, ulong start, ulong length)
    {
        if (type > P9.LockUnlock) throw new P9Error(HostFs.EINVAL, "an invalid lock type");
        if (start > long.MaxValue || length > long.MaxValue || start + length > long.MaxValue) throw new P9Error(HostFs.EINVAL, "an invalid lock range");
        return new HostFlock { Type = type, Whence = 0, Start = (long)start, Len = (long)length };
    }

    /// <summary>OFD locks on the fid's open file, never blocking: a conflict answers BLOCKED and the Linux client retries.</summary>
    private Rlock Lock(Tlock m)
    {
        var fid = _fids.Get(m.Fid);
        var flock = Flock(m.LockType, m.Start, m.Length);
        using var gate = new Gate(fid.Export);
        var fd = fid.OpenFd ?? throw new P9Error(HostFs.EBADF, "the fid is not open");
        return new Rlock(HostFs.OfdLock(fd, HostFs.F_OFD_SETLK, ref flock) ? P9.LockSuccess : P9.LockBlocked);
    }

    private Rgetlock Getlock(Tgetlock m)
    {
        var fid = _fids.Get(m.Fid);
        var flock = Flock(m.LockType, m.Start, m.Length);
        using var gate = new Gate(fid.Export);
        var fd = fid.OpenFd ?? throw new P9Error(HostFs.EBADF, "the fid is not open");
        HostFs.OfdLock(fd, HostFs.F_OFD_GETLK, ref flock);
        return new Rgetlock((byte)flock.Type, (ulong)flock.Start, (ulong)flock.Len, flock.Pid > 0 ? (uint)flock.Pid : m.ProcId, m.ClientId);
    }
}

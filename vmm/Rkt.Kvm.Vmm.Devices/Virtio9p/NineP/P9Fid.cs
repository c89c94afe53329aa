using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// What a guest fid names: an O_PATH|O_NOFOLLOW fd (the inode is pinned, so later renames by anyone
/// cannot redirect it), the path inside the export as components (only to resolve ".." by name,
/// never through the host's ".."), and once opened, an I/O fd. An xattr fid holds the value instead.
/// Mutations take the fid's lock; the fds are SafeHandles, so a concurrent clunk cannot close an fd
/// a request is using (the close waits for the last user).
/// </summary>
public sealed class P9Fid
{
    public P9Export Export { get; }
    internal FileDescriptor? PathFd { get; set; }
    public string[] Components { get; set; }
    public uint FileType { get; set; }
    internal FileDescriptor? OpenFd { get; set; }
    public int OpenFlags { get; set; }
    /// <summary>Next getdents position of an opened directory (the guest's readdir offset cookies).</summary>
    public long DirOffset { get; set; }
    public byte[]? Xattr { get; set; }
    /// <summary>Set when the export went away: every request on the fid fails with EIO.</summary>
    public bool Closed { get; private set; }
    /// <summary>
    /// The guest uid that attached (Tattach's n_uname; root for "no uid"), handed on by every walk from
    /// this fid: what the guest's kernel creates through the fid is that user's (<see cref="P9NewEntry"/>).
    /// </summary>
    public uint Uid { get; }

    public P9Fid(P9Export export, FileDescriptor? pathFd, string[] components, uint fileType, uint uid)
    {
        Export = export;
        PathFd = pathFd;
        Components = components;
        FileType = fileType;
        Uid = uid;
    }

    public bool IsDirectory => FileType == HostFs.S_IFDIR;

    /// <summary>Closes every host fd of the fid; returns how many.</summary>
    public int Close() => Close(out _);

    /// <summary>Closes every host fd of the fid; returns how many, and whether one was the I/O fd of an open.</summary>
    internal int Close(out bool hadOpenFd)
    {
        lock (this)
        {
            Closed = true;
            int n = 0;
            hadOpenFd = OpenFd is not null;
            if (OpenFd is { } o) { o.Dispose(); n++; OpenFd = null; }
            if (PathFd is { } p) { p.Dispose(); n++; PathFd = null; }
            Xattr = null;
            return n;
        }
    }

    internal FileDescriptor Path => PathFd ?? throw new P9Error(HostFs.EIO, "the fid's export was removed");
}

/// <summary>
/// The session's fids, bounded by the host fds they hold: one per fid, and a second one per opened
/// fid (its I/O fd), so that a guest never holds more than the limit in host fds (the VMM's file
/// limit, <c>LockDown.MaxOpenFiles</c>, is this bound plus room for everything else). Thread-safe
/// (requests run on several workers).
/// </summary>
public sealed class P9FidTable
{
    public const int DefaultMaxFids = 16384;
    private readonly Dictionary<uint, P9Fid> _fids = [];
    private readonly int _maxFids;
    /// <summary>Fids that hold an I/O fd besides their path fd (or are about to); guarded by <see cref="_fids"/>.</summary>
    private int _openFids;

    public P9FidTable(int maxFids = DefaultMaxFids) => _maxFids = maxFids;

    /// <summary>Host fds held (or reserved) by the fids now: at most the limit.</summary>
    internal int HostFds { get { lock (_fids) return _fids.Count + _openFids; } }

    public int Count { get { lock (_fids) return _fids.Count; } }

    public P9Fid Get(uint fid)
    {
        P9Fid? f;
        lock (_fids) _fids.TryGetValue(fid, out f);
        if (f is null) throw new P9Error(HostFs.EBADF, $"fid {fid} is unknown");
        if (f.Closed) throw new P9Error(HostFs.EIO, $"fid {fid}'s export was removed");
        return f;
    }

    /// <summary>Adds (or, for walk with fid == newfid, replaces) a fid; the limit stops a guest from exhausting host fds.</summary>
    public void Put(uint id, P9Fid fid, bool replace = false)
    {
        P9Fid? old = null;
        lock (_fids)
        {
            if (id == P9.NoFid) throw new P9Error(HostFs.EINVAL, "NOFID cannot name a file");
            if (_fids.TryGetValue(id, out old))
            {
                if (!replace) throw new P9Error(HostFs.EEXIST, $"fid {id} is in use");
            }
            else if (_fids.Count + _openFids >= _maxFids) throw new P9Error(HostFs.EMFILE, $"the fids hold {_maxFids} host fds");
            _fids[id] = fid;
        }
        if (old is not null && !ReferenceEquals(old, fid)) Close(old);
    }

    /// <summary>
    /// Counts the I/O fd an open (Tlopen, Tlcreate) is about to make, or refuses it (EMFILE) at the
    /// limit. Call with the fid's lock held and its path fd checked; <see cref="ReleaseOpen"/> if the
    /// open then fails. Closing the fid gives the count back.
    /// </summary>
    internal void ReserveOpen()
    {
        lock (_fids)
        {
            if (_fids.Count + _openFids >= _maxFids) throw new P9Error(HostFs.EMFILE, $"the fids hold {_maxFids} host fds");
            _openFids++;
        }
    }

    internal void ReleaseOpen()
    {
        lock (_fids) _openFids--;
    }

    private int Close(P9Fid fid)
    {
        int n = fid.Close(out bool hadOpenFd);
        if (hadOpenFd) ReleaseOpen();
        return n;
    }

    public bool Contains(uint id) { lock (_fids) return _fids.ContainsKey(id); }

    public void Clunk(uint id)
    {
        P9Fid? f;
        lock (_fids)
        {
            if (!_fids.Remove(id, out f)) throw new P9Error(HostFs.EBADF, $"fid {id} is unknown");
        }
        Close(f);
    }

    /// <summary>Closes every fid of <paramref name="export"/> (they stay, failing with EIO, until clunked); returns the fds closed.</summary>
    public int CloseExport(P9Export export)
    {
        List<P9Fid> victims;
        lock (_fids) victims = _fids.Values.Where(f => f.Export == export).ToList();
        return victims.Sum(Close);
    }

    public int CountExport(P9Export export) { lock (_fids) return _fids.Values.Count(f => f.Export == export && !f.Closed); }

    /// <summary>Tversion and device reset: the session starts over.</summary>
    public int Clear()
    {
        List<P9Fid> all;
        lock (_fids)
        {
            all = [.. _fids.Values];
            _fids.Clear();
        }
        return all.Sum(Close);
    }
}

using Rkt.Kvm.Vmm.Kvm;

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

    public P9Fid(P9Export export, FileDescriptor? pathFd, string[] components, uint fileType)
    {
        Export = export;
        PathFd = pathFd;
        Components = components;
        FileType = fileType;
    }

    public bool IsDirectory => FileType == HostFs.S_IFDIR;

    /// <summary>Closes every host fd of the fid; returns how many.</summary>
    public int Close()
    {
        lock (this)
        {
            Closed = true;
            int n = 0;
            if (OpenFd is { } o) { o.Dispose(); n++; OpenFd = null; }
            if (PathFd is { } p) { p.Dispose(); n++; PathFd = null; }
            Xattr = null;
            return n;
        }
    }

    internal FileDescriptor Path => PathFd ?? throw new P9Error(HostFs.EIO, "the fid's export was removed");
}

/// <summary>The session's fids, bounded; thread-safe (requests run on several workers).</summary>
public sealed class P9FidTable
{
    public const int DefaultMaxFids = 16384;
    private readonly Dictionary<uint, P9Fid> _fids = [];
    private readonly int _maxFids;

    public P9FidTable(int maxFids = DefaultMaxFids) => _maxFids = maxFids;

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
            else if (_fids.Count >= _maxFids) throw new P9Error(HostFs.EMFILE, $"more than {_maxFids} fids");
            _fids[id] = fid;
        }
        if (old is not null && !ReferenceEquals(old, fid)) old.Close();
    }

    public bool Contains(uint id) { lock (_fids) return _fids.ContainsKey(id); }

    public void Clunk(uint id)
    {
        P9Fid? f;
        lock (_fids)
        {
            if (!_fids.Remove(id, out f)) throw new P9Error(HostFs.EBADF, $"fid {id} is unknown");
        }
        f.Close();
    }

    /// <summary>Closes every fid of <paramref name="export"/> (they stay, failing with EIO, until clunked); returns the fds closed.</summary>
    public int CloseExport(P9Export export)
    {
        List<P9Fid> victims;
        lock (_fids) victims = _fids.Values.Where(f => f.Export == export).ToList();
        return victims.Sum(f => f.Close());
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
        return all.Sum(f => f.Close());
    }
}

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// POSIX byte-range locks (Tlock, Tgetlock) as OFD locks on the fid's open file, never blocking:
/// a conflict answers BLOCKED and the Linux client retries.
/// </summary>
internal sealed class P9Locks(P9Session session)
{
    private P9FidTable Fids => session.Fids;

    public Rlock Lock(Tlock m)
    {
        var fid = Fids.Get(m.Fid);
        var flock = Flock(m.LockType, m.Start, m.Length);
        using var scope = fid.Export.Enter();
        var fd = fid.OpenFd ?? throw new P9Error(HostFs.EBADF, "the fid is not open");
        return new Rlock(HostFs.OfdLock(fd, HostFs.F_OFD_SETLK, ref flock) ? P9.LockSuccess : P9.LockBlocked);
    }

    public Rgetlock Getlock(Tgetlock m)
    {
        var fid = Fids.Get(m.Fid);
        var flock = Flock(m.LockType, m.Start, m.Length);
        using var scope = fid.Export.Enter();
        var fd = fid.OpenFd ?? throw new P9Error(HostFs.EBADF, "the fid is not open");
        HostFs.OfdLock(fd, HostFs.F_OFD_GETLK, ref flock);
        return new Rgetlock((byte)flock.Type, (ulong)flock.Start, (ulong)flock.Len, flock.Pid > 0 ? (uint)flock.Pid : m.ProcId, m.ClientId);
    }

    /// <summary>The guest's lock (P9_LOCK_TYPE_* equal F_RDLCK/F_WRLCK/F_UNLCK) as a host <c>struct flock</c>, range checked.</summary>
    private static HostFlock Flock(byte type, ulong start, ulong length)
    {
        if (type > P9.LockUnlock) throw new P9Error(HostFs.EINVAL, "an invalid lock type");
        if (start > long.MaxValue || length > long.MaxValue || start + length > long.MaxValue) throw new P9Error(HostFs.EINVAL, "an invalid lock range");
        return HostFlock.Range(type, (long)start, (long)length);
    }
}

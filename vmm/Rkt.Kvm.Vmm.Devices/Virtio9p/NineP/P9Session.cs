using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// The guest's session: the msize it negotiated and its fids, with the requests that start and end
/// them (Tversion, Tattach, Tflush, Tclunk). The other handlers look fids up here.
/// </summary>
/// <remarks>
/// Snapshots deliberately save none of this, so there is no state type to save or restore:
/// <see cref="Virtio9pDevice.SnapshotBlocker"/> refuses a snapshot while any fid is open (a fid pins
/// a host fd a restored VM could not get back), and warm templates are made before the guest mounts
/// 9p (docs/WARM.md). With no fids the session holds only the msize, which every mount negotiates
/// afresh with Tversion; the exports are host configuration the restoring VMM gets from its own
/// command line and control socket. A template that mounts 9p would need fids in snapshots first.
/// </remarks>
internal sealed class P9Session(P9Exports exports, int maxFids)
{
    /// <summary>msize before Tversion, and again after a device reset.</summary>
    public const uint InitialMsize = 8192;

    private volatile uint _msize = InitialMsize;

    public P9FidTable Fids { get; } = new(maxFids);
    public uint Msize => _msize;

    /// <summary>How a new entry gets its owner (<see cref="HostFs.Chown"/>); tests replace it to make it fail, as root cannot.</summary>
    internal Action<FileDescriptor, uint, uint> Chown { get; set; } = HostFs.Chown;

    /// <summary>The guest reset the device: its fids are gone.</summary>
    public void Reset()
    {
        Fids.Clear();
        _msize = InitialMsize;
    }

    public Rversion Version(Tversion m)
    {
        if (m.Msize < P9.MinMsize) throw new P9Error(HostFs.EINVAL, $"msize {m.Msize} is below {P9.MinMsize}");
        Fids.Clear();
        if (!m.Version.StartsWith(P9.Version, StringComparison.Ordinal)) return new Rversion(Math.Min(m.Msize, P9.MaxMsize), "unknown");
        _msize = Math.Min(m.Msize, P9.MaxMsize);
        return new Rversion(_msize, P9.Version);
    }

    public Rattach Attach(Tattach m)
    {
        if (m.Afid != P9.NoFid) throw new P9Error(HostFs.EINVAL, "authentication is not supported");
        // aname "" or "/": the export-listing root (one mount for all exports); else the export itself.
        var export = m.Aname is "" or "/" ? exports.Listing : exports.Find(m.Aname);
        if (export is null) throw new P9Error(HostFs.ENOENT, $"no export named '{m.Aname}'");
        using var scope = export.Enter();
        var fd = HostFs.Dup(export.Root);
        try
        {
            var qid = P9.Qid.Of(fd);
            // Linux attaches once per guest user (access=user or client) with n_uname = that uid; ~0 is "no uid": root.
            uint uid = m.NUname == P9.NoUid ? 0 : m.NUname;
            Fids.Put(m.Fid, new P9Fid(export, fd, [], HostFs.S_IFDIR, uid));
            return new Rattach(qid);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>The device answers Tflush itself once the old request completed; here (no concurrency) there is nothing in flight.</summary>
    public static Rflush Flush(Tflush _) => new();

    public Rclunk Clunk(Tclunk m)
    {
        Fids.Clunk(m.Fid);
        return new();
    }
}

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// The checks every handler applies to what the guest sends before the host is touched: writes only
/// to read-write exports, two fids only within one export, names only as single validated components,
/// and no set-id bit ever on the host.
/// </summary>
internal static class P9Checks
{
    public static void Writable(P9Fid fid)
    {
        if (fid.Export.ReadOnly) throw new P9Error(HostFs.EROFS, $"export {fid.Export.Name} is read-only");
    }

    public static void SameExport(P9Fid a, P9Fid b)
    {
        if (a.Export != b.Export) throw new P9Error(HostFs.EXDEV, "the fids are on different exports");
    }

    /// <summary>A name for a new (or existing) entry: one component, not "." or "..".</summary>
    public static string Name(string name)
    {
        if (!P9.IsValidName(name)) throw new P9Error(name.Length > P9.MaxNameBytes ? HostFs.ENAMETOOLONG : HostFs.EINVAL, "an invalid file name");
        return name;
    }

    public static P9Fid Directory(P9Fid fid)
    {
        if (!fid.IsDirectory) throw new P9Error(HostFs.ENOTDIR);
        return fid;
    }

    /// <summary>
    /// The VMM runs as root: a guest-made setuid (or setgid) file would be a root door on the host.
    /// Permission bits and sticky pass; set-id bits go (setgid stays on directories, where it only means group inheritance).
    /// </summary>
    public static uint SafeMode(uint mode, bool directory) =>
        (mode & (HostFs.S_IRWXUGO | HostFs.S_ISVTX)) | (directory ? mode & HostFs.S_ISGID : 0); // never S_ISUID
}

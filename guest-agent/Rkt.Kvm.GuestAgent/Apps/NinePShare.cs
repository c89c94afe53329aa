namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// The VMM's 9p exports, mounted once. Linux lets a virtio-9p device carry one mount at a time (a
/// second mount of the same tag fails with EBUSY), so the agent mounts the VMM's export-listing root
/// (aname "/") at <see cref="MountPoint"/> on first use, and app roots and volumes use
/// <c>&lt;MountPoint&gt;/&lt;export&gt;</c> (overlay lower dir or bind mount). Exports added to the VMM
/// later appear there without a remount.
/// </summary>
internal static class NinePShare
{
    public const string MountPoint = "/run/9p";
    public const string MountTag = "rkt";
    public const string Options = "trans=virtio,version=9p2000.L,aname=/,msize=524288,cache=none";

    private static readonly Lock s_lock = new();
    private static bool s_mounted;

    /// <summary>The guest directory of an export, mounting the share if needed; a clear error when the VMM has no such export.</summary>
    public static string ExportDirectory(string export)
    {
        if (export.Length == 0 || export.Contains('/') || export is "." or "..")
            throw new ArgumentException($"\"{export}\" is not an export name.");
        lock (s_lock)
        {
            if (!s_mounted)
            {
                System.IO.Directory.CreateDirectory(MountPoint);
                if (Libc.mount(MountTag, MountPoint, "9p", Libc.MS_NOSUID | Libc.MS_NODEV, Options) != 0)
                    throw new IOException($"Mounting the VMM's 9p exports failed: {Libc.LastError()}; does the VM have a 9p device (--control or --9p-export)?");
                s_mounted = true;
            }
        }
        var path = $"{MountPoint}/{export}";
        return System.IO.Directory.Exists(path) ? path : throw new ArgumentException($"The VMM has no 9p export named \"{export}\".");
    }
}

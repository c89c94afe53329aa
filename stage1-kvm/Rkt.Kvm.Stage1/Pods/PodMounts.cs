using System.Runtime.InteropServices;
using Rkt.Kvm.Stage1.Native;

namespace Rkt.Kvm.Stage1.Pods;

/// <summary>
/// The overlay mounts stage0 makes in a pod directory, laid out as rkt 1.30 lays them out
/// (stage0/run.go <c>overlayRender</c>): the stage1 image's tree-store rootfs under
/// <c>stage1/rootfs</c> (upper <c>overlay/&lt;id&gt;/upper</c>, work <c>overlay/&lt;id&gt;/work</c>), and each
/// app's under <c>stage1/rootfs/opt/stage2/&lt;app&gt;/rootfs</c> (upper and work
/// <c>overlay/&lt;id&gt;/{upper,work}/&lt;app&gt;</c>). The tree store stays read-only: every write lands
/// in the pod's upper directories. Teardown unmounts whatever is mounted under the pod, deepest
/// first, read from <c>/proc/self/mountinfo</c> rather than from our own bookkeeping.
/// </summary>
public static class PodMounts
{
    private const long OverlayfsMagic = 0x794c7630, AufsMagic = 0x61756673, ZfsMagic = 0x2fc12fc1;

    /// <summary>Why overlay cannot be used for pods under <paramref name="dataDir"/>, or null when it
    /// can (rkt's <c>PathSupportsOverlay</c>: the kernel knows overlayfs, and the directory is not on
    /// a filesystem that cannot be an upper layer).</summary>
    public static string? OverlayUnsupportedReason(string dataDir)
    {
        if (Libc.geteuid() != 0) return "overlay mounts need root";
        if (!File.ReadAllText("/proc/filesystems").Split('\n').Any(l => l == "nodev\toverlay"))
        {
            // The first mount would load the module; rkt runs modprobe first so the check is true.
            try { System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("modprobe", "overlay") { RedirectStandardError = true })?.WaitForExit(5000); }
            catch (System.ComponentModel.Win32Exception) { }
            if (!File.ReadAllText("/proc/filesystems").Split('\n').Any(l => l == "nodev\toverlay"))
                return "the kernel has no overlay filesystem (/proc/filesystems)";
        }
        var existing = dataDir;
        while (!Directory.Exists(existing)) existing = Path.GetDirectoryName(existing) ?? "/";
        var buf = new byte[120];
        if (Libc.statfs(existing, buf) != 0) return $"cannot statfs {existing}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}";
        return BitConverter.ToInt64(buf, 0) switch
        {
            OverlayfsMagic => $"{existing} is itself on overlayfs",
            AufsMagic => $"{existing} is on aufs",
            ZfsMagic => $"{existing} is on zfs",
            _ => null,
        };
    }

    /// <summary>Mounts the stage1 image's rootfs (<paramref name="lowerRootfs"/>, in the tree store)
    /// as <c>stage1/rootfs</c>.</summary>
    public static void MountStage1(PodDirectory pod, string treeId, string lowerRootfs)
    {
        var overlay = TreeOverlayDir(pod, treeId);
        MountOverlay(lowerRootfs, Path.Join(overlay, "upper"), Path.Join(overlay, "work"), pod.Stage1Rootfs);
    }

    /// <summary>Mounts an app's image rootfs as <c>stage1/rootfs/opt/stage2/&lt;app&gt;/rootfs</c>.</summary>
    public static void MountApp(PodDirectory pod, string app, string treeId, string lowerRootfs)
    {
        var overlay = TreeOverlayDir(pod, treeId);
        Directory.CreateDirectory(pod.AppDir(app));
        MountOverlay(lowerRootfs, Path.Join(overlay, "upper", app), Path.Join(overlay, "work", app), pod.AppRootfs(app));
    }

    /// <summary>Unmounts an app's rootfs and drops its upper and work directories. Only this app's:
    /// rkt 1.30 removes the whole <c>overlay/&lt;id&gt;</c>, which takes the upper directories of the
    /// pod's other apps made from the same image with it.</summary>
    public static void RemoveApp(PodDirectory pod, string app, string treeId)
    {
        var rootfs = pod.AppRootfs(app);
        if (IsMountPoint(rootfs) && Libc.umount2(rootfs, 0) != 0)
            throw new Stage1Exception($"cannot unmount {rootfs}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())} (something on the host still uses the app's files)");
        var overlay = TreeOverlayDir(pod, treeId);
        foreach (var dir in new[] { Path.Join(overlay, "upper", app), Path.Join(overlay, "work", app) })
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    /// <summary>Unmounts everything mounted at or below <paramref name="path"/>, deepest first (a
    /// busy mount is detached), and says whether anything is still mounted there.</summary>
    public static bool UnmountAllUnder(string path)
    {
        foreach (var mount in MountsUnder(path).OrderByDescending(m => m.Length))
            if (Libc.umount2(mount, 0) != 0 && Marshal.GetLastPInvokeError() != Libc.EINVAL)
                Libc.umount2(mount, Libc.MNT_DETACH);
        return MountsUnder(path).Count == 0;
    }

    public static bool IsMountPoint(string path)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        return MountPoints().Contains(full);
    }

    /// <summary>The mount points at or below <paramref name="path"/>.</summary>
    public static IReadOnlyList<string> MountsUnder(string path)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        return MountPoints().Where(m => m == full || m.StartsWith(full + "/", StringComparison.Ordinal)).ToList();
    }

    /// <summary>Mount points from <c>/proc/self/mountinfo</c> (field 5, octal escapes decoded).</summary>
    public static IEnumerable<string> MountPoints() =>
        File.ReadAllLines("/proc/self/mountinfo").Select(l => l.Split(' ')).Where(f => f.Length > 4).Select(f => DecodeMountInfo(f[4]));

    internal static string DecodeMountInfo(string field)
    {
        if (!field.Contains('\\')) return field;
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length && field.Substring(i + 1, 3) is var oct && oct.All(c => c is >= '0' and <= '7'))
            {
                sb.Append((char)Convert.ToInt32(oct, 8));
                i += 3;
            }
            else sb.Append(field[i]);
        }
        return sb.ToString();
    }

    /// <summary>overlayfs splits its options at ',' and lowerdir at ':': both are escaped with '\'.</summary>
    internal static string EscapeOption(string path) => path.Replace(@"\", @"\\").Replace(",", @"\,").Replace(":", @"\:");

    private static string TreeOverlayDir(PodDirectory pod, string treeId) =>
        treeId.StartsWith("sha512-", StringComparison.Ordinal) && treeId.All(c => char.IsAsciiLetterOrDigit(c) || c == '-')
            ? Path.Join(pod.OverlayDir, treeId)
            : throw new Stage1Exception($"\"{treeId}\" is not a tree-store ID");

    private static void MountOverlay(string lower, string upper, string work, string target)
    {
        if (!Directory.Exists(lower)) throw new Stage1Exception($"the image tree {lower} does not exist (removed from the store?)");
        var mode = File.GetUnixFileMode(lower);
        foreach (var dir in new[] { upper, work, target })
            if (!Directory.Exists(dir)) Directory.CreateDirectory(dir, mode);
        var options = $"lowerdir={EscapeOption(lower)},upperdir={EscapeOption(upper)},workdir={EscapeOption(work)}";
        if (Libc.mount("overlay", target, "overlay", 0, options) != 0)
            throw new Stage1Exception($"cannot mount an overlay on {target}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
    }
}

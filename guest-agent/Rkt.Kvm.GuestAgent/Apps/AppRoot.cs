using System.Text;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>Pod-wide files every app sees.</summary>
internal sealed record PodConfig(string Hostname, string Hosts, string ResolvConf)
{
    public const string DefaultHostname = "rkt-pod";

    public static PodConfig Create(string? hostname, string? hosts, string? resolvConf)
    {
        string name = string.IsNullOrEmpty(hostname) ? DefaultHostname : hostname;
        return new PodConfig(name,
            string.IsNullOrEmpty(hosts) ? $"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n" : hosts,
            resolvConf ?? "");
    }
}

/// <summary>A volume to mount into an app: a 9p export or a guest directory.</summary>
internal sealed record Volume(string? Export, string? Path, string Target, bool ReadOnly);

/// <summary>
/// An app's root under /apps/&lt;name&gt;/ (the stage2 helper pivots into it and drops every other mount):
/// the rootfs (a 9p export's directory in <see cref="NinePShare"/>, or a guest directory) as the lower layer, <c>upper</c> (tmpfs: overlay upper and work
/// dirs, generated /etc files), <c>root</c> (overlay, or a read-only bind), and inside the root
/// /dev (tmpfs with a minimal set of nodes), /dev/pts (new devpts), /dev/shm, /tmp, /etc/{hosts,
/// resolv.conf,hostname} and the volumes. /proc is mounted by the helper inside the pod's PID
/// namespace. No /sys: apps need nothing from it, and it would show the guest's devices and the
/// cgroup tree of every app.
/// </summary>
internal sealed class AppRoot
{
    public const string AppsDirectory = "/apps";

    private readonly List<string> _mounts = [];

    public string Directory { get; }
    public string Root => Directory + "/root";
    /// <summary>The image's rootfs in the guest (the overlay's lower layer): what the app's root shows before the app changes it, without the overlay's lookups.</summary>
    public string Lower { get; private set; } = "";
    public IReadOnlyList<string> Mounts => _mounts;

    private AppRoot(string directory) => Directory = directory;

    /// <summary>Prepares the root; on failure everything done so far is undone and the exception propagates.</summary>
    public static AppRoot Prepare(string name, string? rootfsExport, string? rootfsPath, bool readOnly, IReadOnlyList<Volume> volumes, PodConfig pod)
    {
        var app = new AppRoot($"{AppsDirectory}/{name}");
        try
        {
            app.Build(rootfsExport, rootfsPath, readOnly, volumes, pod);
            return app;
        }
        catch
        {
            app.Teardown();
            throw;
        }
    }

    private void Build(string? rootfsExport, string? rootfsPath, bool readOnly, IReadOnlyList<Volume> volumes, PodConfig pod)
    {
        // The export's directory in the shared 9p mount is the overlay's lower layer (or the read-only bind's source).
        string lower = Lower = rootfsExport is not null ? NinePShare.ExportDirectory(rootfsExport) : rootfsPath!;
        System.IO.Directory.CreateDirectory(AppsDirectory);
        if (System.IO.Directory.Exists(Directory)) throw new IOException($"{Directory} is left over from an earlier app of that name.");
        System.IO.Directory.CreateDirectory(Directory);
        string upper = Directory + "/upper";
        System.IO.Directory.CreateDirectory(upper);
        Mount("tmpfs", upper, "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV, "mode=0755", "the writable layer");
        System.IO.Directory.CreateDirectory(Root);
        bool etcWritten = false;
        if (readOnly)
        {
            Mount(lower, Root, null, Libc.MS_BIND | Libc.MS_REC, null, "the read-only root");
            Mount("none", Root, null, Libc.MS_REMOUNT | Libc.MS_BIND | Libc.MS_RDONLY, null, "the read-only root");
        }
        else
        {
            System.IO.Directory.CreateDirectory(upper + "/upper");
            System.IO.Directory.CreateDirectory(upper + "/work");
            etcWritten = WriteEtcIntoUpperLayer(lower, upper + "/upper", pod);
            Mount("overlay", Root, "overlay", 0, $"lowerdir={lower},upperdir={upper}/upper,workdir={upper}/work", "the overlay root");
        }

        string dev = SafeDirectory("dev", create: !readOnly);
        Mount("tmpfs", dev, "tmpfs", Libc.MS_NOSUID | Libc.MS_NOEXEC, "mode=0755,size=64k", "/dev");
        foreach (var (node, major, minor) in new[] { ("null", 1u, 3u), ("zero", 1u, 5u), ("full", 1u, 7u), ("random", 1u, 8u), ("urandom", 1u, 9u), ("tty", 5u, 0u) })
            if (Libc.mknod($"{dev}/{node}", Libc.S_IFCHR | 0666, Libc.MakeDev(major, minor)) != 0)
                throw new IOException($"mknod /dev/{node}: {Libc.LastError()}");
        foreach (var (link, target) in new[] { ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx") })
            File.CreateSymbolicLink($"{dev}/{link}", target);
        System.IO.Directory.CreateDirectory(dev + "/pts");
        System.IO.Directory.CreateDirectory(dev + "/shm");
        Mount("devpts", dev + "/pts", "devpts", Libc.MS_NOSUID | Libc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620", "/dev/pts");
        Mount("shm", dev + "/shm", "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, "mode=1777", "/dev/shm");
        Mount("tmpfs", SafeDirectory("tmp", create: !readOnly), "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV, "mode=1777", "/tmp");
        SafeDirectory("proc", create: !readOnly);

        if (!etcWritten)
            foreach (var (name, content) in EtcFiles(pod)) WriteEtc(readOnly, upper, name, content);

        int i = 0;
        foreach (var volume in volumes)
        {
            string what = $"the volume at {volume.Target}";
            string target = SafeDirectory(volume.Target, create: !readOnly);
            string source = volume.Export is not null ? NinePShare.ExportDirectory(volume.Export) : volume.Path!;
            if (!System.IO.Directory.Exists(source)) throw new ArgumentException($"The volume source {source} is not a directory in the guest.");
            Mount(source, target, null, Libc.MS_BIND | Libc.MS_REC, null, what);
            if (volume.ReadOnly) Mount("none", target, null, Libc.MS_REMOUNT | Libc.MS_BIND | Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV, null, what);
            i++;
        }
    }

    private static (string Name, string Content)[] EtcFiles(PodConfig pod) =>
        [("hostname", pod.Hostname + "\n"), ("hosts", pod.Hosts), ("resolv.conf", pod.ResolvConf)];

    /// <summary>
    /// Writes the pod's /etc files into the overlay's upper layer before the overlay is mounted, where
    /// writing them through the overlay would copy /etc up and replace each file with a whiteout and a
    /// new file, several 9p round trips each (~250 ms an app on nested hosts). The upper /etc takes the
    /// image's /etc's mode and owner: a merged directory shows the upper one's. Only when the image's
    /// /etc is a directory or missing; false otherwise (a symlinked /etc gets the checks of
    /// <see cref="SafeDirectory"/>).
    /// </summary>
    private static bool WriteEtcIntoUpperLayer(string lower, string upperLayer, PodConfig pod)
    {
        uint mode = Libc.S_IFDIR | 0755, uid = 0, gid = 0; // a missing /etc is made as SafeDirectory would
        if (!Libc.LStat(lower + "/etc", out uint m, out uint u, out uint g))
        {
            if (System.Runtime.InteropServices.Marshal.GetLastPInvokeError() != Libc.ENOENT) return false;
        }
        else (mode, uid, gid) = (m, u, g);
        if ((mode & Libc.S_IFMT) != Libc.S_IFDIR) return false;
        string etc = upperLayer + "/etc";
        System.IO.Directory.CreateDirectory(etc);
        if (Libc.lchown(etc, uid, gid) != 0 || Libc.chmod(etc, mode & 0xFFF) != 0) throw new IOException($"chown/chmod {etc}: {Libc.LastError()}");
        foreach (var (name, content) in EtcFiles(pod)) File.WriteAllText(etc + "/" + name, content);
        return true;
    }

    /// <summary>/etc/&lt;name&gt;: written into the overlay (replacing a symlink rather than writing through it),
    /// or, on a read-only root, a generated file bind-mounted over an existing one.</summary>
    private void WriteEtc(bool readOnly, string upper, string name, string content)
    {
        if (!readOnly)
        {
            string path = SafeDirectory("etc", create: true) + "/" + name;
            File.Delete(path);
            File.WriteAllText(path, content);
            return;
        }
        string generated = upper + "/" + name;
        File.WriteAllText(generated, content);
        string etc = SafeDirectory("etc", create: false);
        string target = etc + "/" + name;
        if (File.Exists(target) && new FileInfo(target).LinkTarget is null)
            Mount(generated, target, null, Libc.MS_BIND, null, "/etc/" + name);
    }

    /// <summary>
    /// &lt;root&gt;/<paramref name="relative"/> as a real directory: every component must be a directory, not a
    /// symlink (a symlink could point the agent's mount outside the app's root); missing ones are created.
    /// </summary>
    public string SafeDirectory(string relative, bool create)
    {
        string path = Root;
        foreach (string part in relative.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part is "." or "..") throw new ArgumentException($"The path {relative} must not contain '.' or '..'.");
            path += "/" + part;
            var info = new DirectoryInfo(path);
            if (info.LinkTarget is not null) throw new ArgumentException($"/{relative} is, or passes through, a symlink in the app's root.");
            if (info.Exists) continue;
            if (File.Exists(path)) throw new ArgumentException($"/{relative} passes through a file in the app's root.");
            if (!create) throw new ArgumentException($"/{relative} does not exist in the app's read-only root.");
            info.Create();
        }
        return path;
    }

    private void Mount(string source, string target, string? type, ulong flags, string? data, string what)
    {
        if (Libc.mount(source, target, type!, flags, data) != 0)
            throw new IOException($"Mounting {what} failed: {Libc.LastError()}.");
        if ((flags & Libc.MS_REMOUNT) == 0) _mounts.Add(target);
    }

    /// <summary>Unmounts everything (deepest first, lazily) and removes the app's directories; returns the failures.</summary>
    public string? Teardown()
    {
        var failures = new StringBuilder();
        for (int i = _mounts.Count - 1; i >= 0; i--)
        {
            if (Libc.umount2(_mounts[i], Libc.MNT_DETACH) != 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                if (errno != Libc.EINVAL && errno != Libc.ENOENT) failures.Append($" umount {_mounts[i]}: {Libc.Describe(errno)};");
            }
        }
        _mounts.Clear();
        // Only empty directories: never a recursive delete, which could reach into a mount that stayed.
        foreach (string dir in new[] { Root, Directory + "/upper", Directory + "/lower", Directory })
            if (System.IO.Directory.Exists(dir) && Libc.rmdir(dir) != 0) failures.Append($" rmdir {dir}: {Libc.LastError()};");
        return failures.Length == 0 ? null : failures.ToString().Trim();
    }
}

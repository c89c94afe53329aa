using System.Diagnostics;
using System.Text;

namespace Rkt.Kvm.Images.Builders;

/// <summary>
/// Lays out a small root filesystem around a static busybox (Debian's busybox-static): the binary,
/// one symlink per applet where busybox itself says the applet lives (<c>busybox --list-full</c>),
/// the usual top-level directories, and an /etc with passwd, group, nsswitch-free defaults. It is
/// the default image of <c>make run</c> and the image the VM tests run apps from; building it here,
/// rather than from a registry, keeps both offline and reproducible.
/// </summary>
public static class BusyboxRootfs
{
    public const string DefaultBusybox = "/bin/busybox";

    /// <summary>Accounts every image built by us has: root, a few system ids, an unprivileged
    /// user (1000) and nobody, so tests can resolve users and groups by name.</summary>
    public const string Passwd =
        "root:x:0:0:root:/root:/bin/sh\n" +
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n" +
        "bin:x:2:2:bin:/bin:/bin/false\n" +
        "user:x:1000:1000:user:/home/user:/bin/sh\n" +
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

    public const string Group =
        "root:x:0:\n" +
        "daemon:x:1:\n" +
        "bin:x:2:\n" +
        "tty:x:5:\n" +
        "wheel:x:10:user\n" +
        "users:x:100:user\n" +
        "user:x:1000:\n" +
        "nogroup:x:65534:\n";

    // Modes are octal strings: C# has no octal literals, and 0755 would silently be decimal.
    private static readonly (string Path, string Mode)[] Directories =
    [
        ("bin", "0755"), ("sbin", "0755"), ("usr", "0755"), ("usr/bin", "0755"), ("usr/sbin", "0755"),
        ("etc", "0755"), ("dev", "0755"), ("proc", "0555"), ("sys", "0555"), ("tmp", "01777"), ("var", "0755"),
        ("var/tmp", "01777"), ("run", "0755"), ("root", "0700"), ("home", "0755"), ("home/user", "0755"), ("mnt", "0755"),
    ];

    /// <summary>Builds the rootfs into <paramref name="rootfs"/>, which must not exist or be empty.</summary>
    /// <param name="busybox">A statically linked busybox: the guest has no libc to load a dynamic one.</param>
    public static void Build(string rootfs, string busybox = DefaultBusybox)
    {
        if (!File.Exists(busybox))
            throw new ImageException($"busybox binary {busybox} does not exist (Debian package busybox-static)");
        if (Directory.Exists(rootfs) && Directory.EnumerateFileSystemEntries(rootfs).Any())
            throw new ImageException($"{rootfs} is not empty; the busybox rootfs is built into an empty directory");

        Directory.CreateDirectory(rootfs);
        foreach (var (path, mode) in Directories)
        {
            var dir = Path.Join(rootfs, path);
            Directory.CreateDirectory(dir);
            File.SetUnixFileMode(dir, Octal(mode));
        }
        File.Copy(busybox, Path.Join(rootfs, "bin/busybox"));
        File.SetUnixFileMode(Path.Join(rootfs, "bin/busybox"), Octal("0755"));
        File.WriteAllText(Path.Join(rootfs, "home/user/.profile"), "");
        // The unprivileged user owns its home, as in a real image (tests write there as 1000),
        // where we may chown: as an unprivileged builder everything stays ours.
        if (Native.Libc.IsRoot)
            foreach (var path in new[] { "home/user", "home/user/.profile" })
                if (Native.Libc.lchown(Path.Join(rootfs, path), 1000, 1000) != 0) throw Native.Libc.Error("lchown", path);

        foreach (var applet in AppletPaths(busybox))
        {
            if (applet == "bin/busybox") continue;
            var link = Path.Join(rootfs, applet);
            Directory.CreateDirectory(Path.GetDirectoryName(link)!);
            // Relative, so the tree reads right on the host as well as in the guest.
            var target = Path.GetRelativePath(Path.GetDirectoryName(applet) is { Length: > 0 } d ? d : ".", "bin/busybox");
            if (!Path.Exists(link)) File.CreateSymbolicLink(link, target);
        }

        WriteEtc(rootfs, "passwd", Passwd);
        WriteEtc(rootfs, "group", Group);
        WriteEtc(rootfs, "hostname", "busybox\n");
        WriteEtc(rootfs, "os-release", "NAME=\"Rkt.Kvm busybox\"\nID=busybox\n");
    }

    private static UnixFileMode Octal(string mode) => (UnixFileMode)Convert.ToInt32(mode, 8);

    /// <summary>Where each applet lives (e.g. <c>usr/bin/awk</c>), as the binary lists it.</summary>
    public static IReadOnlyList<string> AppletPaths(string busybox = DefaultBusybox)
    {
        var start = new ProcessStartInfo(busybox, "--list-full") { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start) ?? throw new ImageException($"cannot run {busybox}");
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new ImageException($"{busybox} --list-full exited {process.ExitCode}; is it a busybox binary?");
        return ParseAppletList(output);
    }

    /// <summary>Validates <c>--list-full</c> output: relative paths, no <c>..</c>, nothing odd.</summary>
    public static IReadOnlyList<string> ParseAppletList(string listFull)
    {
        var paths = new List<string>();
        foreach (var raw in listFull.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0) continue;
            if (line.StartsWith('/') || line.Split('/').Any(part => part is "" or "." or ".."))
                throw new ImageException($"busybox listed an applet path that is not a plain relative path: \"{line}\"");
            paths.Add(line);
        }
        if (paths.Count == 0) throw new ImageException("busybox listed no applets");
        return paths;
    }

    private static void WriteEtc(string rootfs, string name, string content)
    {
        var path = Path.Join(rootfs, "etc", name);
        File.WriteAllText(path, content, new UTF8Encoding(false));
        File.SetUnixFileMode(path, Octal("0644"));
    }
}

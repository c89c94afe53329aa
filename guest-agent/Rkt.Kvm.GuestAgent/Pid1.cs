using System.Runtime.InteropServices;
using System.Text;

namespace Rkt.Kvm.GuestAgent;

/// <summary>What the agent does because it is PID 1 of the VM: early mounts, environment, power-off.</summary>
internal static class Pid1
{
    private const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <summary>Mounts the kernel filesystems. /dev first: the runtime and Kestrel read /dev/urandom.
    /// A missing mount point is created; "already mounted" is fine. Returns the failures, or null.</summary>
    public static string? MountEarly()
    {
        StringBuilder? failures = null;
        void Mount(string source, string target, string type, ulong flags, string? data)
        {
            if (Libc.mount(source, target, type, flags, data) == 0) return;
            int errno = Marshal.GetLastPInvokeError();
            if (errno == 2 /* ENOENT */ && Libc.mkdir(target, 0755) == 0 && Libc.mount(source, target, type, flags, data) == 0) return;
            if (errno == Libc.EBUSY) return;
            (failures ??= new StringBuilder()).Append(' ').Append(target).Append(" (errno ").Append(errno).Append(')');
        }
        if (RootOnBindMount() is { } rootError) (failures ??= new StringBuilder()).Append(' ').Append(rootError);
        Mount("devtmpfs", "/dev", "devtmpfs", Libc.MS_NOSUID, "mode=0755");
        Mount("proc", "/proc", "proc", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, null);
        Mount("sysfs", "/sys", "sysfs", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, null);
        // cgroup v2 for the apps' limits (Apps/Cgroup.cs); the agent itself stays in the root cgroup.
        Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, null);
        Mount("devpts", "/dev/pts", "devpts", Libc.MS_NOSUID | Libc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
        Mount("tmpfs", "/tmp", "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV, "mode=1777");
        return failures is null ? null : "mount failed:" + failures;
    }

    private const string RootBind = "/.agent-root";

    /// <summary>
    /// Makes the agent's root a bind mount of the initramfs (rootfs) stacked on rootfs itself, the
    /// way switch_root(8) moves a new root over "/". pivot_root(2) refuses a root that is its
    /// namespace's root mount, as rootfs is; on a bind mount the stage2 helper can pivot into an
    /// app's root and drop every mount of the agent's with one lazy umount (runc's way) instead of
    /// one umount per mount (each an RCU grace period, ~70 ms on nested hosts). Runs before any
    /// other mount, so every later one is under the bind. Returns the failure, or null.
    /// </summary>
    private static string? RootOnBindMount()
    {
        if (Libc.mkdir(RootBind, 0700) != 0 && Marshal.GetLastPInvokeError() != 17 /* EEXIST */) return $"{RootBind} (errno {Marshal.GetLastPInvokeError()})";
        if (Libc.mount("/", RootBind, null!, Libc.MS_BIND | Libc.MS_REC, null) != 0) return $"bind of / (errno {Marshal.GetLastPInvokeError()})";
        if (Libc.chdir(RootBind) != 0 || Libc.mount(".", "/", null!, Libc.MS_MOVE, null) != 0 || Libc.chroot(".") != 0 || Libc.chdir("/") != 0)
            return $"moving the root bind over / (errno {Marshal.GetLastPInvokeError()})";
        return null;
    }

    /// <summary>The kernel starts init with only HOME=/ and TERM=linux (plus unknown key=value
    /// parameters from its command line); give children a usual PATH.</summary>
    public static void SetEnvironment()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("PATH")))
            Environment.SetEnvironmentVariable("PATH", DefaultPath);
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("HOME")))
            Environment.SetEnvironmentVariable("HOME", "/");
    }

    /// <summary>Clean power-off of the VM: sync, then reboot(RESTART). The VMM boots the kernel with
    /// reboot=k and takes the i8042 reset as a clean exit; POWER_OFF would return (no ACPI) and PID 1
    /// exiting panics the kernel. Returns only if reboot failed.</summary>
    public static void PowerOff()
    {
        Libc.sync();
        Libc.reboot(Libc.LINUX_REBOOT_CMD_RESTART);
        Log.Line($"rkt-kvm-agent: reboot failed (errno {Marshal.GetLastPInvokeError()})");
    }
}

/// <summary>Console log: stdout of PID 1 is /dev/console, where every character costs guest time. Keep it to a few lines.</summary>
internal static class Log
{
    public static void Line(string text) => Libc.WriteAll(1, Encoding.UTF8.GetBytes(text + "\n"));
}

using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent;

/// <summary>The few libc calls the agent needs, bound at link time in the static binary (DirectPInvoke).</summary>
internal static unsafe partial class Libc
{
    public const int AF_VSOCK = 40;
    public const int SOCK_STREAM = 1;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int O_RDONLY = 0;
    public const int O_CLOEXEC = 0x80000;
    public const int EEXIST = 17;
    public const int EBUSY = 16;
    public const int EINTR = 4;
    public const int CLOCK_REALTIME = 0, CLOCK_BOOTTIME = 7;
    public const int LINUX_REBOOT_CMD_RESTART = 0x01234567;

    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REMOUNT = 32, MS_BIND = 4096,
        MS_MOVE = 8192, MS_REC = 16384, MS_PRIVATE = 1 << 18, MS_RELATIME = 1 << 21;
    public const int MNT_DETACH = 2;
    public const int ENOENT = 2, ESRCH = 3, EINVAL = 22;
    public const int O_WRONLY = 1, O_RDWR = 2;
    public const uint S_IFCHR = 0x2000;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mknod(string path, uint mode, ulong dev);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rmdir(string path);

    public const int SIGKILL = 9;
    [LibraryImport("libc", SetLastError = true)] public static partial int kill(int pid, int signal);

    public const int CLONE_NEWUTS = 0x04000000;
    [LibraryImport("libc", SetLastError = true)] public static partial int setns(int fd, int nstype);
    [LibraryImport("libc", SetLastError = true)] public static partial int sethostname(byte* name, nint length);

    [LibraryImport("libc", SetLastError = true)] public static partial int pipe2(int* fds, int flags);

    [LibraryImport("libc", SetLastError = true)] public static partial int posix_spawn(int* pid, byte* path, void* fileActions, void* attributes, byte** argv, byte** envp);
    [LibraryImport("libc")] public static partial int posix_spawn_file_actions_init(void* fileActions);
    [LibraryImport("libc")] public static partial int posix_spawn_file_actions_destroy(void* fileActions);
    [LibraryImport("libc")] public static partial int posix_spawn_file_actions_adddup2(void* fileActions, int fd, int newFd);
    [LibraryImport("libc")] public static partial int posix_spawnattr_init(void* attributes);
    [LibraryImport("libc")] public static partial int posix_spawnattr_destroy(void* attributes);
    [LibraryImport("libc")] public static partial int posix_spawnattr_setflags(void* attributes, short flags);
    [LibraryImport("libc")] public static partial int posix_spawnattr_setsigmask(void* attributes, void* mask);
    [LibraryImport("libc")] public static partial int posix_spawnattr_setsigdefault(void* attributes, void* mask);
    [LibraryImport("libc")] public static partial int sigemptyset(void* set);
    [LibraryImport("libc")] public static partial int sigfillset(void* set);

    /// <summary>makedev(3) for the classic small numbers.</summary>
    public static ulong MakeDev(uint major, uint minor) => ((ulong)major << 8) | minor;

    /// <summary>strerror-like text for an errno (the static binary has no message catalogue to lean on).</summary>
    public static string Describe(int errno) => $"{new System.ComponentModel.Win32Exception(errno).Message} (errno {errno})";

    /// <summary>Last P/Invoke error as text.</summary>
    public static string LastError() => Describe(Marshal.GetLastPInvokeError());

    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec { public long Seconds; public long Nanoseconds; }

    [LibraryImport("libc")] public static partial int getpid();

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string source, string target, string fstype, ulong flags, string? data);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdir(string path, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chdir(string path);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chroot(string path);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lstat(string path, byte* buffer);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lchown(string path, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chmod(string path, uint mode);

    public const uint S_IFMT = 0xF000, S_IFDIR = 0x4000;

    /// <summary>lstat(2): the mode (type and permissions), owner and group; false with errno set on failure.</summary>
    public static bool LStat(string path, out uint mode, out uint uid, out uint gid)
    {
        byte* st = stackalloc byte[256]; // struct stat is 144 bytes on x86-64: st_mode at 24, st_uid at 28, st_gid at 32
        bool ok = lstat(path, st) == 0;
        mode = ok ? *(uint*)(st + 24) : 0;
        uid = ok ? *(uint*)(st + 28) : 0;
        gid = ok ? *(uint*)(st + 32) : 0;
        return ok;
    }

    [LibraryImport("libc")] public static partial void sync();

    [LibraryImport("libc", SetLastError = true)] public static partial int reboot(int cmd);

    [LibraryImport("libc", SetLastError = true)] public static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)] public static partial int connect(int fd, byte* address, uint length);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)] public static partial nint read(int fd, byte* buffer, nint count);

    [LibraryImport("libc", SetLastError = true)] public static partial nint write(int fd, byte* buffer, nint count);

    [LibraryImport("libc")] public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)] public static partial int fchown(int fd, uint owner, uint group);

    private const int F_DUPFD_CLOEXEC = 1030;
    [LibraryImport("libc", SetLastError = true)] private static partial int fcntl(int fd, int command, int argument);

    /// <summary>A close-on-exec duplicate of <paramref name="fd"/> (one open file, two descriptors).</summary>
    public static int DupCloexec(int fd)
    {
        int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        return copy >= 0 ? copy : throw new IOException("dup: " + LastError());
    }

    [LibraryImport("libc")] public static partial int clock_gettime(int clock, out Timespec value);

    [LibraryImport("libc", SetLastError = true)] public static partial int clock_settime(int clock, in Timespec value);

    /// <summary>ioctl(2) with a pointer (or no) argument; the request is an unsigned long in glibc.</summary>
    [LibraryImport("libc", SetLastError = true)] public static partial int ioctl(int fd, nuint request, void* argument);

    [LibraryImport("libc")] public static partial int uname(byte* buffer);

    /// <summary>Milliseconds of CLOCK_BOOTTIME: time since the kernel booted.</summary>
    public static ulong BootTimeMilliseconds()
    {
        clock_gettime(CLOCK_BOOTTIME, out Timespec t);
        return (ulong)t.Seconds * 1000 + (ulong)t.Nanoseconds / 1_000_000;
    }

    /// <summary>Writes all of <paramref name="data"/> to <paramref name="fd"/>; false on error.</summary>
    public static bool WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                nint n = write(fd, p + done, data.Length - done);
                if (n < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
                if (n <= 0) return false;
                done += (int)n;
            }
        }
        return true;
    }

    /// <summary>Reads a small file (procfs) with three syscalls into <paramref name="buffer"/>; returns the byte count or -1.</summary>
    public static int ReadSmallFile(string path, Span<byte> buffer)
    {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return -1;
        try
        {
            int total = 0;
            fixed (byte* p = buffer)
            {
                while (total < buffer.Length)
                {
                    nint n = read(fd, p + total, buffer.Length - total);
                    if (n < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
                    if (n <= 0) break;
                    total += (int)n;
                }
            }
            return total;
        }
        finally { close(fd); }
    }

    /// <summary>The running kernel's release (uname -r).</summary>
    public static string KernelRelease()
    {
        // struct utsname: six fields of 65 bytes; release is the third.
        byte* buffer = stackalloc byte[6 * 65];
        if (uname(buffer) != 0) return "";
        var release = new ReadOnlySpan<byte>(buffer + 2 * 65, 65);
        int end = release.IndexOf((byte)0);
        return System.Text.Encoding.ASCII.GetString(end < 0 ? release : release[..end]);
    }
}

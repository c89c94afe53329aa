using System.Runtime.InteropServices;

namespace Rkt.Kvm.Images.Native;

/// <summary>
/// The few libc calls .NET does not offer: ownership, device nodes, hardlinks, times and xattrs
/// of symlinks themselves (never their targets), flock, and lstat for the tree store's copies.
/// Linux x86-64 only, like the rest of the project.
/// </summary>
internal static partial class Libc
{
    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;
    public const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000,
        S_IFCHR = 0x2000, S_IFBLK = 0x6000, S_IFIFO = 0x1000;
    public const int EINTR = 4, EWOULDBLOCK = 11, EEXIST = 17, ENOTSUP = 95, EPERM = 1, E2BIG = 7, EINVAL = 22, ERANGE = 34;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lchown(string path, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdir(string path, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fchown(int fd, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mknod(string path, uint mode, ulong dev);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int link(string oldPath, string newPath);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lsetxattr(string path, string name, byte[] value, nuint size, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int utimensat(int dirfd, string path, Timespec[] times, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lstat(string path, out Stat buf);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fstat(int fd, out Stat buf);

    public const int O_RDWR = 2, O_CREAT = 0x40, O_CLOEXEC = 0x80000;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport("libc")]
    public static partial uint geteuid();

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec { public long Sec; public long Nsec; }

    /// <summary>struct stat as the x86-64 kernel ABI lays it out (144 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Stat
    {
        public ulong Dev, Ino, Nlink;
        public uint Mode, Uid, Gid;
        private readonly int _pad0;
        public ulong Rdev;
        public long Size, BlkSize, Blocks;
        public long AtimeSec, AtimeNsec, MtimeSec, MtimeNsec, CtimeSec, CtimeNsec;
        private readonly long _r0, _r1, _r2;
    }

    public static bool IsRoot { get; } = geteuid() == 0;

    public static ulong MakeDev(uint major, uint minor) =>
        ((ulong)(major & 0xfffff000) << 32) | ((ulong)(major & 0xfff) << 8)
        | ((ulong)(minor & 0xffffff00) << 12) | (minor & 0xff);

    public static Stat LStat(string path)
    {
        if (lstat(path, out var st) != 0) throw Error("lstat", path);
        return st;
    }

    public static Stat FStat(int fd, string path)
    {
        if (fstat(fd, out var st) != 0) throw Error("fstat", path);
        return st;
    }

    /// <summary>Sets atime and mtime of the path itself, a symlink included.</summary>
    public static void SetTimes(string path, DateTimeOffset atime, DateTimeOffset mtime)
    {
        var times = new[] { ToTimespec(atime), ToTimespec(mtime) };
        if (utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0) throw Error("utimensat", path);
    }

    public static void SetTimes(string path, long atimeSec, long atimeNsec, long mtimeSec, long mtimeNsec)
    {
        var times = new[] { new Timespec { Sec = atimeSec, Nsec = atimeNsec }, new Timespec { Sec = mtimeSec, Nsec = mtimeNsec } };
        if (utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0) throw Error("utimensat", path);
    }

    private static Timespec ToTimespec(DateTimeOffset t)
    {
        long ticks = t.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        long sec = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out long rem);
        if (rem < 0) { sec--; rem += TimeSpan.TicksPerSecond; }
        return new Timespec { Sec = sec, Nsec = rem * 100 };
    }

    public static IOException Error(string call, string path)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new IOException($"{call} {path}: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
    }
}

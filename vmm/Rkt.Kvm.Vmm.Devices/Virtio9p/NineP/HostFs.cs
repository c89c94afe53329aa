using System.Runtime.InteropServices;
using System.Text;
using Rkt.Kvm.Posix;
using Tmds.Linux;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>A failed host call or a refused request: carries the Linux errno the guest gets in Rlerror.</summary>
public sealed class P9Error(int errno, string? message = null) : Exception(message ?? $"errno {errno}")
{
    public int Errno { get; } = errno;
}

/// <summary>The x86-64 <c>struct stat</c> fields the server uses.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct HostStat
{
    public ulong Dev, Ino, Nlink;
    public uint Mode, Uid, Gid, Pad0;
    public ulong Rdev;
    public long Size, BlkSize, Blocks;
    public long AtimeSec, AtimeNsec, MtimeSec, MtimeNsec, CtimeSec, CtimeNsec;
    private long _reserved0, _reserved1, _reserved2;

    public readonly uint FileType => Mode & HostFs.S_IFMT;
    public readonly bool IsDirectory => FileType == HostFs.S_IFDIR;
    public readonly bool IsRegular => FileType == HostFs.S_IFREG;
    public readonly bool IsSymlink => FileType == HostFs.S_IFLNK;
}

/// <summary>The x86-64 <c>struct statfs</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct HostStatFs
{
    public long Type, BSize;
    public ulong Blocks, BFree, BAvail, Files, FFree;
    public ulong Fsid;
    public long NameLen, FrSize, Flags;
    private long _spare0, _spare1, _spare2, _spare3;
}

/// <summary><c>struct iovec</c>.</summary>
public unsafe struct IoVec
{
    public void* Base;
    public nuint Length;
}

/// <summary>The x86-64 <c>struct flock</c> (used with the OFD lock commands).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct HostFlock
{
    public short Type, Whence;
    public long Start, Len;
    public int Pid;

    /// <summary>A lock of <paramref name="type"/> (F_RDLCK, F_WRLCK, F_UNLCK) on <paramref name="length"/> bytes from <paramref name="start"/> (0: to the end of the file).</summary>
    public static HostFlock Range(short type, long start, long length) =>
        new() { Type = type, Whence = (short)LibC.SEEK_SET, Start = start, Len = length };
}

/// <summary>
/// The libc and raw system calls the 9p server makes on the host, source-generated for NativeAOT.
/// Every call that fails throws <see cref="P9Error"/> with its errno, which goes to the guest as is.
/// All path arguments are single validated names relative to a directory fd, or the magic link
/// <c>/proc/self/fd/N</c> of an fd whose file type was checked first: no guest text is ever a host path.
/// </summary>
internal static unsafe partial class HostFs
{
    // x86-64 Linux values. Tmds.LibC has these names too, but as properties, and the server needs
    // constants (switch patterns, `is A or B`, const expressions); HostFsConstantsTests checks that
    // each one equals Tmds.LibC's. Calls made only here take Tmds.LibC's names directly.
    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_ACCMODE = 3, O_CREAT = 0x40, O_EXCL = 0x80, O_NOCTTY = 0x100,
        O_TRUNC = 0x200, O_APPEND = 0x400, O_NONBLOCK = 0x800, O_DSYNC = 0x1000, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000,
        O_CLOEXEC = 0x80000, O_SYNC = 0x101000, O_PATH = 0x200000;
    public const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, AT_REMOVEDIR = 0x200, AT_SYMLINK_FOLLOW = 0x400, AT_EMPTY_PATH = 0x1000;
    public const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000, S_IFIFO = 0x1000, S_IFSOCK = 0xC000, S_IFCHR = 0x2000, S_IFBLK = 0x6000,
        S_ISUID = 0x800, S_ISGID = 0x400, S_ISVTX = 0x200, S_IRWXUGO = 0x1FF /* 0777: the kernel's name; Tmds.LibC has S_IRWXU/G/O */;
    public const int F_OFD_GETLK = 36, F_OFD_SETLK = 37;
    public const int EPERM = 1, ENOENT = 2, EIO = 5, EBADF = 9, EAGAIN = 11, EACCES = 13, EEXIST = 17, ENOTDIR = 20, EISDIR = 21, EINVAL = 22,
        EMFILE = 24, EFBIG = 27, ENOSPC = 28, EBUSY = 16, EXDEV = 18, EROFS = 30, ERANGE = 34, ENAMETOOLONG = 36, ENOSYS = 38, ENOTEMPTY = 39, ELOOP = 40, ENODATA = 61,
        EPROTO = 71, EMSGSIZE = 90, EOPNOTSUPP = 95;
    public const long UTIME_NOW = (1L << 30) - 1, UTIME_OMIT = (1L << 30) - 2;
    /// <summary>PATH_MAX: the longest symlink target readlink can return (Tmds.LibC has no PATH_MAX).</summary>
    private const int PathMax = 4096;
    private static int Check(int rc) => rc >= 0 ? rc : throw new P9Error(Marshal.GetLastPInvokeError());
    private static long Check(long rc) => rc >= 0 ? rc : throw new P9Error(Marshal.GetLastPInvokeError());

    /// <summary>Borrows the raw number of <paramref name="fd"/> for one call; a closed fd is EBADF, never a reused number.</summary>
    private readonly ref struct Borrowed
    {
        private readonly FileDescriptor _fd;
        public readonly int Number;
        public Borrowed(FileDescriptor fd)
        {
            bool added = false;
            try { fd.DangerousAddRef(ref added); }
            catch (ObjectDisposedException) { throw new P9Error(EBADF, "the fid's file was closed"); }
            _fd = fd;
            Number = fd.Number;
        }
        public void Dispose() => _fd.DangerousRelease();
    }

    private static byte[] Z(string s) => CString.Utf8(s);

    /// <summary>A second fd for the same open file (F_DUPFD_CLOEXEC): works on O_PATH fds of any file type, symlinks included.</summary>
    public static FileDescriptor Dup(FileDescriptor fd)
    {
        using var d = new Borrowed(fd);
        return new FileDescriptor(Check(fcntl_int(d.Number, LibC.F_DUPFD_CLOEXEC, 0)));
    }

    public static FileDescriptor OpenAt(FileDescriptor dir, string name, int flags, uint mode = 0)
    {
        using var d = new Borrowed(dir);
        fixed (byte* p = Z(name)) return new FileDescriptor(Check(openat(d.Number, p, flags | O_CLOEXEC, mode)));
    }

    /// <summary>Opens a host path given by the operator (an export root). Not for guest text.</summary>
    public static FileDescriptor OpenHostPath(string path, int flags)
    {
        fixed (byte* p = Z(path)) return new FileDescriptor(Check(openat(AT_FDCWD, p, flags | O_CLOEXEC, 0)));
    }

    /// <summary>Reopens an O_PATH fd for I/O through its /proc magic link. Callers check the file type first (regular or directory only).</summary>
    public static FileDescriptor Reopen(FileDescriptor pathFd, int flags)
    {
        using var d = new Borrowed(pathFd);
        fixed (byte* p = Z($"/proc/self/fd/{d.Number}")) return new FileDescriptor(Check(openat(AT_FDCWD, p, flags | O_CLOEXEC, 0)));
    }

    public static HostStat Stat(FileDescriptor fd)
    {
        using var d = new Borrowed(fd);
        HostStat st;
        fixed (byte* p = "\0"u8) Check(fstatat(d.Number, p, &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
        return st;
    }

    public static HostStatFs StatFs(FileDescriptor fd)
    {
        using var d = new Borrowed(fd);
        HostStatFs st;
        Check(fstatfs(d.Number, &st));
        return st;
    }

    public static string ReadLink(FileDescriptor fd)
    {
        using var d = new Borrowed(fd);
        var buffer = new byte[PathMax];
        fixed (byte* p = "\0"u8)
        fixed (byte* b = buffer)
        {
            long n = Check(readlinkat(d.Number, p, b, buffer.Length));
            return Encoding.UTF8.GetString(buffer, 0, (int)n);
        }
    }

    public static void MkdirAt(FileDescriptor dir, string name, uint mode)
    {
        using var d = new Borrowed(dir);
        fixed (byte* p = Z(name)) Check(mkdirat(d.Number, p, mode));
    }

    public static void MknodAt(FileDescriptor dir, string name, uint mode)
    {
        using var d = new Borrowed(dir);
        fixed (byte* p = Z(name)) Check(mknodat(d.Number, p, mode, 0));
    }

    public static void SymlinkAt(string target, FileDescriptor dir, string name)
    {
        using var d = new Borrowed(dir);
        fixed (byte* t = Z(target))
        fixed (byte* p = Z(name)) Check(symlinkat(t, d.Number, p));
    }

    /// <summary>Hard-links the inode behind <paramref name="file"/> (an O_PATH fd) as <paramref name="dir"/>/<paramref name="name"/>.</summary>
    public static void LinkAt(FileDescriptor file, FileDescriptor dir, string name)
    {
        using var f = new Borrowed(file);
        using var d = new Borrowed(dir);
        fixed (byte* s = Z($"/proc/self/fd/{f.Number}"))
        fixed (byte* p = Z(name)) Check(linkat(AT_FDCWD, s, d.Number, p, AT_SYMLINK_FOLLOW));
    }

    public static void RenameAt(FileDescriptor oldDir, string oldName, FileDescriptor newDir, string newName)
    {
        using var o = new Borrowed(oldDir);
        using var n = new Borrowed(newDir);
        fixed (byte* a = Z(oldName))
        fixed (byte* b = Z(newName)) Check(renameat(o.Number, a, n.Number, b));
    }

    public static void UnlinkAt(FileDescriptor dir, string name, int flags)
    {
        using var d = new Borrowed(dir);
        fixed (byte* p = Z(name)) Check(unlinkat(d.Number, p, flags));
    }

    /// <summary>chmod through the magic link (fchmod does not work on O_PATH fds); callers refuse symlinks first.</summary>
    public static void Chmod(FileDescriptor fd, uint mode)
    {
        using var d = new Borrowed(fd);
        fixed (byte* p = Z($"/proc/self/fd/{d.Number}")) Check(fchmodat(AT_FDCWD, p, mode, 0));
    }

    public static void Chown(FileDescriptor fd, uint uid, uint gid)
    {
        using var d = new Borrowed(fd);
        fixed (byte* p = "\0"u8) Check(fchownat(d.Number, p, uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
    }

    public static void Truncate(FileDescriptor fd, long size)
    {
        using var d = new Borrowed(fd);
        fixed (byte* p = Z($"/proc/self/fd/{d.Number}")) Check(truncate(p, size));
    }

    public static void SetTimes(FileDescriptor fd, long atimeSec, long atimeNsec, long mtimeSec, long mtimeNsec)
    {
        using var d = new Borrowed(fd);
        long* times = stackalloc long[4] { atimeSec, atimeNsec, mtimeSec, mtimeNsec };
        fixed (byte* p = Z($"/proc/self/fd/{d.Number}")) Check(utimensat(AT_FDCWD, p, times, 0));
    }

    /// <summary>preadv/pwritev with the iovecs pointing straight into guest RAM: no intermediate copy.</summary>
    public static int ReadVector(FileDescriptor fd, IoVec* iov, int count, long offset) => Vector(fd, iov, count, offset, write: false);
    public static int WriteVector(FileDescriptor fd, IoVec* iov, int count, long offset) => Vector(fd, iov, count, offset, write: true);

    private static int Vector(FileDescriptor fd, IoVec* iov, int count, long offset, bool write)
    {
        using var d = new Borrowed(fd);
        long n;
        int e;
        do n = write ? pwritev(d.Number, iov, count, offset) : preadv(d.Number, iov, count, offset);
        while (Eintr.Interrupted(n, out e));
        return n >= 0 ? (int)n : throw new P9Error(e);
    }

    public static void Fsync(FileDescriptor fd, bool dataOnly)
    {
        using var d = new Borrowed(fd);
        Check(dataOnly ? fdatasync(d.Number) : fsync(d.Number));
    }

    public static long Seek(FileDescriptor fd, long offset)
    {
        using var d = new Borrowed(fd);
        return Check(lseek(d.Number, offset, LibC.SEEK_SET));
    }

    public static int GetDents(FileDescriptor fd, byte* buffer, int count)
    {
        using var d = new Borrowed(fd);
        return Check(getdents64(d.Number, buffer, count));
    }

    /// <summary>F_OFD_SETLK / F_OFD_GETLK: never blocks; false when a conflicting lock is held (EAGAIN/EACCES).</summary>
    public static bool OfdLock(FileDescriptor fd, int command, ref HostFlock flock)
    {
        using var d = new Borrowed(fd);
        fixed (HostFlock* l = &flock)
        {
            if (fcntl(d.Number, command, l) >= 0) return true;
            int e = Marshal.GetLastPInvokeError();
            if (e is EAGAIN or EACCES) return false;
            throw new P9Error(e);
        }
    }

    /// <summary>getxattr/listxattr through the magic link of a regular file or directory; returns the value length.</summary>
    public static int GetXattr(FileDescriptor fd, string? name, Span<byte> value)
    {
        using var d = new Borrowed(fd);
        fixed (byte* p = Z($"/proc/self/fd/{d.Number}"))
        fixed (byte* v = value)
        {
            if (name is null) return (int)Check(listxattr(p, v, value.Length));
            fixed (byte* n = Z(name)) return (int)Check(getxattr(p, n, v, value.Length));
        }
    }

    [LibraryImport("libc", SetLastError = true)] private static partial int openat(int dirfd, byte* path, int flags, uint mode);
    [LibraryImport("libc", SetLastError = true)] private static partial int fstatat(int dirfd, byte* path, HostStat* st, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int fstatfs(int fd, HostStatFs* st);
    [LibraryImport("libc", SetLastError = true)] private static partial long readlinkat(int dirfd, byte* path, byte* buffer, nint size);
    [LibraryImport("libc", SetLastError = true)] private static partial int mkdirat(int dirfd, byte* path, uint mode);
    [LibraryImport("libc", SetLastError = true)] private static partial int mknodat(int dirfd, byte* path, uint mode, ulong dev);
    [LibraryImport("libc", SetLastError = true)] private static partial int symlinkat(byte* target, int dirfd, byte* path);
    [LibraryImport("libc", SetLastError = true)] private static partial int linkat(int olddirfd, byte* oldpath, int newdirfd, byte* newpath, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int renameat(int olddirfd, byte* oldpath, int newdirfd, byte* newpath);
    [LibraryImport("libc", SetLastError = true)] private static partial int unlinkat(int dirfd, byte* path, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int fchmodat(int dirfd, byte* path, uint mode, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int fchownat(int dirfd, byte* path, uint uid, uint gid, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int truncate(byte* path, long length);
    [LibraryImport("libc", SetLastError = true)] private static partial int utimensat(int dirfd, byte* path, long* times, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial long preadv(int fd, IoVec* iov, int count, long offset);
    [LibraryImport("libc", SetLastError = true)] private static partial long pwritev(int fd, IoVec* iov, int count, long offset);
    [LibraryImport("libc", SetLastError = true)] private static partial int fsync(int fd);
    [LibraryImport("libc", SetLastError = true)] private static partial int fdatasync(int fd);
    [LibraryImport("libc", SetLastError = true)] private static partial long lseek(int fd, long offset, int whence);
    [LibraryImport("libc", SetLastError = true)] private static partial int getdents64(int fd, byte* buffer, nint count);
    [LibraryImport("libc", SetLastError = true)] private static partial int fcntl(int fd, int command, HostFlock* flock);
    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)] private static partial int fcntl_int(int fd, int command, int arg);
    [LibraryImport("libc", SetLastError = true)] private static partial long listxattr(byte* path, byte* list, nint size);
    [LibraryImport("libc", SetLastError = true)] private static partial long getxattr(byte* path, byte* name, byte* value, nint size);
}

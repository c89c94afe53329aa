using System.Runtime.InteropServices;
using Tmds.Linux;

namespace Rkt.Kvm.Posix;

/// <summary>An owned Linux file descriptor; closed exactly once.</summary>
public sealed partial class FileDescriptor : SafeHandle
{
    public FileDescriptor(int fd) : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw number, only for interop calls (hold a reference or own the handle while it is used).</summary>
    public int Number => (int)handle.ToInt64();

    /// <summary>
    /// An O_PATH handle on the directory <paramref name="path"/> (close-on-exec): something to walk
    /// from (openat, <c>/proc/self/fd/N/…</c>) that grants no right to read the directory itself.
    /// Throws <see cref="ErrnoException"/>.
    /// </summary>
    public static unsafe FileDescriptor OpenDirectoryPath(string path)
    {
        int fd;
        fixed (byte* p = CString.Utf8(path)) fd = LibC.open(p, LibC.O_PATH | LibC.O_DIRECTORY | LibC.O_CLOEXEC);
        return fd >= 0 ? new FileDescriptor(fd) : throw new ErrnoException($"open {path}", LibC.errno);
    }

    /// <summary>
    /// Marks every fd above stderr close-on-exec (close_range with CLOSE_RANGE_CLOEXEC): what this
    /// process inherited stays open here but reaches no program it starts, which then get only the
    /// fds handed to them after this call. Throws <see cref="ErrnoException"/>.
    /// </summary>
    public static void KeepInheritedToThisProcess()
    {
        const long SysCloseRange = 436;
        const uint CLOSE_RANGE_CLOEXEC = 4;
        if (CloseRange(SysCloseRange, 3, uint.MaxValue, CLOSE_RANGE_CLOEXEC) == 0) return;
        int error = Marshal.GetLastPInvokeError();
        if (error != LibC.ENOSYS && error != LibC.EINVAL) throw new ErrnoException("close_range(3, ~0, CLOSE_RANGE_CLOEXEC)", error);
        // Before Linux 5.11: one fd at a time (the directory's own fd is close-on-exec already).
        foreach (var entry in Directory.GetFileSystemEntries("/proc/self/fd"))
            if (int.TryParse(Path.GetFileName(entry), out int fd) && fd > 2) LibC.fcntl(fd, LibC.F_SETFD, LibC.FD_CLOEXEC);
    }

    // Through syscall(2): glibc's close_range wrapper is 2.34's and newer.
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial int CloseRange(long number, uint first, uint last, uint flags);

    protected override bool ReleaseHandle() => LibC.close((int)handle.ToInt64()) == 0;
}

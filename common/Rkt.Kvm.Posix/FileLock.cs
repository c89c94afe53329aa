using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Posix;

/// <summary>
/// An flock(2) lock, held until disposed: on a lock file (the image store, trees, a pod's app
/// manifest) or on a directory (rkt's pod lock). flock, not .NET's FileShare, because several
/// processes must wait for each other (FileShare only fails fast) and readers may share. The
/// kernel drops the lock when the last fd of its open file closes, so a crashed process never
/// wedges anyone.
/// </summary>
public sealed unsafe partial class FileLock : IDisposable
{
    private const int LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4;
    private const int EWOULDBLOCK = 11;

    private readonly SafeFileHandle _handle;

    private FileLock(SafeFileHandle handle) => _handle = handle;

    /// <summary>The locked fd (for handing it across exec, as stage0 hands the pod lock to stage1).</summary>
    public int Fd => (int)_handle.DangerousGetHandle();

    /// <summary>Waits for the exclusive lock on the file <paramref name="path"/> (created 0644 when missing).</summary>
    public static FileLock Exclusive(string path) => Acquire(OpenFile(path), path, LOCK_EX, wait: true)!;

    /// <summary>Waits for a shared lock on the file <paramref name="path"/> (created 0644 when missing).</summary>
    public static FileLock Shared(string path) => Acquire(OpenFile(path), path, LOCK_SH, wait: true)!;

    /// <summary>The exclusive lock on the file <paramref name="path"/>; null when another open file holds it.</summary>
    public static FileLock? TryExclusive(string path) => Acquire(OpenFile(path), path, LOCK_EX, wait: false);

    /// <summary>A lock on the directory <paramref name="path"/> itself, without waiting; null when another open file holds a conflicting one.</summary>
    public static FileLock? TryDirectory(string path, bool exclusive) =>
        Acquire(Open(path, O_RDONLY | O_DIRECTORY, 0), path, exclusive ? LOCK_EX : LOCK_SH, wait: false);

    /// <summary>Takes ownership of an fd that already holds a lock (inherited across exec).</summary>
    public static FileLock Adopt(int fd) => new(new SafeFileHandle(fd, ownsHandle: true));

    /// <summary>Whether <paramref name="fd"/> is an open file descriptor (F_GETFD succeeds).</summary>
    public static bool IsOpen(int fd) => fcntl(fd, F_GETFD, 0) >= 0;

    /// <summary>Clears or sets FD_CLOEXEC: cleared only for an exec that must inherit the lock.</summary>
    public void SetInheritable(bool inheritable)
    {
        int flags = fcntl(Fd, F_GETFD, 0);
        if (flags < 0 || fcntl(Fd, F_SETFD, inheritable ? flags & ~FD_CLOEXEC : flags | FD_CLOEXEC) < 0)
            throw ErrnoException.FromLastError("fcntl(FD_CLOEXEC) of a lock");
    }

    // Opened with open(2), not File.OpenHandle: .NET takes its own non-blocking flock on files it
    // opens, which would make a second process fail instead of wait.
    private static SafeFileHandle OpenFile(string path) => Open(path, O_RDWR | O_CREAT, 0x1a4 /* 0644 */);

    private static SafeFileHandle Open(string path, int flags, uint mode)
    {
        int fd;
        fixed (byte* p = CString.Utf8(path)) fd = open(p, flags | O_CLOEXEC, (Tmds.Linux.mode_t)mode);
        if (fd < 0) throw ErrnoException.FromLastError($"open {path}");
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    private static FileLock? Acquire(SafeFileHandle handle, string path, int operation, bool wait)
    {
        try
        {
            int rc, errno;
            do rc = flock((int)handle.DangerousGetHandle(), operation | (wait ? 0 : LOCK_NB));
            while (Eintr.Interrupted(rc, out errno));
            if (rc == 0) return new FileLock(handle);
            handle.Dispose();
            if (errno == EWOULDBLOCK && !wait) return null;
            throw new ErrnoException($"flock {path}", errno);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Whether <paramref name="path"/> still names the file locked: a holder that deletes its
    /// lock file on release may have done so between another process's open and its flock.</summary>
    public bool IsAt(string path)
    {
        Tmds.Linux.stat locked, named;
        if (fstat(Fd, &locked) != 0) throw ErrnoException.FromLastError($"fstat {path}");
        fixed (byte* p = CString.Utf8(path))
            if (lstat(p, &named) != 0) return false;
        return named.st_dev == locked.st_dev && named.st_ino == locked.st_ino;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int flock(int fd, int operation);

    public void Dispose() => _handle.Dispose();
}

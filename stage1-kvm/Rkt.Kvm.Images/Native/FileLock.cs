using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Rkt.Kvm.Images.Native;

/// <summary>
/// An flock(2) lock on a file, held until disposed. flock, not .NET's FileShare, because several
/// rkt-kvm processes must wait for each other (FileShare only fails fast) and readers may share.
/// The kernel drops the lock if the process dies, so a crashed import never wedges the store.
/// </summary>
public sealed class FileLock : IDisposable
{
    private readonly SafeFileHandle _handle;

    private FileLock(SafeFileHandle handle) => _handle = handle;

    public static FileLock Exclusive(string path) => Acquire(path, Libc.LOCK_EX, wait: true)!;

    public static FileLock Shared(string path) => Acquire(path, Libc.LOCK_SH, wait: true)!;

    /// <summary>Returns null when another process holds the lock.</summary>
    public static FileLock? TryExclusive(string path) => Acquire(path, Libc.LOCK_EX, wait: false);

    private static FileLock? Acquire(string path, int op, bool wait)
    {
        // Opened with open(2), not File.OpenHandle: .NET takes its own non-blocking flock on files
        // it opens, which would make a second process fail instead of wait.
        int rawFd = Libc.open(path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC, 0x1a4 /* 0644 */);
        if (rawFd < 0) throw Libc.Error("open", path);
        var handle = new SafeFileHandle(rawFd, ownsHandle: true);
        try
        {
            int fd = (int)handle.DangerousGetHandle();
            while (Libc.flock(fd, op | (wait ? 0 : Libc.LOCK_NB)) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Libc.EINTR) continue;
                if (errno == Libc.EWOULDBLOCK && !wait) { handle.Dispose(); return null; }
                throw new IOException($"flock {path}: {Marshal.GetPInvokeErrorMessage(errno)}");
            }
            return new FileLock(handle);
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
        var locked = Libc.FStat((int)_handle.DangerousGetHandle(), path);
        try
        {
            var named = Libc.LStat(path);
            return named.Dev == locked.Dev && named.Ino == locked.Ino;
        }
        catch (IOException) { return false; }
    }

    public void Dispose() => _handle.Dispose();
}

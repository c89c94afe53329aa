using System.Runtime.InteropServices;

namespace Rkt.Kvm.Posix;

/// <summary>
/// A libc or system call failed. The message names the call and the errno, as a sentence:
/// "epoll_create1 failed: Too many open files (errno 24).". An <see cref="IOException"/>, so the
/// edges that turn I/O failures into one line (CLIs, control replies) handle it as they handle those.
/// </summary>
public sealed class ErrnoException : IOException
{
    public int Errno { get; }

    public ErrnoException(string operation, int errno)
        : base($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).")
    {
        Errno = errno;
    }

    /// <summary>The errno of the last P/Invoke (Tmds.LibC's and LibraryImport's with SetLastError alike).</summary>
    public static ErrnoException FromLastError(string operation) => new(operation, Marshal.GetLastPInvokeError());

    /// <summary><paramref name="result"/> when it is not negative; otherwise throws for <paramref name="operation"/> with the last errno.</summary>
    public static int Check(int result, string operation) => result >= 0 ? result : throw FromLastError(operation);

    /// <inheritdoc cref="Check(int, string)"/>
    public static long Check(long result, string operation) => result >= 0 ? result : throw FromLastError(operation);
}

using System.Runtime.InteropServices;

namespace Rkt.Kvm.Posix;

/// <summary>
/// pidfds: a process handle that cannot be confused with a later process given the same pid, and
/// that becomes readable (poll/epoll) when the process exits. Passed to a child, it names its
/// owner across PID namespaces, where a pid would mean nothing.
/// </summary>
public static partial class Pidfd
{
    private const long SysPidfdOpen = 434;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long PidfdOpen(long number, int pid, uint flags);

    /// <summary>A pidfd of <paramref name="pid"/> (close-on-exec); null when no such process exists. Throws <see cref="ErrnoException"/> otherwise.</summary>
    public static FileDescriptor? Open(int pid)
    {
        long fd = PidfdOpen(SysPidfdOpen, pid, 0);
        if (fd >= 0) return new FileDescriptor((int)fd);
        int error = Marshal.GetLastPInvokeError();
        return error == Tmds.Linux.LibC.ESRCH ? null : throw new ErrnoException($"pidfd_open({pid})", error);
    }

    /// <summary>Whether the inherited fd <paramref name="fd"/> is a pidfd: its fdinfo has the "Pid:" line only pidfds have.</summary>
    public static bool Is(int fd)
    {
        try
        {
            return File.ReadLines($"/proc/self/fdinfo/{fd}").Any(l => l.StartsWith("Pid:", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false; // not open
        }
    }
}

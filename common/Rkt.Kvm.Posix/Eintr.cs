using System.Runtime.InteropServices;

namespace Rkt.Kvm.Posix;

/// <summary>
/// The retry every blocking libc call needs: a signal (the VMM's vCPU kick, SIGCHLD) interrupts it
/// with EINTR, and the call is simply made again. Written as a loop condition so the call stays
/// inline (no delegate, no allocation on hot paths):
/// <code>
/// long n;
/// int e;
/// do n = read(fd, p, count); while (Eintr.Interrupted(n, out e));
/// </code>
/// </summary>
public static class Eintr
{
    public const int EINTR = 4;

    /// <summary>
    /// True when <paramref name="result"/> is a failure with EINTR (call again). Otherwise
    /// <paramref name="errno"/> is the call's errno when it failed (result &lt; 0), 0 when it succeeded.
    /// </summary>
    public static bool Interrupted(long result, out int errno)
    {
        errno = result < 0 ? Marshal.GetLastPInvokeError() : 0;
        return errno == EINTR;
    }
}

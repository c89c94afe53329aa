using System.Runtime.InteropServices;

namespace Rkt.Kvm.Stage1.Native;

/// <summary>kill(2) with the errno, for stopping a pod's processes.</summary>
public static class Signals
{
    public const int SIGKILL = 9, SIGTERM = 15, ESRCH = 3;

    public static int LastError => Marshal.GetLastPInvokeError();

    public static int Kill(int pid, int signal) => Libc.kill(pid, signal);
}

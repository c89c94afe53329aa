using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>
/// Interrupts a vCPU thread that sits in KVM_RUN: a signal with a handler that does nothing makes
/// KVM_RUN return EINTR (a signal without a handler would end the process, an ignored one would
/// not interrupt). SIGUSR2 is not used by the .NET runtime. Together with kvm_run.immediate_exit
/// (which covers a thread that is about to enter) no kick is lost.
/// </summary>
public static unsafe class VcpuKick
{
    public static readonly int Signal = SIGUSR2;
    private const long SysGettid = 186, SysTgkill = 234; // x86-64
    private static int s_installed;

    /// <summary>Installs the no-op handler once per process.</summary>
    public static void Install()
    {
        if (Interlocked.Exchange(ref s_installed, 1) == 1) return;
        sigaction action = default;
        action.sa_handler = (void*)(delegate* unmanaged<int, void>)&Ignore;
        // No SA_RESTART: the point is that KVM_RUN returns.
        action.sa_flags = 0;
        sigemptyset(&action.sa_mask);
        if (sigaction(Signal, &action, null) != 0) throw new Rkt.Kvm.Posix.ErrnoException("sigaction(SIGUSR2)", errno);
    }

    [UnmanagedCallersOnly]
    private static void Ignore(int signal) { }

    /// <summary>The calling thread's kernel thread id, for <see cref="Kick"/>.</summary>
    public static int CurrentThreadId() => (int)syscall((int)SysGettid);

    /// <summary>Sends the kick to thread <paramref name="tid"/> of this process.</summary>
    public static void Kick(int tid)
    {
        if (tid > 0) syscall((int)SysTgkill, (int)getpid(), tid, Signal);
    }
}

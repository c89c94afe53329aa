using System.Runtime.InteropServices;
using Tmds.Linux;

namespace Rkt.Kvm.Posix;

/// <summary>
/// Starts one child process in namespaces of its own (a PID namespace for the VMM, a network
/// namespace for stage1's pod supervisor) without moving the caller: <see cref="Start"/> runs the
/// spawn on a short-lived thread that first unshares them. The PID namespace of children and the
/// network namespace are per thread in Linux, and fork/clone copies the calling thread's, so the
/// child is born inside while this process's other threads never leave the host's; the thread ends
/// with the spawn. One thread per child, because a PID namespace takes one init: once it exits,
/// nothing more can be forked into it.
/// <para>Works with whatever spawns on the calling thread (<c>Process.Start</c>, posix_spawn) and
/// should make no thread there (the runtime's signal thread is started before).
/// Needs CAP_SYS_ADMIN: see <see cref="CanUnshare"/>.</para>
/// </summary>
public static class ChildNamespaces
{
    public const int Pid = 0x20000000, Network = 0x40000000; // CLONE_NEWPID, CLONE_NEWNET

    // SIGCONT: the runtime handles it itself already (terminal state), so registering and
    // unregistering a handler changes nothing but starting the signal thread.
    private static readonly Lazy<bool> s_runtimeThreadsStarted = new(() =>
    {
#pragma warning disable CA1416 // SIGCONT is not Windows's; this assembly is Linux's only (Tmds.LibC)
        PosixSignalRegistration.Create(PosixSignal.SIGCONT, _ => { }).Dispose();
#pragma warning restore CA1416
        return true;
    });

    /// <summary>Whether this process may create namespaces (it is root with CAP_SYS_ADMIN in effect).</summary>
    public static bool CanUnshare => LibC.geteuid() == 0 && Privileges.HasEffectiveCapability(Privileges.CapSysAdmin);

    /// <summary>
    /// Runs <paramref name="start"/> on a new thread after <c>unshare(<paramref name="namespaces"/>)</c>
    /// there, and waits for it; what it throws is thrown here, as is a failed unshare
    /// (<see cref="ErrnoException"/>, and then <paramref name="start"/> never runs).
    /// </summary>
    public static void Start(int namespaces, Action start)
    {
        if ((namespaces & ~(Pid | Network)) != 0) throw new ArgumentException("Only PID and network namespaces can be unshared by one thread of a process.", nameof(namespaces));
        // Once a thread has unshared its children's PID namespace it cannot make threads (clone with
        // CLONE_THREAD fails with EINVAL), and one made there after a network unshare would live in
        // that namespace for good. .NET starts its signal-handling thread lazily, on the first
        // Process.Start or PosixSignalRegistration: have it started here, before.
        _ = s_runtimeThreadsStarted.Value;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                ErrnoException.Check(LibC.unshare(namespaces), $"unshare({Describe(namespaces)}) for a child process");
                start();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { Name = "rkt-kvm namespaced spawn", IsBackground = true };
        thread.Start();
        thread.Join();
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
    }

    /// <summary>
    /// <see cref="Start"/> when this process may make namespaces (<see cref="CanUnshare"/>), else
    /// <paramref name="start"/> as it is (a test host that is not root); returns which it did.
    /// </summary>
    public static bool StartWherePermitted(int namespaces, Action start)
    {
        if (!CanUnshare)
        {
            start();
            return false;
        }
        Start(namespaces, start);
        return true;
    }

    private static string Describe(int namespaces) => string.Join(" | ",
        new[] { (Pid, "CLONE_NEWPID"), (Network, "CLONE_NEWNET") }.Where(n => (namespaces & n.Item1) != 0).Select(n => n.Item2));
}

using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent;

/// <summary>How a child ended, decoded from a waitpid status.</summary>
internal readonly record struct ExitStatus(int Code, int Signal)
{
    public static ExitStatus FromWaitStatus(int status) =>
        (status & 0x7f) == 0 ? new ExitStatus((status >> 8) & 0xff, 0) : new ExitStatus(0, status & 0x7f);

    public override string ToString() => Signal != 0 ? $"killed by signal {Signal}" : $"exited with code {Code}";
}

/// <summary>
/// Exit statuses handed from the reaper to whoever waits for a pid. A child can exit before its
/// waiter registers (an app may exit before the helper's status pipe even names its pid), so a
/// status nobody claimed yet is kept, at most <see cref="Capacity"/> of them, oldest dropped.
/// </summary>
internal sealed class ChildStatusTable(int capacity = 256)
{
    private readonly Dictionary<int, TaskCompletionSource<ExitStatus>> _waiters = [];
    private readonly Dictionary<int, ExitStatus> _unclaimed = [];
    private readonly Queue<int> _unclaimedOrder = new();

    public int Capacity => capacity;
    public long Dropped { get; private set; }
    public int UnclaimedCount { get { lock (_waiters) return _unclaimed.Count; } }

    /// <summary>The exit status of <paramref name="pid"/>: at once if it already exited unclaimed, else when it does.</summary>
    public Task<ExitStatus> Claim(int pid)
    {
        lock (_waiters)
        {
            if (_unclaimed.Remove(pid, out ExitStatus status)) return Task.FromResult(status);
            if (!_waiters.TryGetValue(pid, out var tcs))
                _waiters[pid] = tcs = new TaskCompletionSource<ExitStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
            return tcs.Task;
        }
    }

    /// <summary>Records that <paramref name="pid"/> was reaped with <paramref name="status"/>.</summary>
    public void Deliver(int pid, ExitStatus status)
    {
        TaskCompletionSource<ExitStatus>? tcs;
        lock (_waiters)
        {
            if (!_waiters.Remove(pid, out tcs))
            {
                if (_unclaimed.ContainsKey(pid)) _unclaimed[pid] = status; // pid reused before anyone asked
                else
                {
                    while (_unclaimed.Count >= capacity && _unclaimedOrder.TryDequeue(out int old))
                        if (_unclaimed.Remove(old)) Dropped++;
                    _unclaimed[pid] = status;
                    _unclaimedOrder.Enqueue(pid);
                }
                return;
            }
        }
        tcs.TrySetResult(status);
    }
}

/// <summary>
/// The single waiter for the VM's children (the agent is PID 1: orphans and every pod process, which
/// the stage2 helper clones with CLONE_PARENT, are its children). On SIGCHLD it peeks at the next exited
/// child (waitid WNOWAIT) and reaps it, handing the status to <see cref="Statuses"/>. Nothing else may
/// wait for children: System.Diagnostics.Process is never used in the agent (see <see cref="Start"/>).
/// </summary>
internal static unsafe partial class Reaper
{
    private const int P_ALL = 0, WEXITED = 4, WNOHANG = 1, WNOWAIT = 0x0100_0000;

    private static readonly Lock Lock = new(); // ReapOrphans runs on the reaper thread and at start-up
    private static bool s_started;

    /// <summary>Exit statuses of reaped children, for whoever registered (or registers later) their pid.</summary>
    public static ChildStatusTable Statuses { get; } = new();

    public static bool Started => s_started;

    [LibraryImport("libc", SetLastError = true)] private static partial int waitid(int idType, int id, byte* info, int options);
    [LibraryImport("libc", SetLastError = true)] private static partial int waitpid(int pid, int* status, int options);

    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public static void Start()
    {
        // No SIGCHLD handler: once any SIGCHLD handler is installed (PosixSignalRegistration, Process,
        // a console terminal), System.Native's signal loop calls waitpid(-1) for every child when
        // getpid() == 1 ("reapAll", pal_signal.c), stealing the exit statuses of apps. Measured in the
        // VM: statuses went missing. A thread blocked in waitid(WNOWAIT) sees every exit instead, with
        // no syscalls while nothing exits. Hence also: never use System.Diagnostics.Process in the agent.
        ReapOrphans();
        s_started = true;
        new Thread(WaitLoop, maxStackSize: 128 << 10) { IsBackground = true, Name = "reaper" }.Start();
    }

    private static readonly SemaphoreSlim s_childStarted = new(0);

    /// <summary>Call after starting a child, so the waiting thread stops idling on "no children".</summary>
    public static void ChildStarted() { if (s_childStarted.CurrentCount == 0) s_childStarted.Release(); }

    private static void WaitLoop()
    {
        byte* info = stackalloc byte[128];
        while (true)
        {
            new Span<byte>(info, 128).Clear();
            if (waitid(P_ALL, 0, info, WEXITED | WNOWAIT) != 0)
            {
                if (Marshal.GetLastPInvokeError() != Libc.EINTR) s_childStarted.Wait(1000); // ECHILD: none yet
                continue;
            }
            int pid = *(int*)(info + 16);
            if (Apps.Stage2.Debug) Log.Line($"reaper: child {pid} exited");
            ReapOrphans();
        }
    }

    /// <summary>Waits for <paramref name="pid"/> (a child of the agent) to exit.</summary>
    public static Task<ExitStatus> WaitAsync(int pid) => Statuses.Claim(pid);

    /// <summary>Reaps every exited child; returns how many.</summary>
    public static int ReapOrphans()
    {
        int reaped = 0;
        byte* info = stackalloc byte[128]; // siginfo_t; si_pid at offset 16
        lock (Lock)
        {
            while (true)
            {
                new Span<byte>(info, 128).Clear();
                if (waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT) != 0) break; // ECHILD: no children
                int pid = *(int*)(info + 16);
                if (pid == 0) break; // nothing exited
                int status;
                if (waitpid(pid, &status, WNOHANG) != pid) break;
                reaped++;
                Statuses.Deliver(pid, ExitStatus.FromWaitStatus(status));
            }
        }
        return reaped;
    }
}

using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent;

/// <summary>
/// Reaps orphans re-parented to PID 1. Measured: the .NET runtime as PID 1 leaves orphans as zombies
/// (it reaps only children of System.Diagnostics.Process, and only those). On SIGCHLD this peeks at the
/// next exited child (waitid WNOWAIT) and reaps it unless it is <see cref="Own"/>ed, i.e. started through
/// Process, whose exit status Process must collect itself. Issue 4 (apps): start a Process while holding
/// <see cref="Lock"/> and call <see cref="Own"/> before releasing it, so the reaper never races the start.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
internal static unsafe partial class Reaper
{
    private const int P_ALL = 0, WEXITED = 4, WNOHANG = 1, WNOWAIT = 0x0100_0000;

    public static readonly Lock Lock = new();
    private static readonly HashSet<int> s_owned = [];
    private static PosixSignalRegistration? s_registration;

    [LibraryImport("libc", SetLastError = true)] private static partial int waitid(int idType, int id, byte* info, int options);
    [LibraryImport("libc", SetLastError = true)] private static partial int waitpid(int pid, int* status, int options);

    public static void Start()
    {
        s_registration = PosixSignalRegistration.Create(PosixSignal.SIGCHLD, _ => ReapOrphans());
        ReapOrphans();
    }

    /// <summary>Marks a child as collected by System.Diagnostics.Process (call under <see cref="Lock"/>).</summary>
    public static void Own(int pid) { lock (Lock) s_owned.Add(pid); }

    public static void Disown(int pid) { lock (Lock) s_owned.Remove(pid); }

    /// <summary>Reaps exited children that nobody owns; returns how many.</summary>
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
                if (pid == 0 || s_owned.Contains(pid)) break; // nothing exited, or Process's to collect
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid) reaped++;
                else break;
            }
        }
        return reaped;
    }
}

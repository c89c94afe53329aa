using System.Runtime.InteropServices;
using Rkt.Kvm.Vmm.Client;
using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>
/// <c>--user</c>: once everything is open, the VMM stops being root. glibc's setgroups, setresgid
/// and setresuid change the credentials of every thread of the process (Linux keeps them per
/// thread; glibc signals each one to follow), and the kernel's set-uid fix-up then empties every
/// thread's permitted and effective capabilities: the vCPU and device threads, and also the .NET
/// runtime's own threads, which no capset of ours reaches. The one exception is the 9p workers,
/// which asked for it first (<see cref="KeepCapabilitiesThroughTheDrop"/>): file passthrough
/// needs its capabilities whoever the process is.
/// </summary>
public static unsafe partial class UserDrop
{
    private const int PR_SET_SECUREBITS = 28;
    /// <summary>
    /// SECBIT_NO_SETUID_FIXUP and its lock: a uid change leaves this thread's capabilities alone.
    /// Not SECBIT_NOROOT: nothing here executes a program any more (no_new_privs, and the filter
    /// forbids execve).
    /// </summary>
    private const nuint NoSetuidFixupLocked = 1 << 2 | 1 << 3;

    [LibraryImport("libc", SetLastError = true)] private static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    /// <summary>
    /// Called by a thread that must keep its capabilities when the process drops to its user
    /// (a 9p worker), before it lowers them: setting securebits needs CAP_SETPCAP, which it then gives up.
    /// </summary>
    public static void KeepCapabilitiesThroughTheDrop() =>
        ConfinementError.Check(prctl(PR_SET_SECUREBITS, NoSetuidFixupLocked, 0, 0, 0), "prctl(PR_SET_SECUREBITS, NO_SETUID_FIXUP)");

    /// <summary>Becomes <paramref name="user"/> (real, effective, saved and filesystem ids; no supplementary groups), and checks it took.</summary>
    public static void Become(VmmUser user) => Privileges.Become(user.Uid, user.Gid);
}

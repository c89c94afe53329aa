using System.Runtime.InteropServices;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Posix;

/// <summary>
/// Giving up what a root process no longer needs, the steps every confined host process shares
/// (the VMM, the image extraction child, stage1's pod supervisor). Each step throws
/// <see cref="ErrnoException"/> when it fails: a process that cannot confine itself must not go on.
/// </summary>
public static unsafe partial class Privileges
{
    private const int PR_SET_DUMPABLE = 4, PR_CAPBSET_DROP = 24, PR_SET_NO_NEW_PRIVS = 38;
    private const int PR_CAP_AMBIENT = 47, PR_CAP_AMBIENT_CLEAR_ALL = 4;
    private const int RLIMIT_CORE = 4;
    public const int CapSysAdmin = 21;

    /// <summary>Whether capability <paramref name="cap"/> is in this thread's effective set (/proc/thread-self/status).</summary>
    public static bool HasEffectiveCapability(int cap)
    {
        foreach (var line in File.ReadLines("/proc/thread-self/status"))
            if (line.StartsWith("CapEff:", StringComparison.Ordinal))
                return (Convert.ToUInt64(line["CapEff:".Length..].Trim(), 16) & 1UL << cap) != 0;
        return false;
    }

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    private static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int SetRlimit(int resource, ulong* limit);

    /// <summary>
    /// Becomes <paramref name="uid"/>/<paramref name="gid"/> (real, effective, saved and filesystem
    /// ids) with no supplementary groups, and checks it took. glibc makes every thread of the process
    /// follow (Linux keeps ids per thread), and leaving uid 0 empties every thread's permitted and
    /// effective capabilities, the .NET runtime's own threads included, unless a thread asked to keep
    /// them first (SECBIT_NO_SETUID_FIXUP, or PR_SET_KEEPCAPS for the caller's permitted set).
    /// </summary>
    public static void Become(uint uid, uint gid)
    {
        // (uid_t)-1 means "leave unchanged" to setresuid: it would drop nothing.
        if (uid == 0 || gid == 0 || uid == uint.MaxValue || gid == uint.MaxValue)
            throw new ArgumentException($"{uid}:{gid} is not an unprivileged user and group.");
        // Groups first: once the uid is not root, nothing may change them.
        ErrnoException.Check(setgroups(0, null), "setgroups(0)");
        ErrnoException.Check(setresgid(gid, gid, gid), $"setresgid({gid})");
        ErrnoException.Check(setresuid(uid, uid, uid), $"setresuid({uid})");
        uid_t r, e, s;
        ErrnoException.Check(getresuid(&r, &e, &s), "getresuid");
        if ((uint)r != uid || (uint)e != uid || (uint)s != uid) throw new IOException($"setresuid({uid}) left the ids {(uint)r}/{(uint)e}/{(uint)s}.");
        gid_t gr, ge, gs;
        ErrnoException.Check(getresgid(&gr, &ge, &gs), "getresgid");
        if ((uint)gr != gid || (uint)ge != gid || (uint)gs != gid) throw new IOException($"setresgid({gid}) left the ids {(uint)gr}/{(uint)ge}/{(uint)gs}.");
    }

    /// <summary>
    /// Removes every capability but those in <paramref name="keep"/> (bit n: capability n) from the
    /// calling thread's bounding set, and clears its ambient set: nothing it executes later can get
    /// them back. Both are per thread (threads started earlier keep theirs: pair this with
    /// no_new_privs, or a filter that denies execve). Needs CAP_SETPCAP, so it comes before <see cref="Become"/>.
    /// </summary>
    public static void DropBoundingSet(ulong keep = 0)
    {
        for (int cap = 0; cap < 64; cap++)
        {
            if ((keep & 1UL << cap) != 0) continue;
            if (Prctl(PR_CAPBSET_DROP, (nuint)cap, 0, 0, 0) < 0)
            {
                if (Marshal.GetLastPInvokeError() == 22 /* EINVAL: past the kernel's last capability */) break;
                throw ErrnoException.FromLastError($"prctl(PR_CAPBSET_DROP, {cap})");
            }
        }
        ErrnoException.Check(Prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    }

    /// <summary>No core dumps (they would hold what the process read) and not dumpable: no ptrace or
    /// /proc/&lt;pid&gt;/mem access by other processes of the same user. After <see cref="Become"/>: a
    /// change of uid resets dumpability to the host's fs.suid_dumpable.</summary>
    public static void ForbidDumps()
    {
        ulong* noCore = stackalloc ulong[2] { 0, 0 };
        ErrnoException.Check(SetRlimit(RLIMIT_CORE, noCore), "setrlimit(RLIMIT_CORE, 0)");
        ErrnoException.Check(Prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE, 0)");
    }

    /// <summary>no_new_privs: execve grants nothing (set-id bits and file capabilities are ignored);
    /// also what lets an unprivileged process install a seccomp filter.</summary>
    public static void ForbidNewPrivileges() =>
        ErrnoException.Check(Prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS, 1)");
}

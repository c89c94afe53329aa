namespace Rkt.Kvm.Posix;

/// <summary>
/// The x86-64 system calls (asm/unistd_64.h numbers, by name for threat models and tests) that the
/// deny-list filters of our confined helpers kill: calls a helper that has dropped to its own user
/// never makes and that would reach past it. Those filters are deny-lists because the helpers run
/// code no trace can promise to cover (a JIT, gRPC); the VMM, NativeAOT and traced, has allow-lists.
/// </summary>
public static class DeniedSyscalls
{
    /// <summary>
    /// Executing programs, reading or writing other processes, mounts and namespaces, id changes,
    /// modules, kexec, bpf, perf, keyrings, io_uring, userfaultfd, file handles, the host's name and
    /// clock, swap, reboot, accounting, quotas, the kernel log, I/O ports, personality, fanotify.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, int> BeyondTheProcess = new Dictionary<string, int>
    {
        ["execve"] = 59, ["execveat"] = 322, ["ptrace"] = 101, ["process_vm_readv"] = 310, ["process_vm_writev"] = 311,
        ["pidfd_getfd"] = 438, ["mount"] = 165, ["umount2"] = 166, ["pivot_root"] = 155, ["chroot"] = 161,
        ["unshare"] = 272, ["setns"] = 308, ["open_tree"] = 428, ["move_mount"] = 429, ["fsopen"] = 430,
        ["fsconfig"] = 431, ["fsmount"] = 432, ["fspick"] = 433, ["mount_setattr"] = 442,
        ["setuid"] = 105, ["setgid"] = 106, ["setreuid"] = 113, ["setregid"] = 114, ["setgroups"] = 116,
        ["setresuid"] = 117, ["setresgid"] = 119, ["setfsuid"] = 122, ["setfsgid"] = 123,
        ["init_module"] = 175, ["finit_module"] = 313, ["delete_module"] = 176, ["kexec_load"] = 246,
        ["kexec_file_load"] = 320, ["bpf"] = 321, ["perf_event_open"] = 298, ["add_key"] = 248,
        ["request_key"] = 249, ["keyctl"] = 250, ["io_uring_setup"] = 425, ["io_uring_enter"] = 426,
        ["io_uring_register"] = 427, ["userfaultfd"] = 323, ["open_by_handle_at"] = 304, ["name_to_handle_at"] = 303,
        ["sethostname"] = 170, ["setdomainname"] = 171, ["settimeofday"] = 164, ["clock_settime"] = 227,
        ["adjtimex"] = 159, ["clock_adjtime"] = 305, ["swapon"] = 167, ["swapoff"] = 168, ["reboot"] = 169,
        ["acct"] = 163, ["quotactl"] = 179, ["syslog"] = 103, ["iopl"] = 172, ["ioperm"] = 173,
        ["personality"] = 135, ["fanotify_init"] = 300,
    };

    /// <summary>clone's flags that make a namespace (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).</summary>
    public const uint CloneNamespaceFlags = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

    /// <summary>
    /// New namespaces through clone, which threads need and so no filter of ours denies outright:
    /// clone with a namespace flag gets <paramref name="action"/> (above all CLONE_NEWUSER, which an
    /// unprivileged process may use to gain every capability over a namespace of its own: the kernel
    /// surface the drop took away); clone3, whose flags sit in memory a filter cannot read, fails with
    /// ENOSYS, on which glibc makes its threads with clone instead. unshare and setns are in
    /// <see cref="BeyondTheProcess"/> (the VMM's allow-list never had them).
    /// </summary>
    public static IReadOnlyList<CallRefusal> NamespaceCreation(uint action) =>
    [
        new(56 /* clone */, action, Argument: 0, AnyOfBits: CloneNamespaceFlags),
        new(435 /* clone3 */, SeccompProgram.RetErrno | 38 /* ENOSYS */),
    ];

    /// <summary>Making, connecting and serving sockets: for a helper that talks to nobody.</summary>
    public static readonly IReadOnlyDictionary<string, int> Sockets = new Dictionary<string, int>
    {
        ["socket"] = 41, ["socketpair"] = 53, ["connect"] = 42, ["bind"] = 49, ["listen"] = 50,
    };
}

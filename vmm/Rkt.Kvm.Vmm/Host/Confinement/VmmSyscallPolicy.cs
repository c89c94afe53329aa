using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Devices.VirtioNet;
using Rkt.Kvm.Vmm.Kvm;
using S = Rkt.Kvm.Vmm.Host.Confinement.X64Syscalls;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>
/// The system calls the VMM makes once it is set up (found by tracing pods, 9p, vsock, net,
/// snapshots and the control socket with the filter in log mode; docs/THREAT-MODEL.md), and nothing
/// else: no execve, ptrace, process_vm_*, mount, namespaces, set*id, module or kexec calls, bpf,
/// perf, keyrings, io_uring, userfaultfd, open_by_handle_at, no sockets but Unix ones, no signals to
/// other processes, no executable memory (NativeAOT has no JIT). This is the whole process's filter
/// (every thread, the .NET runtime's own included); <see cref="ThreadSyscallPolicy"/> narrows it for
/// the threads that handle guest input.
/// </summary>
public static class VmmSyscallPolicy
{
    /// <summary>Memory (the GC and allocators, on whatever thread allocates); mmap and mprotect are ruled: never executable.</summary>
    internal static readonly int[] Memory = [S.brk, S.munmap, S.madvise, S.mremap, S.membarrier, S.get_mempolicy, S.mincore];

    /// <summary>Threads, their synchronisation, their exit, and the signals the runtime suspends them with for the GC.</summary>
    internal static readonly int[] ThreadsAndSignals =
    [
        S.futex, S.futex_waitv, S.clone, S.clone3, S.set_robust_list, S.get_robust_list, S.rseq, S.set_tid_address,
        S.exit, S.exit_group, S.gettid, S.getpid, S.getppid, S.tgkill, S.tkill, S.sched_yield, S.sched_getaffinity,
        S.sched_getparam, S.sched_getscheduler, S.getpriority, S.sigaltstack,
        S.rt_sigaction, S.rt_sigprocmask, S.rt_sigreturn, S.rt_sigtimedwait, S.rt_sigpending, S.restart_syscall,
    ];

    internal static readonly int[] Time = [S.clock_gettime, S.clock_getres, S.clock_nanosleep, S.nanosleep, S.gettimeofday, S.time];

    /// <summary>Facts about the process and the host (the runtime asks for some on any thread).</summary>
    internal static readonly int[] ProcessFacts =
    [
        S.getrandom, S.getrusage, S.sysinfo, S.uname, S.getuid, S.geteuid, S.getgid, S.getegid, S.getresuid,
        S.getresgid, S.getgroups, S.capget,
    ];

    /// <summary>I/O on descriptors already open (guest memory files, eventfds, sockets, taps, the console and log).</summary>
    internal static readonly int[] OpenFileIo =
    [
        S.read, S.write, S.readv, S.writev, S.pread64, S.pwrite64, S.preadv, S.pwritev, S.preadv2, S.pwritev2, S.lseek,
        S.close, S.close_range, S.dup, S.dup3, S.fcntl, S.fstat, S.fstatfs, S.newfstatat, S.statx, S.poll, S.ppoll,
    ];

    /// <summary>Event loops and the descriptors they are made of.</summary>
    internal static readonly int[] EventLoops = [S.epoll_create1, S.epoll_ctl, S.epoll_wait, S.epoll_pwait, S.epoll_pwait2, S.eventfd2, S.pselect6, S.pipe2];

    /// <summary>Files as a whole: syncing, sizing and copying (snapshots, 9p).</summary>
    internal static readonly int[] WholeFiles = [S.flock, S.fsync, S.fdatasync, S.ftruncate, S.fallocate, S.copy_file_range, S.sendfile];

    /// <summary>Files by name: the 9p server (through the export's fds), snapshot files, the runtime directory's sockets.</summary>
    internal static readonly int[] FilesByName =
    [
        S.openat, S.statfs, S.getdents64, S.readlinkat, S.mkdirat, S.unlinkat, S.renameat,
        S.renameat2, S.linkat, S.symlinkat, S.fchmod, S.fchmodat, S.fchown, S.fchownat, S.utimensat, S.truncate,
        S.mknodat, S.faccessat, S.faccessat2, S.getcwd, S.umask, S.getxattr, S.lgetxattr, S.fgetxattr, S.listxattr,
        S.llistxattr, S.flistxattr, S.setxattr, S.lsetxattr, S.fsetxattr, S.removexattr, S.lremovexattr,
        S.fremovexattr, S.open, S.stat, S.lstat, S.readlink, S.mkdir, S.rmdir, S.unlink, S.rename, S.link, S.symlink,
        S.chmod, S.access,
    ];

    /// <summary>Unix sockets (hybrid vsock, the control socket); socket and socketpair are ruled: AF_UNIX only.</summary>
    internal static readonly int[] UnixSockets =
    [
        S.bind, S.listen, S.accept, S.accept4, S.connect, S.sendto, S.recvfrom, S.sendmsg, S.recvmsg, S.shutdown,
        S.getsockopt, S.setsockopt, S.getsockname, S.getpeername,
    ];

    /// <summary>
    /// Other processes (waiting for the children the runtime may have) and capabilities: a thread
    /// drops its own as it starts (<see cref="ThreadCapabilities"/>); capset can only lower a
    /// thread's sets or raise them within what it still holds.
    /// </summary>
    internal static readonly int[] ProcessControl = [S.waitid, S.pidfd_open, S.capset];

    private static readonly int[] s_allowed =
        [.. Memory, .. ThreadsAndSignals, .. Time, .. ProcessFacts, .. OpenFileIo, .. EventLoops, .. WholeFiles, .. FilesByName, .. UnixSockets, .. ProcessControl];

    private const uint ProtNone = 0, ProtRead = 1, ProtWrite = 2;
    private const uint AfUnix = 1;
    private const uint PrGetDumpable = 3, PrSetName = 15, PrGetName = 16, PrCapbsetRead = 23, PrSetVma = 0x53564d41;
    internal const uint Tcgets = 0x5401, Tiocgwinsz = 0x5413, Fionread = 0x541B, Fionbio = 0x5421;

    /// <summary>The terminal and descriptor ioctls the runtime's console and socket code make.</summary>
    internal static readonly uint[] TerminalIoctls = [Tcgets, Tiocgwinsz, Fionread, Fionbio];

    internal static readonly ArgumentRule NeverExecutableMmap = new(S.mmap, 2, [ProtNone, ProtRead, ProtWrite, ProtRead | ProtWrite]);
    internal static readonly ArgumentRule NeverExecutableMprotect = new(S.mprotect, 2, [ProtNone, ProtRead, ProtWrite, ProtRead | ProtWrite]);
    internal static readonly ArgumentRule UnixSocketOnly = new(S.socket, 0, [AfUnix]);
    internal static readonly ArgumentRule UnixSocketPairOnly = new(S.socketpair, 0, [AfUnix]);
    internal static readonly ArgumentRule ThreadNamesAndFacts = new(S.prctl, 0, [PrSetName, PrGetName, PrGetDumpable, PrCapbsetRead, PrSetVma]);
    internal static readonly ArgumentRule OwnLimitsOnly = new(S.prlimit64, 0, [0]); // its own limits only (pid 0)
    /// <summary>
    /// A thread stacks its class's filter (<see cref="ThreadSyscallPolicy"/>) after this one is on:
    /// a filter can only narrow what its thread may do, so adding one gives nothing away. The thread
    /// classes' own filters forbid it again.
    /// </summary>
    internal const uint SeccompSetModeFilter = 1;
    internal static readonly ArgumentRule AddFilterOnly = new(S.seccomp, 0, [SeccompSetModeFilter]);

    /// <summary>Every ioctl the VMM makes after set-up: KVM's, the tap's offloads, the console's.</summary>
    internal static readonly ArgumentRule AllIoctls =
        new(S.ioctl, 1, [.. KvmIoctl.All, TapDevice.TunSetOffload, TapDevice.TunGetIff, TapDevice.TunSetVnetHdrSz, .. TerminalIoctls]);

    /// <summary>The calls allowed only with these argument values.</summary>
    public static IReadOnlyList<ArgumentRule> Rules { get; } =
    [
        AllIoctls, NeverExecutableMmap, NeverExecutableMprotect, UnixSocketOnly, UnixSocketPairOnly, ThreadNamesAndFacts, OwnLimitsOnly, AddFilterOnly,
    ];

    public static IReadOnlyList<int> Allowed => s_allowed;

    /// <summary>clone and clone3 are allowed for threads, not for namespaces (<see cref="DeniedSyscalls.NamespaceCreation"/>):
    /// clone with a namespace flag gets the default action, clone3 ENOSYS.</summary>
    public static BpfInstruction[] Build(uint defaultAction) =>
        SeccompProgram.Build(s_allowed, Rules, defaultAction, DeniedSyscalls.NamespaceCreation(defaultAction));
}

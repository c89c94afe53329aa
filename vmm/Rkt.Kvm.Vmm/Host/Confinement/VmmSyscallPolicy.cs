using Rkt.Kvm.Vmm.Devices.VirtioNet;
using Rkt.Kvm.Vmm.Kvm;
using S = Rkt.Kvm.Vmm.Host.Confinement.X64Syscalls;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>
/// The system calls the VMM makes once it is set up (found by tracing pods, 9p, vsock, net,
/// snapshots and the control socket with the filter in log mode; docs/THREAT-MODEL.md), and nothing
/// else: no execve, ptrace, process_vm_*, mount, namespaces, set*id, module or kexec calls, bpf,
/// perf, keyrings, io_uring, userfaultfd, open_by_handle_at, no sockets but Unix ones, no signals to
/// other processes, no executable memory (NativeAOT has no JIT).
/// </summary>
public static class VmmSyscallPolicy
{
    private static readonly int[] s_allowed =
    [
        // Memory (the GC and allocators); mmap and mprotect are ruled: never executable.
        S.brk, S.munmap, S.madvise, S.mremap, S.membarrier, S.get_mempolicy, S.mincore,
        // Threads, their synchronisation and their exit.
        S.futex, S.futex_waitv, S.clone, S.clone3, S.set_robust_list, S.get_robust_list, S.rseq, S.set_tid_address,
        S.exit, S.exit_group, S.gettid, S.getpid, S.getppid, S.tgkill, S.tkill, S.sched_yield, S.sched_getaffinity,
        S.sched_getparam, S.sched_getscheduler, S.getpriority, S.sigaltstack,
        // Signals (the runtime suspends threads for the GC with them).
        S.rt_sigaction, S.rt_sigprocmask, S.rt_sigreturn, S.rt_sigtimedwait, S.rt_sigpending, S.restart_syscall,
        // Time.
        S.clock_gettime, S.clock_getres, S.clock_nanosleep, S.nanosleep, S.gettimeofday, S.time,
        // Event loops, eventfds and pipes.
        S.epoll_create1, S.epoll_ctl, S.epoll_wait, S.epoll_pwait, S.epoll_pwait2, S.eventfd2, S.poll, S.ppoll,
        S.pselect6, S.pipe2,
        // File descriptors: I/O on what is open (guest memory files, sockets, taps, snapshots, the console).
        S.read, S.write, S.readv, S.writev, S.pread64, S.pwrite64, S.preadv, S.pwritev, S.preadv2, S.pwritev2, S.lseek,
        S.close, S.close_range, S.dup, S.dup3, S.fcntl, S.flock, S.fstat, S.fstatfs, S.fsync, S.fdatasync, S.ftruncate,
        S.fallocate, S.copy_file_range, S.sendfile,
        // Files by name: the 9p server (through the export's fds), snapshot files, the runtime directory's sockets.
        S.openat, S.newfstatat, S.statx, S.statfs, S.getdents64, S.readlinkat, S.mkdirat, S.unlinkat, S.renameat,
        S.renameat2, S.linkat, S.symlinkat, S.fchmod, S.fchmodat, S.fchown, S.fchownat, S.utimensat, S.truncate,
        S.mknodat, S.faccessat, S.faccessat2, S.getcwd, S.umask, S.getxattr, S.lgetxattr, S.fgetxattr, S.listxattr,
        S.llistxattr, S.flistxattr, S.setxattr, S.lsetxattr, S.fsetxattr, S.removexattr, S.lremovexattr,
        S.fremovexattr, S.open, S.stat, S.lstat, S.readlink, S.mkdir, S.rmdir, S.unlink, S.rename, S.link, S.symlink,
        S.chmod, S.access,
        // Unix sockets (hybrid vsock, the control socket); socket and socketpair are ruled: AF_UNIX only.
        S.bind, S.listen, S.accept, S.accept4, S.connect, S.sendto, S.recvfrom, S.sendmsg, S.recvmsg, S.shutdown,
        S.getsockopt, S.setsockopt, S.getsockname, S.getpeername,
        // Facts about the process and the host.
        S.getrandom, S.getrusage, S.sysinfo, S.uname, S.getuid, S.geteuid, S.getgid, S.getegid, S.getresuid,
        S.getresgid, S.getgroups, S.capget, S.waitid, S.pidfd_open,
        // A vCPU thread drops its own capabilities as it starts (ThreadCapabilities); capset can
        // only lower a thread's sets or raise them within what it still holds.
        S.capset,
    ];

    private const uint ProtNone = 0, ProtRead = 1, ProtWrite = 2;
    private const uint AfUnix = 1;
    private const uint PrGetDumpable = 3, PrSetName = 15, PrGetName = 16, PrCapbsetRead = 23, PrSetVma = 0x53564d41;
    private const uint Tcgets = 0x5401, Tiocgwinsz = 0x5413, Fionread = 0x541B, Fionbio = 0x5421;

    /// <summary>The calls allowed only with these argument values.</summary>
    public static IReadOnlyList<ArgumentRule> Rules { get; } =
    [
        new(S.ioctl, 1, [.. KvmIoctl.All, TapDevice.TunSetOffload, TapDevice.TunGetIff, TapDevice.TunSetVnetHdrSz, Tcgets, Tiocgwinsz, Fionread, Fionbio]),
        new(S.mmap, 2, [ProtNone, ProtRead, ProtWrite, ProtRead | ProtWrite]),
        new(S.mprotect, 2, [ProtNone, ProtRead, ProtWrite, ProtRead | ProtWrite]),
        new(S.socket, 0, [AfUnix]),
        new(S.socketpair, 0, [AfUnix]),
        new(S.prctl, 0, [PrSetName, PrGetName, PrGetDumpable, PrCapbsetRead, PrSetVma]),
        new(S.prlimit64, 0, [0]), // its own limits only (pid 0)
    ];

    public static IReadOnlyList<int> Allowed => s_allowed;

    public static BpfInstruction[] Build(uint defaultAction) => SeccompProgram.Build(s_allowed, Rules, defaultAction);
}

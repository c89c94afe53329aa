using System.Runtime.InteropServices;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>
/// What the VMM gives up once it is set up, before the first vCPU runs guest code: core dumps (they
/// would hold guest memory), files and tasks past a hard limit, ptrace or /proc/&lt;pid&gt;/mem
/// access by other processes of its user (not dumpable), new privileges through execve (no_new_privs), and every system call outside
/// <see cref="VmmSyscallPolicy"/>, on every thread of the process (SeccompProgram.FilterFlagTsync); then
/// each thread that handles guest input narrows its own calls further (<see cref="ApplyToThisThread"/>).
/// </summary>
public static unsafe partial class LockDown
{
    private const int RLIMIT_NPROC = 6, RLIMIT_NOFILE = 7;
    /// <summary>
    /// Tasks of the VMM's user: its threads (vCPUs, the device loop, 9p workers, the runtime's, a
    /// thread pool that grows while threads block), and nothing else, since the user is the pod's
    /// own and fork is filtered. A second line behind the pod cgroup's pids limit, for hosts whose
    /// cgroups have no pids controller; the kernel ignores it while the VMM is root.
    /// </summary>
    public const ulong MaxTasks = 1024;
    /// <summary>Open files: every 9p fid may hold one, plus sockets, taps, eventfds and the runtime's own.</summary>
    public const ulong MaxOpenFiles = Devices.Virtio9p.NineP.P9FidTable.DefaultMaxFids + 4096;
    private const long SYS_socket = 41, SYS_close = 3;

    [LibraryImport("libc", SetLastError = true)] private static partial int setrlimit(int resource, ulong* limit);
    [LibraryImport("libc", SetLastError = true)] private static partial int getrlimit(int resource, ulong* limit);
    [LibraryImport("libc", SetLastError = true)] private static partial long syscall(long number, nuint arg1, nuint arg2, void* arg3);

    /// <summary>Applies it all; a step that fails throws (a VMM that cannot confine itself does not run a guest).</summary>
    public static void Apply(SeccompAction action)
    {
        Privileges.ForbidDumps();
        // A hard limit on files, so a guest that makes the VMM open without end meets EMFILE, not the host's limit.
        ulong* files = stackalloc ulong[2];
        ConfinementError.Check(getrlimit(RLIMIT_NOFILE, files), "getrlimit(RLIMIT_NOFILE)");
        files[0] = files[1] = Math.Min(files[1], MaxOpenFiles);
        ConfinementError.Check(setrlimit(RLIMIT_NOFILE, files), $"setrlimit(RLIMIT_NOFILE, {files[1]})");
        ulong* tasks = stackalloc ulong[2];
        ConfinementError.Check(getrlimit(RLIMIT_NPROC, tasks), "getrlimit(RLIMIT_NPROC)");
        tasks[0] = tasks[1] = Math.Min(tasks[1], MaxTasks);
        ConfinementError.Check(setrlimit(RLIMIT_NPROC, tasks), $"setrlimit(RLIMIT_NPROC, {tasks[1]})");
        Privileges.ForbidNewPrivileges();
        if (action == SeccompAction.Off) return;
        LoadLazyLibraries();
        long rc = SeccompProgram.Install(VmmSyscallPolicy.Build(DefaultAction(action)), SeccompProgram.FilterFlagTsync);
        // With TSYNC a positive result is the id of a thread that could not be synchronised.
        if (rc > 0) throw new IOException($"seccomp: thread {rc} could not take the filter.");
        ConfinementError.Check((int)rc, "seccomp(SECCOMP_SET_MODE_FILTER)");
    }

    /// <summary>
    /// Stacks the filter of <paramref name="threadClass"/> (<see cref="ThreadSyscallPolicy"/>) on
    /// the calling thread only, after <see cref="Apply"/> (TSYNC requires that no thread has a filter
    /// of its own yet, and gave every thread no_new_privs, which a thread without CAP_SYS_ADMIN needs to add one).
    /// </summary>
    public static void ApplyToThisThread(VmmThreadClass threadClass, SeccompAction action)
    {
        if (action == SeccompAction.Off) return;
        long rc = SeccompProgram.Install(ThreadSyscallPolicy.Build(threadClass, DefaultAction(action)), flags: 0);
        ConfinementError.Check((int)rc, $"seccomp(SECCOMP_SET_MODE_FILTER) for a {threadClass} thread");
    }

    private static uint DefaultAction(SeccompAction action) => action == SeccompAction.Kill ? SeccompProgram.RetKillProcess : SeccompProgram.RetLog;


    /// <summary>
    /// <c>--test-fault</c>: the calling (vCPU) thread makes a call it may not, as a device model bug
    /// or an exploit might: <c>vcpu-forbidden-syscall</c> asks for an AF_INET socket, which the
    /// process's filter forbids; <c>vcpu-thread-filter</c> for an AF_UNIX socket, which the process
    /// allows (the device thread makes them) and only the vCPU threads' own filter forbids. Under
    /// <c>--seccomp=kill</c> the VMM dies here by SIGSYS; under <c>log</c> the kernel logs the call
    /// and it goes through (the socket is closed at once).
    /// </summary>
    public static void MakeForbiddenCall(VmmTestFault fault, Serilog.ILogger log)
    {
        (string name, int family) = fault == VmmTestFault.VcpuForbiddenSyscall
            ? ("vcpu-forbidden-syscall", Tmds.Linux.LibC.AF_INET) : ("vcpu-thread-filter", Tmds.Linux.LibC.AF_UNIX);
        string call = family == Tmds.Linux.LibC.AF_INET ? "socket(AF_INET)" : "socket(AF_UNIX)";
        string filter = family == Tmds.Linux.LibC.AF_INET ? "the seccomp filter forbids" : "only the vCPU threads' own seccomp filter forbids";
        log.Warning("--test-fault {Fault:l}: this vCPU thread now calls {Call:l}, which {Filter:l}", name, call, filter);
        Serilog.Log.CloseAndFlush();
        // Through the syscall entry point Apply already used: nothing else may run between the line above and the call.
        long fd = syscall(SYS_socket, (nuint)family, (nuint)(Tmds.Linux.LibC.SOCK_STREAM | Tmds.Linux.LibC.SOCK_CLOEXEC), null);
        if (fd >= 0) syscall(SYS_close, (nuint)fd, 0, null);
        log.Warning("--test-fault {Fault:l}: the forbidden call returned {Fd}: the filter did not kill the VMM", name, fd);
    }

    /// <summary>
    /// Loads and initialises now what the runtime would on first use, while the host's files are
    /// still there and before any thread's filter forbids how: loading maps code, which the filter
    /// forbids (no executable mappings), from files the jail's empty root no longer has; and the
    /// first log line, wherever it is written, would read the time zone (<c>lstat</c> of
    /// /etc/localtime) and set up the console's signal handling (<c>pipe2</c>), which a vCPU thread
    /// may not (<see cref="ThreadSyscallPolicy"/>). Found by tracing a vCPU thread's first log line.
    /// OpenSSL: snapshot hashes (SHA-256) on the control socket.
    /// </summary>
    internal static void LoadLazyLibraries()
    {
        System.Security.Cryptography.SHA256.HashData(ReadOnlySpan<byte>.Empty);
        _ = TimeZoneInfo.Local;
        // A write of nothing to the console stream initialises the console (and writes nothing).
        using var stderr = Console.OpenStandardError();
        stderr.Write(ReadOnlySpan<byte>.Empty);
    }
}

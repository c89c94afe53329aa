using System.Diagnostics;
using System.Runtime.InteropServices;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Client;
using Rkt.Kvm.Vmm.Host.Confinement;
using Rkt.Kvm.Vmm.Kvm;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>
/// The VMM's seccomp filter: the program's logic (run by <see cref="SeccompProgram.Evaluate"/>), and
/// the real kernel taking the very program the VMM installs, in a small C process that then tries
/// allowed and forbidden calls (a forbidden one dies by SIGSYS).
/// </summary>
public sealed class SeccompTests
{
    private static readonly BpfInstruction[] Kill = VmmSyscallPolicy.Build(SeccompProgram.RetKillProcess);
    private const int AfUnix = 1, AfInet = 2, ProtRead = 1, ProtWrite = 2, ProtExec = 4;

    private static uint Eval(int nr, params ulong[] args) => SeccompProgram.Evaluate(Kill, nr, [.. args, .. new ulong[6 - args.Length]]);

    [Theory]
    [InlineData(59, "execve")]
    [InlineData(322, "execveat")]
    [InlineData(101, "ptrace")]
    [InlineData(310, "process_vm_readv")]
    [InlineData(311, "process_vm_writev")]
    [InlineData(165, "mount")]
    [InlineData(166, "umount2")]
    [InlineData(155, "pivot_root")]
    [InlineData(161, "chroot")]
    [InlineData(105, "setuid")]
    [InlineData(308, "setns")]
    [InlineData(272, "unshare")]
    [InlineData(175, "init_module")]
    [InlineData(313, "finit_module")]
    [InlineData(321, "bpf")]
    [InlineData(298, "perf_event_open")]
    [InlineData(246, "kexec_load")]
    [InlineData(169, "reboot")]
    [InlineData(250, "keyctl")]
    [InlineData(425, "io_uring_setup")]
    [InlineData(323, "userfaultfd")]
    [InlineData(304, "open_by_handle_at")]
    [InlineData(62, "kill")]
    [InlineData(424, "pidfd_send_signal")]
    [InlineData(57, "fork")]
    public void Dangerous_calls_are_refused(int nr, string name) =>
        Assert.True(Eval(nr) == SeccompProgram.RetKillProcess, $"{name} ({nr}) is allowed");

    [Fact]
    public void Arguments_decide_for_ioctl_socket_mmap_mprotect_prctl_and_prlimit()
    {
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.ioctl, 5, KvmIoctl.Run));
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.ioctl, 5, 0xFFFF_FFFF_0000_0000UL | KvmIoctl.Run)); // the kernel reads an unsigned int
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.ioctl, 5, 0x5412)); // TIOCSTI: typing into a terminal
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.socket, AfUnix, 1));
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.socket, AfInet, 1));
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.socketpair, AfInet, 1));
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.mmap, 0, 4096, ProtRead | ProtWrite));
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.mmap, 0, 4096, ProtRead | ProtExec));
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.mprotect, 0, 4096, ProtRead | ProtWrite | ProtExec));
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.prctl, 15)); // PR_SET_NAME
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.prctl, 38)); // PR_SET_NO_NEW_PRIVS: done before
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.prlimit64, 0, 7));
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.prlimit64, 1234, 7)); // another process's limits
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.read));
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.renameat2));
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.seccomp, 1)); // SECCOMP_SET_MODE_FILTER: a thread narrows itself further
        Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.seccomp, 2)); // SECCOMP_GET_ACTION_AVAIL and the rest
        // clone for threads (glibc's flags), never for a namespace; clone3's flags cannot be read, so it gets ENOSYS.
        Assert.Equal(SeccompProgram.RetAllow, Eval(X64Syscalls.clone, 0x003D0F00));
        foreach (uint flag in new uint[] { 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000 })
            Assert.Equal(SeccompProgram.RetKillProcess, Eval(X64Syscalls.clone, 0x003D0F00 | flag));
        Assert.Equal(SeccompProgram.RetErrno | 38, Eval(X64Syscalls.clone3));
    }

    [Fact]
    public void Other_architectures_and_the_x32_abi_are_killed()
    {
        Assert.Equal(SeccompProgram.RetKillProcess, SeccompProgram.Evaluate(Kill, X64Syscalls.read, new ulong[6], arch: 0x40000003)); // i386
        Assert.Equal(SeccompProgram.RetKillProcess, Eval((int)SeccompProgram.X32SyscallBit | X64Syscalls.read));
    }

    [Fact]
    public void The_log_action_only_changes_what_happens_outside_the_list()
    {
        var log = VmmSyscallPolicy.Build(SeccompProgram.RetLog);
        Assert.Equal(SeccompProgram.RetLog, SeccompProgram.Evaluate(log, 59, new ulong[6]));
        Assert.Equal(SeccompProgram.RetAllow, SeccompProgram.Evaluate(log, X64Syscalls.futex, new ulong[6]));
    }

    [Fact]
    public void Rules_are_checked_when_the_program_is_built()
    {
        Assert.Throws<ArgumentException>(() => SeccompProgram.Build([], [new(16, 1, [1]), new(16, 2, [1])], SeccompProgram.RetLog));
        Assert.Throws<ArgumentException>(() => SeccompProgram.Build([], [new(16, 1, [.. Enumerable.Range(0, 200).Select(i => (uint)i)])], SeccompProgram.RetLog));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeccompProgram.Build([], [new(16, 6, [1])], SeccompProgram.RetLog));
        Assert.InRange(Kill.Length, 10, SeccompProgram.MaxInstructions);
    }

    [Fact]
    public void Exit_statuses_read_as_sentences()
    {
        Assert.Contains("SIGSYS", VmmExit.Describe(128 + 31));
        Assert.Contains("seccomp", VmmExit.Describe(128 + 31));
        Assert.Equal("killed by SIGKILL", VmmExit.Describe(137));
        Assert.Equal("exit status 1", VmmExit.Describe(1));
    }

    private const string Probe = """
        #define _GNU_SOURCE
        #include <linux/filter.h>
        #include <linux/seccomp.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/mman.h>
        #include <sys/prctl.h>
        #include <sys/socket.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        #include <fcntl.h>
        #include <errno.h>
        #include <pthread.h>
        #include <signal.h>
        static void *nothing(void *arg) { return arg; }
        /* probe FILTER... ACTION: installs each filter (struct sock_filter[] in FILTER) in turn, stacked as the VMM does, then does ACTION. */
        int main(int argc, char **argv)
        {
            static struct sock_filter insns[4096];
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("prctl"); return 2; }
            for (int i = 1; i < argc - 1; i++)
            {
                FILE *f = fopen(argv[i], "rb");
                size_t n = fread(insns, sizeof insns[0], 4096, f);
                fclose(f);
                struct sock_fprog prog = { .len = (unsigned short)n, .filter = insns };
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); return 2; }
            }
            argv[2] = argv[argc - 1];
            if (!strcmp(argv[2], "unix")) return socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? 0 : 3;
            if (!strcmp(argv[2], "inet")) { socket(AF_INET, SOCK_STREAM, 0); return 4; }
            if (!strcmp(argv[2], "mmap-rw")) return mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED ? 0 : 3;
            if (!strcmp(argv[2], "mmap-exec")) { mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); return 4; }
            if (!strcmp(argv[2], "execve")) { execl("/bin/true", "true", (char *)0); return 4; }
            if (!strcmp(argv[2], "open")) return openat(AT_FDCWD, "/dev/null", O_RDONLY) >= 0 ? 0 : 3;
            /* A user namespace (every capability over it, for anyone): clone with CLONE_NEWUSER. */
            if (!strcmp(argv[2], "clone-userns")) { syscall(SYS_clone, 0x10000000 | SIGCHLD, 0, 0, 0, 0); return 4; }
            /* clone3 must fail with ENOSYS (glibc then makes threads with clone), not kill. */
            if (!strcmp(argv[2], "clone3")) return syscall(435, (void *)0, (size_t)0) < 0 && errno == ENOSYS ? 0 : 3;
            /* A thread the way glibc makes one once clone3 is refused: allowed. */
            if (!strcmp(argv[2], "thread")) { pthread_t t; return pthread_create(&t, 0, nothing, 0) == 0 && pthread_join(t, 0) == 0 ? 0 : 3; }
            return 5;
        }
        """;

    [Theory]
    [InlineData(null, "unix", 0)]
    [InlineData(null, "mmap-rw", 0)]
    [InlineData(null, "open", 0)]
    [InlineData(null, "inet", 128 + 31)]
    [InlineData(null, "mmap-exec", 128 + 31)]
    [InlineData(null, "execve", 128 + 31)]
    [InlineData(null, "clone-userns", 128 + 31)]
    [InlineData(null, "clone3", 0)]
    [InlineData(null, "thread", 0)]
    [InlineData(VmmThreadClass.Vcpu, "thread", 0)]
    // Stacked as the VMM stacks them: the process's filter, then the thread's own.
    [InlineData(VmmThreadClass.Vcpu, "mmap-rw", 0)]
    [InlineData(VmmThreadClass.Vcpu, "unix", 128 + 31)]
    [InlineData(VmmThreadClass.Vcpu, "open", 128 + 31)]
    [InlineData(VmmThreadClass.Devices, "unix", 0)]
    [InlineData(VmmThreadClass.Devices, "inet", 128 + 31)]
    [InlineData(VmmThreadClass.NinePWorker, "open", 0)]
    [InlineData(VmmThreadClass.NinePWorker, "unix", 128 + 31)]
    [InlineData(VmmThreadClass.NinePWorker, "execve", 128 + 31)]
    public void The_kernel_takes_the_filters_and_kills_what_they_forbid(VmmThreadClass? threadClass, string action, int expected)
    {
        Assert.True(OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64);
        string dir = Directory.CreateTempSubdirectory("rkt-kvm-seccomp-").FullName;
        try
        {
            List<string> filters = [Path.Join(dir, "process.bpf")];
            File.WriteAllBytes(filters[0], MemoryMarshal.AsBytes(Kill.AsSpan()).ToArray());
            if (threadClass is { } c)
            {
                filters.Add(Path.Join(dir, "thread.bpf"));
                File.WriteAllBytes(filters[1], MemoryMarshal.AsBytes(ThreadSyscallPolicy.Build(c, SeccompProgram.RetKillProcess).AsSpan()).ToArray());
            }
            File.WriteAllText(Path.Join(dir, "probe.c"), Probe);
            Assert.Equal(0, Run("gcc", "-O2", "-pthread", "-o", Path.Join(dir, "probe"), Path.Join(dir, "probe.c")));
            Assert.Equal(expected, Run(Path.Join(dir, "probe"), [.. filters, action]));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static uint EvalClass(VmmThreadClass c, int nr, params ulong[] args) =>
        SeccompProgram.Evaluate(ThreadSyscallPolicy.Build(c, SeccompProgram.RetKillProcess), nr, [.. args, .. new ulong[6 - args.Length]]);

    [Fact]
    public void Each_thread_class_may_make_only_what_the_process_may()
    {
        foreach (var c in Enum.GetValues<VmmThreadClass>())
        {
            Assert.Empty(ThreadSyscallPolicy.Allowed(c).Except(VmmSyscallPolicy.Allowed));
            foreach (var rule in ThreadSyscallPolicy.Rules(c))
            {
                var processRule = VmmSyscallPolicy.Rules.Single(r => r.Syscall == rule.Syscall);
                Assert.Equal(processRule.Argument, rule.Argument);
                Assert.Empty(rule.Values.Except(processRule.Values));
            }
        }
    }

    [Fact]
    public void Every_thread_class_keeps_what_the_runtime_makes_on_any_thread()
    {
        // The GC allocates, suspends threads by signal and flushes write buffers on whatever thread allocates.
        int[] runtime = [X64Syscalls.futex, X64Syscalls.madvise, X64Syscalls.munmap, X64Syscalls.membarrier, X64Syscalls.tgkill,
            X64Syscalls.rt_sigreturn, X64Syscalls.rt_sigprocmask, X64Syscalls.clock_gettime, X64Syscalls.write, X64Syscalls.clone3, X64Syscalls.exit];
        foreach (var c in Enum.GetValues<VmmThreadClass>())
        {
            foreach (int nr in runtime) Assert.True(EvalClass(c, nr) == SeccompProgram.RetAllow, $"{c} may not make syscall {nr}");
            Assert.Equal(SeccompProgram.RetAllow, EvalClass(c, X64Syscalls.mmap, 0, 4096, ProtRead | ProtWrite));
            Assert.Equal(SeccompProgram.RetKillProcess, EvalClass(c, X64Syscalls.mmap, 0, 4096, ProtRead | ProtExec));
        }
    }

    [Fact]
    public void Each_thread_class_loses_what_it_does_not_do()
    {
        // vCPU threads: only the vCPU's own ioctls; no files by name, no sockets, no event loops.
        Assert.Equal(SeccompProgram.RetAllow, EvalClass(VmmThreadClass.Vcpu, X64Syscalls.ioctl, 5, KvmIoctl.Run));
        Assert.Equal(SeccompProgram.RetAllow, EvalClass(VmmThreadClass.Vcpu, X64Syscalls.ioctl, 5, KvmIoctl.SetRegs));
        Assert.Equal(SeccompProgram.RetKillProcess, EvalClass(VmmThreadClass.Vcpu, X64Syscalls.ioctl, 5, KvmIoctl.SetUserMemoryRegion));
        Assert.Equal(SeccompProgram.RetKillProcess, EvalClass(VmmThreadClass.Vcpu, X64Syscalls.ioctl, 5, KvmIoctl.Ioeventfd));
        foreach (int nr in new[] { X64Syscalls.openat, X64Syscalls.unlinkat, X64Syscalls.connect, X64Syscalls.sendmsg, X64Syscalls.accept4, X64Syscalls.epoll_ctl, X64Syscalls.ftruncate, X64Syscalls.capset, X64Syscalls.seccomp })
            Assert.True(EvalClass(VmmThreadClass.Vcpu, nr) == SeccompProgram.RetKillProcess, $"a vCPU thread may make syscall {nr}");
        Assert.Equal(SeccompProgram.RetKillProcess, EvalClass(VmmThreadClass.Vcpu, X64Syscalls.socket, AfUnix, 1));
        // The device thread: sockets, event loops and snapshots, but it changes no file by name.
        Assert.Equal(SeccompProgram.RetAllow, EvalClass(VmmThreadClass.Devices, X64Syscalls.socket, AfUnix, 1));
        Assert.Equal(SeccompProgram.RetKillProcess, EvalClass(VmmThreadClass.Devices, X64Syscalls.socket, AfInet, 1));
        Assert.Equal(SeccompProgram.RetAllow, EvalClass(VmmThreadClass.Devices, X64Syscalls.ioctl, 5, KvmIoctl.GetLapic));
        foreach (int nr in new[] { X64Syscalls.mkdirat, X64Syscalls.linkat, X64Syscalls.symlinkat, X64Syscalls.fchownat, X64Syscalls.fsetxattr, X64Syscalls.mknodat })
            Assert.True(EvalClass(VmmThreadClass.Devices, nr) == SeccompProgram.RetKillProcess, $"the device thread may make syscall {nr}");
        // 9p workers: files, but no sockets, no ioctls, no event loops.
        Assert.Equal(SeccompProgram.RetAllow, EvalClass(VmmThreadClass.NinePWorker, X64Syscalls.mkdirat));
        Assert.Equal(SeccompProgram.RetAllow, EvalClass(VmmThreadClass.NinePWorker, X64Syscalls.fchownat));
        foreach (int nr in new[] { X64Syscalls.socket, X64Syscalls.connect, X64Syscalls.sendmsg, X64Syscalls.epoll_wait, X64Syscalls.ioctl })
            Assert.True(EvalClass(VmmThreadClass.NinePWorker, nr) == SeccompProgram.RetKillProcess, $"a 9p worker may make syscall {nr}");
    }

    private static int Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode is not (0 or 128 + 31)) Console.Error.WriteLine($"{program}: {p.ExitCode} {error}");
        return p.ExitCode;
    }
}

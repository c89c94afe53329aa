using System.Diagnostics;
using Rkt.Kvm.Stage1.Runtime;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// Faults on real pod VMs: SIGKILL of stage1 <c>run</c> (while the agent boots, while the pod runs,
/// during stop) and of <c>rkt-kvm</c> itself. After each, the pod is either running and usable, or
/// exited and collectable; <c>list</c> and <c>gc</c> then bring the host back to exactly what it was
/// before (processes, runtime directories, mounts, pod directories), compared on the host itself.
/// Killing the VMM is <see cref="PodEndToEndTests.KilledVmm_ListShowsExited_AndGcLeavesNothing"/>.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PodFaultTests
{
    private const string Busybox = RktKvmCli.Busybox;
    private static readonly TimeSpan VmGoesWithin = TimeSpan.FromSeconds(15);

    [SkippableFact]
    public void KilledStage1Run_WhileTheAgentBoots_TakesItsVmAlong_AndTheFailedStartLeavesNothing()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli(sharedTemplates: false); // a cold boot: the pod makes its own template
        var before = cli.Snapshot();
        var (run, uuid) = cli.Start("run", Busybox, "--exec=/bin/sh", "--", "-c", "sleep 1000", "---");
        var vmm = WaitFor(() => PodRuntime.Processes(uuid).FirstOrDefault(p => p.Program == PodRuntime.VmmProgram), "the pod's VMM to start");
        Thread.Sleep(3000); // the guest kernel is booting (READY takes tens of seconds here)
        Assert.False(File.Exists(Path.Join(cli.PodDir(uuid), "pid")), "the agent was already ready: the kill is meant for its boot");
        KillStage1Run(uuid);

        AssertGone(vmm);
        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(1)), "rkt-kvm run did not end after its stage1 was killed");
        run.WaitForExit(); // and its output is all read
        Assert.Equal(137, run.ExitCode);
        Assert.Contains("did not start", cli.OutputOf(run));
        Assert.Equal(0, cli.Run("gc", "--grace-period=0s").ExitCode);
        HostSnapshot.AssertSame(before, cli.Snapshot());
    }

    [SkippableFact]
    public void KilledStage1Run_WhileItSnapshotsTheTemplate_TakesTheTemplateVmAlong_AndGcLeavesNoHalfTemplate()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli(sharedTemplates: false); // the pod makes the data directory's first template
        var before = cli.Snapshot();
        var (run, uuid) = cli.Start("run", Busybox, "--exec=/bin/true");
        var store = Path.Join(cli.DataDir, "stage1-kvm", "templates");
        // The VMM writes the snapshot into vm.snapshot.tmp-<stage1's pid> (VmmControlClient.Snapshot): kill the moment it appears.
        var temp = WaitFor(() => Directory.Exists(store) ? Directory.GetFiles(store, VmTemplateStore.SnapshotFileName + ".tmp-*", SearchOption.AllDirectories).FirstOrDefault() : null,
            "the template's snapshot to begin", TimeSpan.FromMinutes(5), TimeSpan.FromMilliseconds(2));
        var vmms = PodRuntime.Processes(uuid).Where(p => p.Program == PodRuntime.VmmProgram).ToList();
        KillStage1Run(uuid);
        var template = Path.GetDirectoryName(temp)!;
        Assert.False(File.Exists(Path.Join(template, VmTemplateStore.SpecFileName)), "the template was finished before the kill: the kill is meant for its snapshot");
        Assert.NotEmpty(vmms); // the template's VMM, writing the snapshot
        foreach (var vmm in vmms) AssertGone(vmm);
        AssertNoVmmLeft(uuid);

        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(1)), "rkt-kvm run did not end after its stage1 was killed");
        run.WaitForExit();
        Assert.Equal(137, run.ExitCode);
        Assert.Contains("did not start", cli.OutputOf(run));
        Assert.NotEmpty(cli.UnfinishedTemplates()); // what the kill left; gc must find it
        Assert.Equal(0, cli.Run("gc", "--grace-period=0s").ExitCode);
        HostSnapshot.AssertSame(before, cli.Snapshot());
        Assert.False(Directory.Exists(template), "gc left the half-made template");
    }

    [SkippableFact]
    public void KilledStage1Run_WhileItRestoresTheTemplate_TakesTheVmAlong_AndTheTemplateStaysUsable()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var before = cli.Snapshot();
        var (run, uuid) = cli.Start("run", Busybox, "--exec=/bin/true");
        // The run's shared store has the template, or this pod makes it first: either way a restoring VMM comes.
        var vmm = WaitFor(() => PodRuntime.Processes(uuid).FirstOrDefault(p => p.Program == PodRuntime.VmmProgram && RktKvmCli.Cmdline(p.Pid.ToString()).Contains("--restore")),
            "the pod's VMM to restore the template", TimeSpan.FromMinutes(5), TimeSpan.FromMilliseconds(2));
        Assert.False(File.Exists(Path.Join(cli.PodDir(uuid), "pid")), "the restored agent was already ready: the kill is meant for the restore");
        KillStage1Run(uuid);
        string snapshot = RktKvmCli.Cmdline(vmm.Pid.ToString()).Split(' ').SkipWhile(a => a != "--restore").Skip(1).FirstOrDefault() ?? "";
        AssertGone(vmm);
        AssertNoVmmLeft(uuid);

        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(1)), "rkt-kvm run did not end after its stage1 was killed");
        run.WaitForExit();
        Assert.Equal(137, run.ExitCode);
        Assert.Contains("did not start", cli.OutputOf(run));
        Assert.Equal(0, cli.Run("gc", "--grace-period=0s").ExitCode);
        HostSnapshot.AssertSame(before, cli.Snapshot());
        // A restore only reads the template: it is still whole for the next pod.
        Assert.True(File.Exists(snapshot), $"the template's snapshot {snapshot} went with the killed restore");
        Assert.True(File.Exists(Path.Join(Path.GetDirectoryName(snapshot)!, VmTemplateStore.SpecFileName)));
    }

    [SkippableFact]
    public void KilledStage1Run_WhileThePodRuns_TakesItsVmAlong_ListShowsExited_GcLeavesNothing()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var before = cli.Snapshot();
        var (run, uuid) = cli.Start("run", Busybox, "--exec=/bin/sh", "--", "-c", "echo up; sleep 1000", "---");
        cli.WaitReady(uuid);
        var vmm = PodRuntime.Processes(uuid).Single(p => p.Program == PodRuntime.VmmProgram);
        // The running VMM is locked down (docs/THREAT-MODEL.md): its seccomp filter, no new privileges.
        string status = File.ReadAllText($"/proc/{vmm.Pid}/status");
        Assert.Contains("Seccomp:\t2\n", status);
        Assert.Contains("NoNewPrivs:\t1\n", status);
        AssertJailed(vmm.Pid, uuid);
        // The VMM was born in the pod's cgroup in every hierarchy; where v1 memory is mounted (this
        // host, beside the unified one), with a limit sized from the VM (256 MiB + 512 MiB).
        var cgroups = File.ReadAllLines($"/proc/{vmm.Pid}/cgroup").Where(l => l.EndsWith("/rkt-kvm-" + uuid)).ToList();
        Assert.Contains(cgroups, l => l.StartsWith("0::", StringComparison.Ordinal));
        string memoryDir = "/sys/fs/cgroup/unified" + cgroups.First(l => l.StartsWith("0::", StringComparison.Ordinal))[3..];
        if (Directory.Exists("/sys/fs/cgroup/memory"))
        {
            var memory = Assert.Single(cgroups, l => l.Split(':')[1].Split(',').Contains("memory"));
            Assert.Contains(cgroups, l => l.Split(':')[1].Split(',').Contains("pids"));
            memoryDir = "/sys/fs/cgroup/memory" + memory.Split(':')[2];
            Assert.Equal((256UL + 512) << 20, ulong.Parse(File.ReadAllText(memoryDir + "/memory.limit_in_bytes")));
        }
        KillStage1Run(uuid);

        AssertGone(vmm);
        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(1)), "rkt-kvm run did not end after its stage1 was killed");
        Assert.Equal("exited", cli.Status(uuid)["state"]);
        Assert.Contains("exited", cli.Run("list", "--no-legend").Stdout);
        Assert.Equal(0, cli.Run("gc", "--grace-period=0s").ExitCode);
        HostSnapshot.AssertSame(before, cli.Snapshot());
        Assert.False(Directory.Exists(memoryDir), "gc left the pod's cgroup");
    }

    [SkippableFact]
    public void KilledStage1Run_DuringStop_TakesItsVmAlong_AndGcLeavesNothing()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var before = cli.Snapshot();
        var (sandbox, uuid) = cli.Start("app", "sandbox");
        cli.WaitReady(uuid);
        Assert.Equal(0, cli.Run("app", "add", uuid, Busybox, "--name=a", "--exec=/bin/sh", "--", "-c", "trap '' TERM; while true; do sleep 1; done", "---").ExitCode);
        Assert.Equal(0, cli.Run("app", "start", uuid, "--app=a").ExitCode);
        var vmm = PodRuntime.Processes(uuid).Single(p => p.Program == PodRuntime.VmmProgram);
        Assert.Equal(0, cli.Run("stop", uuid).ExitCode); // the app ignores SIGTERM: stop takes its grace period
        Thread.Sleep(500);
        KillStage1Run(uuid);

        AssertGone(vmm);
        Assert.True(sandbox.WaitForExit(TimeSpan.FromMinutes(1)), "rkt-kvm app sandbox did not end after its stage1 was killed");
        Assert.Equal("exited", cli.Status(uuid)["state"]);
        Assert.Equal(0, cli.Run("rm", uuid).ExitCode);
        Assert.Equal(0, cli.Run("gc", "--grace-period=0s").ExitCode);
        HostSnapshot.AssertSame(before, cli.Snapshot());
    }

    /// <summary>
    /// stage1 run keeps root for the cgroup, the network and the VM, and hands everything that
    /// talks to the guest's agent to its supervisor: the pod's own unprivileged user (not the
    /// VMM's), no capabilities in any set, no_new_privs, a seccomp filter, not dumpable. The pod
    /// still runs, logs and reports through it. Killed, the supervisor takes the pod down with it:
    /// run kills the VM and tears down, and gc leaves nothing.
    /// </summary>
    [SkippableFact]
    public void Stage1Run_TalksToTheGuestOnlyThroughAnUnprivilegedSupervisor_AndAKilledSupervisorEndsThePodCleanly()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var before = cli.Snapshot();
        // An fd the caller left open without close-on-exec (as a shell or systemd may): run keeps it, its helpers must not get it.
        string stray = Path.Join(cli.Root, "stray-fd");
        File.WriteAllText(stray, "");
        (Process Process, string Uuid) started;
        using (var strayHandle = File.OpenHandle(stray))
        {
            Assert.Equal(0, Tmds.Linux.LibC.fcntl((int)strayHandle.DangerousGetHandle(), Tmds.Linux.LibC.F_SETFD, 0)); // inheritable
            started = cli.Start("run", Busybox, "--exec=/bin/sh", "--", "-c", "echo up; sleep 1000", "---");
        }
        var (run, uuid) = started;
        cli.WaitReady(uuid);
        WaitFor(() => cli.OutputOf(run).Contains("up\n") ? "" : null, "the app's output through the supervisor");

        var keeper = Stage1(uuid, "run");
        var supervisor = Stage1(uuid, "supervise");
        Assert.Contains("Uid:\t0\t0\t0\t0\n", File.ReadAllText($"/proc/{keeper.Pid}/status"));
        Assert.Contains($"PPid:\t{keeper.Pid}\n", File.ReadAllText($"/proc/{supervisor.Pid}/status"));
        var user = PodSupervisorUser.For(uuid);
        Assert.NotEqual(PodVmmUser.For(uuid).Uid, user.Uid);
        foreach (var task in Directory.GetDirectories($"/proc/{supervisor.Pid}/task"))
        {
            string status = File.ReadAllText(task + "/status");
            Assert.Contains($"Uid:\t{user.Uid}\t{user.Uid}\t{user.Uid}\t{user.Uid}\n", status);
            Assert.Contains($"Gid:\t{user.Gid}\t{user.Gid}\t{user.Gid}\t{user.Gid}\n", status);
            Assert.Matches(@"\nGroups:\t *\n", status);
            foreach (var set in new[] { "CapInh", "CapPrm", "CapEff", "CapAmb" })
                Assert.True(status.Contains($"{set}:\t0000000000000000\n"), $"{set} is not empty on {task}:\n{status}");
            // The bounding set is per thread: the runtime's threads born before the drop keep theirs.
            // Nothing can use it: it matters only to execve, which no_new_privs and the filter take away.
            if (Path.GetFileName(task) == supervisor.Pid.ToString()) Assert.Contains("CapBnd:\t0000000000000000\n", status);
            Assert.Contains("NoNewPrivs:\t1\n", status);
            Assert.Contains("Seccomp:\t2\n", status);
        }
        // Not dumpable: /proc/<pid>/ files of a non-dumpable process belong to root, not to its user.
        Assert.Equal(0, (int)OwnerOf($"/proc/{supervisor.Pid}/environ"));
        // It holds nothing of run's: no /dev/kvm, no lock, no pod file; its writes are the app logs, in a directory of its own.
        var fds = Directory.GetFileSystemEntries($"/proc/{supervisor.Pid}/fd").Select(f => new FileInfo(f).LinkTarget ?? "").ToList();
        Assert.DoesNotContain(fds, f => f.StartsWith("/dev/kvm", StringComparison.Ordinal) || f == cli.PodDir(uuid) || f.EndsWith("/pod", StringComparison.Ordinal)
            || f.Contains("/stage1/rootfs/rkt/", StringComparison.Ordinal) || f.Contains("control.sock", StringComparison.Ordinal));
        Assert.Contains(stray, FdTargets(keeper.Pid)); // inherited through stage0: run still has it
        var vmmProcess = PodRuntime.Processes(uuid).Single(p => p.Program == PodRuntime.VmmProgram);
        Assert.DoesNotContain(stray, fds);
        Assert.DoesNotContain(stray, FdTargets(vmmProcess.Pid));
        // A network namespace of its own: no abstract Unix socket of the host's, no network; the agent is a path away.
        Assert.NotEqual(new FileInfo("/proc/self/ns/net").LinkTarget, new FileInfo($"/proc/{supervisor.Pid}/ns/net").LinkTarget);
        string logs = Path.Join(cli.PodDir(uuid), "stage1-kvm", "logs");
        Assert.Equal((int)user.Uid, (int)OwnerOf(logs));
        Assert.Contains("up\n", File.ReadAllText(Directory.GetFiles(logs, "*.log").Single()));
        Assert.Equal("ready", new FileInfo(Path.Join(cli.PodDir(uuid), "stage1", "rootfs", "rkt", "supervisor-status")).LinkTarget); // run's, from the supervisor's report

        var vmm = PodRuntime.Processes(uuid).Single(p => p.Program == PodRuntime.VmmProgram);
        Process.GetProcessById(supervisor.Pid).Kill();
        AssertGone(vmm);
        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(1)), "rkt-kvm run did not end after the pod's supervisor was killed");
        run.WaitForExit();
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("ended without the pod's result (killed by signal 9)", cli.OutputOf(run));
        Assert.Equal("exited", cli.Status(uuid)["state"]);
        Assert.Equal(0, cli.Run("gc", "--grace-period=0s").ExitCode);
        HostSnapshot.AssertSame(before, cli.Snapshot());
    }

    [SkippableFact]
    public void KilledRktKvm_WhileThePodRuns_LeavesThePodRunningAndUsable_ThenStopAndRmLeaveNothing()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var before = cli.Snapshot();
        var (run, uuid) = cli.Start("run", Busybox, "--exec=/bin/sh", "--", "-c", "echo up; while true; do echo tick; sleep 1; done", "---");
        cli.WaitReady(uuid);
        run.Kill(); // rkt-kvm only: rkt would have exec'd stage1, so stage1 is what runs the pod
        Assert.True(run.WaitForExit(TimeSpan.FromSeconds(30)));
        Thread.Sleep(3000); // the app goes on printing; its stage1, re-parented, goes on serving it

        Assert.Equal("running", cli.Status(uuid)["state"]);
        var entered = cli.Run("enter", uuid, "/bin/sh", "-c", "echo still here");
        Assert.True(entered.ExitCode == 0, entered.Stderr);
        Assert.Equal("still here\n", entered.Stdout);
        Assert.Equal(0, cli.Run("stop", uuid).ExitCode);
        WaitFor(() => cli.Status(uuid)["state"] == "exited" ? "" : null, "the pod to exit after stop");
        Assert.Equal(0, cli.Run("rm", uuid).ExitCode);
        HostSnapshot.AssertSame(before, cli.Snapshot());
    }

    private static void KillStage1Run(string uuid) => Process.GetProcessById(Stage1(uuid, "run").Pid).Kill();

    /// <summary>The pod's stage1 process running <paramref name="entrypoint"/> (run, or the supervisor run starts).</summary>
    private static PodProcess Stage1(string uuid, string entrypoint) =>
        PodRuntime.Processes(uuid).Single(p => p.Program == PodRuntime.Stage1Program && RktKvmCli.Cmdline(p.Pid.ToString()).Split(' ').ElementAtOrDefault(1) == entrypoint);

    private static unsafe uint OwnerOf(string path)
    {
        Tmds.Linux.stat st;
        fixed (byte* p = System.Text.Encoding.UTF8.GetBytes(path + "\0"))
            if (Tmds.Linux.LibC.lstat(p, &st) != 0) throw new IOException($"lstat {path}: errno {Tmds.Linux.LibC.errno}");
        return (uint)st.st_uid;
    }

    private static void AssertGone(PodProcess vmm)
    {
        var deadline = DateTime.UtcNow + VmGoesWithin;
        while (Directory.Exists($"/proc/{vmm.Pid}") && !IsZombie(vmm.Pid))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the VMM (pid {vmm.Pid}) outlived its stage1 by more than {VmGoesWithin.TotalSeconds} s");
            Thread.Sleep(50);
        }
    }

    private static bool IsZombie(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/stat").Split(')').Last().TrimStart().StartsWith('Z'); }
        catch (IOException) { return false; }
    }

    private static T WaitFor<T>(Func<T?> probe, string what, TimeSpan? timeout = null, TimeSpan? poll = null) where T : class
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromMinutes(3));
        while (true)
        {
            if (probe() is { } value) return value;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for {what}");
            Thread.Sleep(poll ?? TimeSpan.FromMilliseconds(50));
        }
    }

    /// <summary>Every VMM of the pod (the template's and the pod's own) is gone within <see cref="VmGoesWithin"/>.</summary>
    private static void AssertNoVmmLeft(string uuid)
    {
        foreach (var vmm in PodRuntime.Processes(uuid).Where(p => p.Program == PodRuntime.VmmProgram)) AssertGone(vmm);
    }

    /// <summary>
    /// The jail (docs/THREAT-MODEL.md): the VMM's own mount, UTS, IPC and network namespaces; a root
    /// that holds only its socket directory and its fd table; no capabilities on the threads that
    /// parse guest input, and only file passthrough's on the 9p workers. The pod still reached its
    /// app's root over 9p and its network over a tap.
    /// </summary>
    private static List<string> FdTargets(int pid) =>
        [.. Directory.GetFileSystemEntries($"/proc/{pid}/fd").Select(f => { try { return new FileInfo(f).LinkTarget ?? ""; } catch (IOException) { return ""; } })];

    private static void AssertJailed(int pid, string uuid)
    {
        foreach (var ns in new[] { "mnt", "uts", "ipc", "net", "pid" })
            Assert.NotEqual(new FileInfo($"/proc/self/ns/{ns}").LinkTarget, new FileInfo($"/proc/{pid}/ns/{ns}").LinkTarget);
        // PID 1 of that PID namespace: no host process has a pid there (stage1 spawned it into it; VmmProcess).
        Assert.Contains($"\nNSpid:\t{pid}\t1\n", File.ReadAllText($"/proc/{pid}/status"));
        string root = $"/proc/{pid}/root";
        var vsockDir = Path.GetDirectoryName(Rkt.Kvm.Vmm.Client.VmmCommandLine.FindVsock(File.ReadAllText($"/proc/{pid}/cmdline").Split('\0')))!;
        var top = Directory.GetFileSystemEntries(root).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(new[] { "proc", vsockDir.Split('/')[1] }.Order(), top);
        Assert.Equal(["fd"], Directory.GetFileSystemEntries(root + "/proc/self").Select(Path.GetFileName));
        Assert.False(File.Exists(root + "/etc/passwd"));
        Assert.True(File.Exists(root + vsockDir + "/vm.sock"), "the VMM's socket directory is in its root");
        // Not root: the pod's own unprivileged user and group (PodVmmUser), no supplementary groups, on every thread.
        var user = PodVmmUser.For(uuid);
        var threads = Directory.GetDirectories($"/proc/{pid}/task").Select(t => (Name: File.ReadAllText(t + "/comm").Trim(), Status: File.ReadAllText(t + "/status"))).ToList();
        foreach (var t in threads)
        {
            Assert.Contains($"Uid:\t{user.Uid}\t{user.Uid}\t{user.Uid}\t{user.Uid}\n", t.Status);
            Assert.Contains($"Gid:\t{user.Gid}\t{user.Gid}\t{user.Gid}\t{user.Gid}\n", t.Status);
            Assert.Matches(@"\nGroups:\t *\n", t.Status); // the kernel ends the list with a space, even an empty one
        }
        // The drop emptied every thread's capabilities, the .NET runtime's own included; only the 9p workers kept theirs (below).
        foreach (var t in threads.Where(t => t.Name != "9p-worker"))
            Assert.True(t.Status.Contains("CapEff:\t0000000000000000\n") && t.Status.Contains("CapPrm:\t0000000000000000\n"), $"thread {t.Name} kept capabilities:\n{t.Status}");
        var guestFacing = threads.Where(t => t.Name is "vcpu" or "devices").ToList();
        Assert.Contains(guestFacing, t => t.Name == "vcpu");
        Assert.Contains(guestFacing, t => t.Name == "devices");
        foreach (var t in guestFacing)
        {
            Assert.Contains("CapEff:\t0000000000000000\n", t.Status);
            Assert.Contains("CapPrm:\t0000000000000000\n", t.Status);
        }
        // The 9p workers keep only what owner and mode passthrough needs: CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID.
        var workers = threads.Where(t => t.Name == "9p-worker").ToList();
        Assert.NotEmpty(workers);
        foreach (var t in workers)
        {
            Assert.Contains("CapEff:\t000000000000001f\n", t.Status);
            Assert.Contains("CapPrm:\t000000000000001f\n", t.Status);
        }
        // Every thread has the process's seccomp filter; those that handle guest input (vCPU, device
        // loop, 9p workers) have their class's own on top of it (ThreadSyscallPolicy), the others none.
        // (KVM's own workers in the process, such as kvm-nx-lpage-recovery, are forked by the kernel
        // from the vCPU thread that first ran, filters and all, and never run our code.)
        foreach (var t in threads)
        {
            Assert.Contains("Seccomp:\t2\n", t.Status);
            if (t.Name.StartsWith("kvm-", StringComparison.Ordinal)) continue;
            int expected = t.Name is "vcpu" or "devices" or "9p-worker" ? 2 : 1;
            Assert.True(t.Status.Contains($"Seccomp_filters:\t{expected}\n"), $"thread {t.Name} should have {expected} seccomp filters:\n{t.Status}");
        }
        var files = System.Text.RegularExpressions.Regex.Match(File.ReadAllText($"/proc/{pid}/limits"), @"Max open files\s+(\d+)\s+(\d+)");
        Assert.Equal(files.Groups[1].Value, files.Groups[2].Value);
        Assert.InRange(ulong.Parse(files.Groups[2].Value), 1024UL, 20480UL); // LockDown.MaxOpenFiles
        var tasks = System.Text.RegularExpressions.Regex.Match(File.ReadAllText($"/proc/{pid}/limits"), @"Max processes\s+(\d+)\s+(\d+)");
        Assert.Equal(tasks.Groups[1].Value, tasks.Groups[2].Value);
        Assert.InRange(ulong.Parse(tasks.Groups[2].Value), 64UL, 1024UL); // LockDown.MaxTasks, or the host's hard limit if lower
    }
}

using Rkt.Kvm.Images.Builders;
using Rkt.Kvm.Images.Tests.Support;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>
/// rkt-kvm as stage0, against a stage1 that records how it is called (<see cref="LoggingStage1"/>):
/// argv, cwd, environment and lock as STAGE1-ABI.md says rkt passes them, the pod's phase
/// directories, and what list/status/rm/gc make of the files stage1 writes. No VM here: the real
/// stage1 has its own end-to-end tests.
/// </summary>
public sealed class Stage0ConformanceTests : IDisposable
{
    private readonly string _tmp = Directory.CreateTempSubdirectory("rkt-kvm-stage0-").FullName;
    private readonly string _data;
    private readonly Dictionary<string, string> _env;

    public Stage0ConformanceTests()
    {
        _data = Path.Join(_tmp, "data");
        var stage1 = LoggingStage1.Build(_tmp, Path.Join(_tmp, "stage1.aci"));
        _env = new() { ["RKT_KVM_STAGE1"] = stage1 };
        var rootfs = Path.Join(_tmp, "busybox-rootfs");
        BusyboxRootfs.Build(rootfs);
        var image = Path.Join(_tmp, "busybox.aci");
        AciWriter.Write(image, AciWriter.Manifest("example.com/busybox", ["/bin/sh", "-c", "echo hi"]), rootfs);
        Assert.Equal(0, Cli("image", "import", image).ExitCode);
    }

    public void Dispose()
    {
        foreach (var pid in Directory.EnumerateFiles(_data, "pid", SearchOption.AllDirectories))
            if (int.TryParse(File.ReadAllText(pid).Trim(), out var p)) try { System.Diagnostics.Process.GetProcessById(p).Kill(); } catch (ArgumentException) { }
        // Never delete through a mount a failed test left: it would reach into the tree store.
        if (PodMounts.UnmountAllUnder(_tmp)) Directory.Delete(_tmp, recursive: true);
    }

    /// <summary>Overlay mounts need root (as in rkt); without it stage0 says so and lays the pod out by copy.</summary>
    private static bool IsRoot => Environment.UserName == "root";

    private List<string> MountsUnderData() => [.. PodMounts.MountsUnder(_data)];

    private (int ExitCode, string Stdout, string Stderr) Cli(params string[] args) => RktKvm.Run(_data, _env, args);

    private string OnlyPod(string phase) => Assert.Single(Directory.GetDirectories(Path.Join(_data, "pods", phase)));

    private static string[] Values(string[] lines, string key) => lines.Where(l => l.StartsWith(key + "=", StringComparison.Ordinal)).Select(l => l[(key.Length + 1)..]).ToArray();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Run_StartsStage1RunInThePodDir_WithTheLockAndTheAppsPrepared(bool overlay)
    {
        var env = new Dictionary<string, string>(_env) { ["STAGE1_TEST_RUN_EXIT"] = "3" };
        var uuidFile = Path.Join(_tmp, "uuid");
        var (rc, _, err) = RktKvm.Run(_data, env, ["run", "example.com/busybox", "--exec=/bin/true", "--", "a", "b c", "---",
            "example.com/busybox", "--name=second", "--environment=ONLY=second", "--set-env=POD=wide", "--hostname=h1", "--uuid-file-save=" + uuidFile,
            .. overlay ? Array.Empty<string>() : ["--no-overlay"]]);
        Assert.True(rc == 3, err); // the pod's result is stage1 run's exit status
        var pod = OnlyPod("run");
        var uuid = File.ReadAllText(uuidFile);
        Assert.Equal(uuid, Path.GetFileName(pod));

        var (name, lines) = Assert.Single(LoggingStage1.Calls(pod));
        Assert.Equal("run", name);
        Assert.Equal(["--net=default", "--local-config=/etc/rkt", "--hostname=h1", uuid], Values(lines, "arg"));
        Assert.Equal(pod, Values(lines, "cwd").Single());
        Assert.Equal(pod, Values(lines, "lockfd").Single()); // RKT_LOCK_FD: an fd on the pod directory itself
        Assert.Contains(Values(lines, "env"), e => e.StartsWith("PATH=", StringComparison.Ordinal)); // the environment is inherited

        var manifest = Manifests.PodManifest.Load(Path.Join(pod, "pod"));
        Assert.False(manifest.Mutable);
        Assert.Equal(["busybox", "second"], manifest.Apps.Select(a => a.Name));
        Assert.Equal(["/bin/true", "a", "b c"], manifest.Apps[0].App!.Exec);
        Assert.Equal(["/bin/sh", "-c", "echo hi"], manifest.Apps[1].App!.Exec);
        Assert.Contains(new KeyValuePair<string, string>("POD", "wide"), manifest.Apps[0].App!.Environment);
        Assert.Contains(new KeyValuePair<string, string>("ONLY", "second"), manifest.Apps[1].App!.Environment);
        Assert.DoesNotContain(manifest.Apps[0].App!.Environment, e => e.Key == "ONLY");
        Assert.True(File.Exists(Path.Join(pod, "stage1/rootfs/opt/stage2/second/rootfs/bin/busybox")));
        Assert.True(File.Exists(Path.Join(pod, "appsinfo/second/manifest")));
        Assert.StartsWith("sha512-", File.ReadAllText(Path.Join(pod, "appsinfo/second/treeStoreID")));
        Assert.StartsWith("sha512-", File.ReadAllText(Path.Join(pod, "stage1TreeStoreID")));
        Assert.True(File.Exists(Path.Join(pod, "stage1/rootfs/opt/stage2/second/rootfs/etc/mtab")) || !Directory.Exists(Path.Join(pod, "stage1/rootfs/opt/stage2/second/rootfs/etc")));
        if (overlay && IsRoot)
        {
            // rkt's layout: the stage1 and each app are overlays on the tree store, written only in the pod's upper dirs.
            Assert.True(File.Exists(Path.Join(pod, "overlay-prepared")));
            Assert.Equal([Path.Join(pod, "stage1/rootfs"), Path.Join(pod, "stage1/rootfs/opt/stage2/busybox/rootfs"), Path.Join(pod, "stage1/rootfs/opt/stage2/second/rootfs")],
                MountsUnderData().Order(StringComparer.Ordinal));
            var stage1Tree = File.ReadAllText(Path.Join(pod, "stage1TreeStoreID"));
            Assert.True(File.Exists(Path.Join(pod, "overlay", stage1Tree, "upper/rkt/status/busybox")), "stage1's writes did not land in its upper dir");
            Assert.False(Directory.Exists(Path.Join(_data, "tree", stage1Tree, "rootfs/rkt/status/busybox")), "stage1's writes reached the tree store");
            Assert.True(File.Exists(Path.Join(pod, "stage1/rootfs/opt/stage2/second/manifest")));
        }
        else
        {
            Assert.False(File.Exists(Path.Join(pod, "overlay-prepared")));
            Assert.Empty(MountsUnderData());
            if (overlay) Assert.Contains("disabling overlay support", err);
        }

        // Exited: list and status read the status files stage1 wrote.
        Assert.False(PodLock.IsHeld(pod));
        var list = Cli("list", "--no-legend").Stdout;
        Assert.Contains(uuid[..8], list);
        Assert.Contains("exited", list);
        var status = Cli("status", uuid[..8]).Stdout.Split('\n');
        Assert.Contains("state=exited", status);
        Assert.Contains("exited=true", status);
        Assert.Contains("app-busybox=3", status);
        Assert.Contains("app-second=3", status);

        // rm: stage1 gc with cwd = the pod under garbage/, then the directory is gone.
        var calls = Path.Join(_tmp, "calls-after-rm");
        var rm = Cli("rm", uuid);
        Assert.Equal(0, rm.ExitCode);
        Assert.Equal($"\"{uuid}\"", rm.Stdout.Trim());
        Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods", "run")));
        Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods", "garbage")));
        Assert.Empty(MountsUnderData());
    }

    [Fact]
    public void Run_WithOverlay_NeedsRktStatusInTheStage1Image_AsRktDoes()
    {
        if (!IsRoot) return; // overlay is root's; without it the directory is never touched
        var bare = new Dictionary<string, string> { ["RKT_KVM_STAGE1"] = LoggingStage1.Build(_tmp, Path.Join(_tmp, "bare-stage1.aci"), withStatusDirs: false) };
        var (rc, _, err) = RktKvm.Run(_data, bare, "run", "example.com/busybox");
        Assert.Equal(254, rc);
        Assert.Contains("error setting up stage1", err);
        Assert.Contains("rkt/status", err);
        foreach (var phase in new[] { "embryo", "prepare", "prepared", "run" })
            Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods", phase)));
        Assert.Empty(MountsUnderData());
        // Without overlay stage0 never looks for it.
        Assert.Equal(0, RktKvm.Run(_data, bare, "run", "--no-overlay", "example.com/busybox").ExitCode);
    }

    [Fact]
    public void Stage1Flags_NameTheImageAsRktDoes_AndAreMutuallyExclusive()
    {
        var aci = _env["RKT_KVM_STAGE1"];
        var noEnv = new Dictionary<string, string> { ["RKT_KVM_STAGE1"] = "" };
        string? stage1Id = null;
        string StageOneOf(string flag)
        {
            var uuidFile = Path.Join(_tmp, "uuid-" + Guid.NewGuid());
            var r = RktKvm.Run(_data, noEnv, "run", "example.com/busybox", flag, "--uuid-file-save=" + uuidFile);
            Assert.True(r.ExitCode == 0, $"{flag}: {r.Stderr}");
            return File.ReadAllText(Path.Join(_data, "pods", "run", File.ReadAllText(uuidFile), "stage1TreeStoreID"));
        }
        stage1Id = StageOneOf($"--stage1-path={Path.GetRelativePath(Environment.CurrentDirectory, aci)}");
        foreach (var flag in new[] { $"--stage1-url=file://{aci}", $"--stage1-hash={stage1Id[..20]}", "--stage1-name=example.com/logging-stage1", $"--stage1-name={aci}" })
            Assert.Equal(stage1Id, StageOneOf(flag));
        foreach (var (args, message) in new[]
        {
            (new[] { $"--stage1-path={aci}", "--stage1-name=x" }, "flags --stage1-name and --stage1-path are mutually exclusive"),
            ([$"--stage1-path={aci}", $"--stage1-path={aci}"], "--stage1-path already used"),
            (["--stage1-url=https://example.com/stage1.aci"], "not supported yet"),
            (["--stage1-name=example.com/no-such-stage1:1.0"], "no image"),
            (["--stage1-from-dir=../escape.aci"], "give a file name"),
        })
        {
            var r = RktKvm.Run(_data, noEnv, ["run", "example.com/busybox", .. args]);
            Assert.True(r.ExitCode == 254, $"{string.Join(' ', args)}: {r.Stderr}");
            Assert.Contains(message, r.Stderr);
        }
    }

    [Fact]
    public void Gc_SweepsRuntimeDirsAndVmmsNoPodCanReach_AndNothingElse()
    {
        var runtime = Directory.CreateDirectory(Path.Join(_tmp, "run")).FullName;
        var env = new Dictionary<string, string>(_env) { ["RKT_KVM_RUNTIME_DIR"] = runtime };
        // A stand-in VMM: an executable named rkt-kvm-vmm (bash blocked in `read`) with a VMM's --vsock argument.
        var fakeVmm = Path.Join(Directory.CreateDirectory(Path.Join(_tmp, "bin")).FullName, "rkt-kvm-vmm");
        File.Copy("/bin/bash", fakeVmm);
        System.Diagnostics.Process StartVmm(string uuid)
        {
            var psi = new System.Diagnostics.ProcessStartInfo(fakeVmm) { RedirectStandardInput = true };
            foreach (var a in new[] { "-c", "read x", "--vsock", Path.Join(runtime, uuid, "vm.sock") }) psi.ArgumentList.Add(a);
            return System.Diagnostics.Process.Start(psi)!;
        }
        string RuntimeDir(string uuid, string podsRoot)
        {
            var dir = Directory.CreateDirectory(Path.Join(runtime, uuid)).FullName;
            File.WriteAllText(Path.Join(dir, "pods-root"), podsRoot + "\n");
            return dir;
        }
        string orphan = Guid.NewGuid().ToString(), foreign = Guid.NewGuid().ToString(), unreachable = Guid.NewGuid().ToString(), live = Guid.NewGuid().ToString();
        var podsRoot = Path.Join(_data, "pods");
        RuntimeDir(orphan, podsRoot);
        RuntimeDir(foreign, Path.Join(_tmp, "another-data-dir", "pods"));
        RuntimeDir(live, podsRoot);
        Directory.CreateDirectory(Path.Join(podsRoot, "prepared", live)); // gc leaves a fresh prepared pod alone
        var vmms = new[] { orphan, foreign, unreachable, live }.ToDictionary(u => u, StartVmm);
        // Where cgroups can be made (root): the orphan's and the unreachable VMM's pod cgroups, each
        // holding a process that names no pod (a CNI plugin, say): found by its cgroup alone.
        bool withCgroups = Environment.UserName == "root" && Directory.Exists("/sys/fs/cgroup");
        var cgroups = new List<Runtime.PodCgroup>();
        var strays = new List<System.Diagnostics.Process>();
        if (withCgroups)
        {
            foreach (var (uuid, record) in new[] { (orphan, Path.Join(runtime, orphan, Runtime.PodCgroup.RecordFileName)), (unreachable, Path.Join(_tmp, "unreachable-cgroups")) })
            {
                var cgroup = Runtime.PodCgroup.Create(uuid, 64, record);
                cgroups.Add(cgroup);
                var stray = System.Diagnostics.Process.Start("sleep", "600");
                strays.Add(stray);
                cgroup.Join(stray.Id);
                if (uuid == unreachable) cgroup.Join(vmms[unreachable].Id);
                Assert.Contains(stray.Id, Runtime.PodRuntime.Processes(uuid).Select(p => p.Pid));
            }
        }
        try
        {
            var gc = RktKvm.Run(_data, env, "gc", "--grace-period=0s");
            Assert.True(gc.ExitCode == 0, gc.Stderr);
            Assert.True(vmms[orphan].WaitForExit(10_000), "the VMM of a pod that no longer exists was left running");
            Assert.True(vmms[unreachable].WaitForExit(10_000), "a VMM whose runtime directory is gone was left running");
            Assert.False(Directory.Exists(Path.Join(runtime, orphan)));
            Assert.False(vmms[foreign].HasExited, "gc killed the VMM of another data directory's pod");
            Assert.False(vmms[live].HasExited, "gc killed the VMM of a pod that exists");
            Assert.True(Directory.Exists(Path.Join(runtime, foreign)) && Directory.Exists(Path.Join(runtime, live)));
            Assert.Contains($"Removed the runtime directory {Path.Join(runtime, orphan)}", gc.Stdout);
            foreach (var stray in strays) Assert.True(stray.WaitForExit(10_000), "gc left a process in the pod cgroup of a pod that no longer exists");
            foreach (var (_, dir) in cgroups.SelectMany(c => c.Directories)) Assert.False(Directory.Exists(dir), $"gc left the pod cgroup {dir}");
        }
        finally
        {
            foreach (var vmm in vmms.Values) { if (!vmm.HasExited) vmm.Kill(); vmm.Dispose(); }
            foreach (var stray in strays) { if (!stray.HasExited) stray.Kill(); stray.WaitForExit(); stray.Dispose(); }
            foreach (var (_, dir) in cgroups.SelectMany(c => c.Directories)) try { if (Directory.Exists(dir)) Directory.Delete(dir); } catch (IOException) { }
            Directory.Delete(Path.Join(podsRoot, "prepared", live));
        }
    }

    [Fact]
    public void ImageRm_KeepsTheTreesPodsAreLayeredOn()
    {
        var uuidFile = Path.Join(_tmp, "uuid");
        Assert.Equal(0, RktKvm.Run(_data, _env, "run", "example.com/busybox", "--uuid-file-save=" + uuidFile).ExitCode);
        var pod = Path.Join(_data, "pods", "run", File.ReadAllText(uuidFile));
        var tree = Path.Join(_data, "tree", File.ReadAllText(Path.Join(pod, "appsinfo/busybox/treeStoreID")));
        Assert.Equal(0, Cli("image", "rm", "example.com/busybox").ExitCode);
        Assert.True(Directory.Exists(tree), "image rm removed a tree a pod is layered on");
        Assert.Equal(0, Cli("image", "gc", "--grace-period=0s").ExitCode);
        Assert.True(Directory.Exists(tree), "image gc removed a tree a pod is layered on");
        Assert.Equal(0, Cli("rm", File.ReadAllText(uuidFile)).ExitCode);
        Assert.Equal(0, Cli("image", "gc", "--grace-period=0s").ExitCode);
        Assert.False(Directory.Exists(tree), "image gc kept a tree no pod refers to");
    }

    [Fact]
    public void BadRequests_FailWithOneLineAnd254_AndLeaveNoPod()
    {
        foreach (var args in new[]
        {
            new[] { "run", "example.com/no-such-image" },
            ["run", "example.com/busybox", "example.com/busybox"],                  // duplicate app names
            ["run", "example.com/busybox", "--net=host"],
            ["run", "--net=default", "example.com/busybox", "--mount=volume=nope,target=/x"],
            ["run", "--exec=/bin/true"],                                             // app flag before any image
            ["run", "example.com/busybox", "--stage1-path=/nonexistent.aci"],
            ["run", "example.com/busybox", "--volume=v,kind=host,source=relative"],
            ["run", "example.com/busybox", "--private-users"],
        })
        {
            var (rc, stdout, stderr) = Cli(args);
            Assert.True(rc == 254, $"{string.Join(' ', args)} exited {rc}: {stderr}");
            Assert.Single(stderr.Trim().Split('\n'));
            Assert.StartsWith("rkt-kvm: ", stderr);
        }
        // A stage1 that fails before the pod starts (no pid file): its exit status, and no pod left.
        var early = RktKvm.Run(_data, new Dictionary<string, string>(_env) { ["STAGE1_TEST_RUN_FAIL_EARLY"] = "1" }, "run", "example.com/busybox");
        Assert.Equal(9, early.ExitCode);
        Assert.Contains("did not start", early.Stderr);
        foreach (var phase in new[] { "embryo", "prepare", "prepared", "run" })
        {
            var dir = Path.Join(_data, "pods", phase);
            Assert.True(!Directory.Exists(dir) || Directory.GetDirectories(dir).Length == 0, $"a pod was left in {phase}/");
        }
    }

    [Fact]
    public void MutablePod_AppVerbsCallTheCrossingEntrypointsWithRktsEnvironment()
    {
        using var started = StartSandbox();
        var (sandbox, uuid, pod) = (started.Process, started.Uuid, started.Pod);
        Assert.True(PodLock.IsHeld(pod)); // running = some process holds the lock
        var run = LoggingStage1.Calls(pod).Single(c => c.Name == "run");
        Assert.Equal(["--net=default", "--local-config=/etc/rkt", "--mutable", uuid], Values(run.Lines, "arg"));
        Assert.True(Manifests.PodManifest.Load(Path.Join(pod, "pod")).Mutable);

        Assert.Equal(0, Cli("app", "add", uuid, "example.com/busybox", "--name=one", "--environment=X=1").ExitCode);
        var add = LoggingStage1.Calls(pod).Last();
        Assert.Equal("app-add", add.Name);
        Assert.Equal(["--debug=false", $"--uuid={uuid}", "--app=one"], Values(add.Lines, "arg"));
        // The crossing entrypoints get a replaced environment: only these three (plus what sh itself sets).
        var envNames = Values(add.Lines, "env").Select(e => e.Split('=')[0]).Where(n => n is not ("PWD" or "SHLVL" or "_" or "OLDPWD")).ToArray();
        Assert.Equal(["PATH", "RKT_STAGE1_ENTERCMD", "RKT_STAGE1_ENTERPID"], envNames.Order());
        Assert.Equal(pod + "/stage1/rootfs/enter", Values(add.Lines, "env").Single(e => e.StartsWith("RKT_STAGE1_ENTERCMD=")).Split('=')[1]);
        Assert.Equal("X=1\n", File.ReadAllText(Path.Join(pod, "stage1/rootfs/rkt/env/one")));
        Assert.True(File.Exists(Path.Join(pod, "stage1/rootfs/rkt/status/one-created")));
        if (IsRoot) Assert.Contains(Path.Join(pod, "stage1/rootfs/opt/stage2/one/rootfs"), MountsUnderData());

        Assert.Equal(0, Cli("app", "start", uuid, "--app=one").ExitCode);
        Assert.True(File.Exists(Path.Join(pod, "stage1/rootfs/rkt/status/one-started")));
        Assert.Equal(["--debug=false", "--app=one"], Values(LoggingStage1.Calls(pod).Last().Lines, "arg"));
        Assert.Contains("running", Cli("app", "list", uuid).Stdout);

        // app/stop's 5 means "no such app" (systemctl's unit not loaded).
        File.WriteAllText(Path.Join(pod, "app-stop-exit"), "5");
        var stop5 = Cli("app", "stop", uuid, "--app=one");
        Assert.Equal(254, stop5.ExitCode);
        Assert.Contains("no such app", stop5.Stderr);
        // rkt 1.30's app rm fails on any non-zero app/stop, 5 included, and leaves the app in the pod.
        var rm5 = Cli("app", "rm", uuid, "--app=one");
        File.Delete(Path.Join(pod, "app-stop-exit"));
        Assert.Equal(254, rm5.ExitCode);
        Assert.Equal("app-stop", LoggingStage1.Calls(pod).Last().Name);
        Assert.Single(Manifests.PodManifest.Load(Path.Join(pod, "pod")).Apps);

        var enter = Cli("enter", "--app=one", uuid, "/bin/echo", "-n", "x");
        Assert.Equal(7, enter.ExitCode); // enter's exit code is the command's
        var enterCall = LoggingStage1.Calls(pod).Last();
        Assert.Equal([$"--pid={File.ReadAllText(Path.Join(pod, "pid")).Trim()}", "--appname=one", "--", "/bin/echo", "-n", "x"], Values(enterCall.Lines, "arg"));
        // As rkt's: enter runs from the stage1 image's tree in the store, cwd the pod.
        Assert.StartsWith(Path.Join(_data, "tree", File.ReadAllText(Path.Join(pod, "stage1TreeStoreID")), "rootfs") + "/", Values(enterCall.Lines, "self").Single());
        Assert.Equal(pod, Values(enterCall.Lines, "cwd").Single());

        Assert.Equal(0, Cli("app", "rm", uuid, "--app=one").ExitCode);
        Assert.Equal(["app-stop", "app-rm"], LoggingStage1.Calls(pod).TakeLast(2).Select(c => c.Name));
        Assert.False(Directory.Exists(Path.Join(pod, "stage1/rootfs/opt/stage2/one")));
        Assert.False(Directory.Exists(Path.Join(pod, "appsinfo/one")));
        Assert.DoesNotContain(MountsUnderData(), m => m.Contains("/opt/stage2/one"));
        Assert.Empty(Manifests.PodManifest.Load(Path.Join(pod, "pod")).Apps);

        var stop = Cli("stop", uuid);
        Assert.Equal(0, stop.ExitCode);
        Assert.Equal($"\"{uuid}\"", stop.Stdout.Trim());
        Assert.True(sandbox.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Equal($"pod \"{uuid}\" is already stopped", Cli("stop", uuid).Stdout.Trim());
        var late = Cli("app", "add", uuid, "example.com/busybox");
        Assert.True(late.ExitCode == 254, late.Stdout + late.Stderr + string.Join(",", LoggingStage1.Calls(pod).Select(c => c.Name)));

        var gc = Cli("gc", "--grace-period=0s");
        Assert.Equal(0, gc.ExitCode);
        Assert.Contains($"Garbage collecting pod \"{uuid}\"", gc.Stdout);
        Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods", "exited-garbage")));
        Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods", "garbage")));
        Assert.Empty(MountsUnderData());
    }

    /// <summary>rkt-kvm killed (with what it started) in the middle of app add, app rm and gc: the pod
    /// stays running and usable, or exited and collectable, and the next command finishes the job.</summary>
    [Fact]
    public void KilledMidCommand_AppAddAppRmGc_LeaveWhatTheNextCommandFinishes()
    {
        using var started = StartSandbox();
        var (sandbox, uuid, pod) = (started.Process, started.Uuid, started.Pod);
        void KillDuring(string entrypoint, string podDir, params string[] args)
        {
            var hang = Path.Join(podDir, "hang-" + entrypoint);
            File.WriteAllText(hang, "");
            using var cli = RktKvm.Start(_data, _env, args);
            WaitFor(() => LoggingStage1.Calls(File.Exists(hang) ? podDir : Directory.GetDirectories(Path.Join(_data, "pods"), uuid, SearchOption.AllDirectories).Single())
                .Any(c => c.Name == entrypoint) ? "" : null);
            cli.Kill(entireProcessTree: true);
            cli.WaitForExit();
            foreach (var h in Directory.GetFiles(Path.Join(_data, "pods"), "hang-" + entrypoint, SearchOption.AllDirectories)) File.Delete(h);
        }

        KillDuring("app-add", pod, "app", "add", uuid, "example.com/busybox", "--name=one");
        Assert.Contains("one", Cli("app", "list", uuid).Stdout); // rkt leaves a failed add in place: app rm takes it out
        KillDuring("app-rm", pod, "app", "rm", uuid, "--app=one");
        Assert.Contains("one", Cli("app", "list", uuid).Stdout);
        Assert.True(PodLock.IsHeld(pod), "the pod stopped running");
        var rm = Cli("app", "rm", uuid, "--app=one");
        Assert.True(rm.ExitCode == 0, rm.Stderr);
        Assert.DoesNotContain("one", Cli("app", "list", uuid).Stdout);
        Assert.DoesNotContain(MountsUnderData(), m => m.Contains("/opt/stage2/one"));

        Assert.Equal(0, Cli("stop", uuid).ExitCode);
        Assert.True(sandbox.WaitForExit(TimeSpan.FromSeconds(30)));
        KillDuring("gc", pod, "gc", "--grace-period=0s");
        var left = Assert.Single(Directory.GetDirectories(Path.Join(_data, "pods"), uuid, SearchOption.AllDirectories));
        Assert.Equal("garbage", Path.GetFileName(Path.GetDirectoryName(left))); // collectable: the next gc finishes
        var gc = Cli("gc", "--grace-period=0s");
        Assert.True(gc.ExitCode == 0, gc.Stderr);
        Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods"), uuid, SearchOption.AllDirectories));
        Assert.Empty(MountsUnderData());
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
    private const int SIGKILL = 9, SIGSTOP = 19;

    /// <summary>rkt-kvm killed while it prepares a pod (rkt's Prepare phase): the pod stays in
    /// <c>prepare/</c>, unlocked ("aborted prepare") with nothing mounted, and gc removes it at once,
    /// as rkt's does; while its preparer lives (stopped here, holding the lock) gc leaves it alone.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void KilledWhilePreparing_LeavesAnAbortedPrepare_ThatGcRemoves(bool overlay)
    {
        // Many apps make the Prepare phase long enough to catch: the preparer is stopped (SIGSTOP) the
        // moment its pod shows in prepare/, so the kill lands there, not in a later phase.
        string[] args = ["run", .. Enumerable.Range(0, 24).SelectMany(i => new[] { "example.com/busybox", $"--name=app{i}" }),
            .. overlay ? Array.Empty<string>() : ["--no-overlay"]];
        var prepare = Path.Join(_data, "pods", "prepare");
        string? pod = null;
        for (int attempt = 0; attempt < 10 && pod is null; attempt++)
        {
            using var cli = RktKvm.Start(_data, _env, args);
            while (!cli.HasExited)
            {
                if (Directory.Exists(prepare) && Directory.GetDirectories(prepare).FirstOrDefault() is { } seen)
                {
                    Assert.Equal(0, kill(cli.Id, SIGSTOP));
                    if (Directory.Exists(seen)) pod = seen; // still preparing: the kill lands in this phase
                    break;
                }
                Thread.SpinWait(1000);
            }
            if (pod is not null)
            {
                Assert.Equal("preparing", PodState(Path.GetFileName(pod)));
                Assert.Equal(0, Cli("gc", "--grace-period=0s", "--expire-prepared=0s").ExitCode);
                Assert.True(Directory.Exists(pod), "gc removed a pod whose preparer still holds its lock");
            }
            kill(cli.Id, SIGKILL);
            cli.WaitForExit();
            if (pod is null) // too late (the pod already ran): start again from nothing
            {
                Assert.Equal(0, Cli("gc", "--grace-period=0s").ExitCode);
                Assert.Empty(MountsUnderData());
            }
        }
        Assert.True(pod is not null, "the preparer was never caught in its Prepare phase in 10 tries");
        var uuid = Path.GetFileName(pod!);
        Assert.Equal("aborted prepare", PodState(uuid));
        Assert.Empty(MountsUnderData());

        var gc = Cli("gc");
        Assert.True(gc.ExitCode == 0, gc.Stderr);
        Assert.Contains($"Moving failed prepare \"{uuid}\" to garbage", gc.Stdout);
        Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods"), "*-*-*-*-*", SearchOption.AllDirectories));
        Assert.Empty(MountsUnderData());
    }

    private string PodState(string uuid) =>
        Cli("status", uuid).Stdout.Split('\n').Single(l => l.StartsWith("state=", StringComparison.Ordinal))["state=".Length..];
    /// <summary>The busybox rootfs as a one-layer OCI image, pushed by skopeo to a fresh registry;
    /// returns its docker:// reference.</summary>
    private string PushBusybox(RegistryServer registry)
    {
        var layer = Path.Join(_tmp, "busybox-layer.tar");
        Tool.Run("tar", null, "-C", Path.Join(_tmp, "busybox-rootfs"), "-cf", layer, ".");
        var layout = OciBuilder.Build(Path.Join(_tmp, "busybox-oci"), "1", layer);
        Tool.Run("skopeo", null, "copy", "--quiet", "--dest-tls-verify=false", $"oci:{layout}:1", $"docker://{registry.Host}/tools/busybox:1");
        return $"docker://{registry.Host}/tools/busybox:1";
    }

    [Fact]
    public void AppAdd_FetchesADockerImageOnDemand()
    {
        using var registry = new RegistryServer(_tmp);
        var image = PushBusybox(registry);
        using var started = StartSandbox();
        var (rc, _, err) = Cli("app", "add", started.Uuid, image, "--insecure-options=image,http", "--name=web");
        Assert.True(rc == 0, err);
        Assert.Equal("app-add", LoggingStage1.Calls(started.Pod).Last().Name);
        Assert.True(File.Exists(Path.Join(started.Pod, "appsinfo/web/manifest")));
        Assert.Contains($"127.0.0.1_{registry.Port}/tools/busybox:1", Cli("image", "list").Stdout);
    }

    [Fact]
    public void Run_FetchesADockerImageOnDemand_ThenUsesTheStoredOne()
    {
        using var registry = new RegistryServer(_tmp);
        var image = PushBusybox(registry);

        var refused = Cli("run", image, "--exec=/bin/true");
        Assert.Equal(254, refused.ExitCode);
        Assert.Contains("signature verification for docker images is not supported (try --insecure-options=image)", refused.Stderr);
        Assert.Empty(Directory.GetDirectories(Path.Join(_data, "pods", "run")));

        var (rc, _, err) = Cli("--insecure-options=image,http", "run", image, "--exec=/bin/true");
        Assert.True(rc == 0, err);
        var manifest = Manifests.PodManifest.Load(Path.Join(OnlyPod("run"), "pod"));
        var app = Assert.Single(manifest.Apps);
        Assert.Equal("busybox", app.Name);
        Assert.Equal($"127.0.0.1_{registry.Port}/tools/busybox", app.Image.Name);

        // run's pull policy is "new", as rkt's: the stored image, without asking the registry.
        int manifestGets = registry.CountRequests("/manifests/");
        var again = Cli("run", image, "--insecure-options=image,http", "--exec=/bin/true");
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Equal(manifestGets, registry.CountRequests("/manifests/"));
        var never = Cli("run", $"docker://{registry.Host}/tools/other:1", "--insecure-options=image,http", "--pull-policy=never", "--exec=/bin/true");
        Assert.Equal(254, never.ExitCode);
        Assert.Contains("--pull-policy=never", never.Stderr);
    }

    [Fact]
    public void AppAdd_ToAPodStartedByRun_FailsWithImmutablePod()
    {
        var uuidFile = Path.Join(_tmp, "uuid");
        var env = new Dictionary<string, string>(_env) { ["STAGE1_TEST_RUN_EXIT"] = "0" };
        Assert.Equal(0, RktKvm.Run(_data, env, "run", "example.com/busybox", "--uuid-file-save=" + uuidFile).ExitCode);
        var (rc, _, err) = Cli("app", "add", File.ReadAllText(uuidFile), "example.com/busybox", "--name=late");
        Assert.Equal(254, rc);
        Assert.Contains("not running", err); // exited already; a running immutable pod says "immutable pod" (end-to-end tests)
    }

    /// <summary>An <c>app sandbox</c> running in the background, ready (supervisor-status), killed with
    /// what it started when disposed.</summary>
    private sealed record Sandbox(System.Diagnostics.Process Process, string Uuid, string Pod) : IDisposable
    {
        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }

    private Sandbox StartSandbox()
    {
        var uuidFile = Path.Join(_tmp, "uuid-sandbox");
        var process = RktKvm.Start(_data, _env, "app", "sandbox", "--uuid-file-save=" + uuidFile);
        var uuid = WaitFor(() => File.Exists(uuidFile) ? File.ReadAllText(uuidFile) : null);
        var pod = Path.Join(_data, "pods", "run", uuid);
        WaitFor(() => File.Exists(Path.Join(pod, "stage1/rootfs/rkt/supervisor-status")) ? "" : null);
        return new Sandbox(process, uuid, pod);
    }

    private static T WaitFor<T>(Func<T?> probe) where T : class
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (probe() is { } value) return value;
            Thread.Sleep(50);
        }
        throw new TimeoutException("condition not met in 60 s");
    }
}

using System.Diagnostics;
using Rkt.Kvm.Stage1.Control;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// Pods from images, end to end, through rkt-kvm only (as a user would): stage0 prepares the pod,
/// stage1-kvm boots one VM for it, the agent runs the apps from 9p-exported root filesystems.
/// Each test boots one pod VM (about a minute here) and checks as much as it can in it.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PodEndToEndTests
{
    private const string Busybox = RktKvmCli.Busybox;

    [SkippableFact]
    public void ImmutablePod_TwoApps_ListStatusEnterVolumes_AndRunReturnsTheFailedAppsCode()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var rw = Directory.CreateDirectory(Path.Join(cli.Root, "rw")).FullName;
        var ro = Directory.CreateDirectory(Path.Join(cli.Root, "ro")).FullName;
        File.WriteAllText(Path.Join(ro, "given"), "from the host\n");

        var (run, uuid) = cli.Start("run", $"--volume=rw,kind=host,source={rw}", $"--volume=ro,kind=host,source={ro},readOnly=true",
            Busybox, "--name=worker", "--mount=volume=rw,target=/rw", "--mount=volume=ro,target=/ro", "--exec=/bin/sh", "--", "-c",
            "echo written > /rw/out; cat /ro/given; if echo x > /ro/nope 2>/dev/null; then echo RO-WRITABLE; fi; " +
            "while [ ! -e /rw/go ]; do sleep 0.2; done; echo worker done; exit 3", "---",
            Busybox, "--name=sidecar", "--exec=/bin/sh", "--", "-c", "echo sidecar up; while [ ! -e /tmp/stop ]; do sleep 0.2; done; echo sidecar bye", "---");
        cli.WaitReady(uuid);

        var list = cli.Run("list", "--no-legend").Stdout;
        Assert.Contains(uuid[..8], list);
        Assert.Contains("worker", list);
        Assert.Contains("sidecar", list);
        Assert.Contains("running", list);
        var add = cli.Run("app", "add", uuid, Busybox, "--name=late");
        Assert.Equal(254, add.ExitCode);
        Assert.Contains("immutable pod", add.Stderr);

        WaitUntil(() => File.Exists(Path.Join(rw, "out")), "the worker's write to the read-write volume");
        Assert.Equal("written\n", File.ReadAllText(Path.Join(rw, "out")));
        var enter = cli.Run("enter", "--app=sidecar", uuid, "/bin/sh", "-c", "touch /tmp/stop; echo entered; exit 4");
        Assert.True(enter.ExitCode == 4, enter.Stderr);
        Assert.Equal("entered\n", enter.Stdout);
        File.WriteAllText(Path.Join(rw, "go"), "");

        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(3)), "the pod did not end after its apps exited");
        var output = cli.OutputOf(run);
        Assert.True(run.ExitCode == 3, $"run exited {run.ExitCode}, not the worker's 3:\n{output}");
        Assert.Contains("[worker] from the host", output);
        Assert.Contains("[worker] worker done", output);
        Assert.Contains("[sidecar] sidecar bye", output);
        Assert.DoesNotContain("RO-WRITABLE", output);
        Assert.False(File.Exists(Path.Join(ro, "nope")));

        var status = cli.Status(uuid);
        Assert.Equal("exited", status["state"]);
        Assert.Equal("3", status["app-worker"]);
        Assert.Equal("0", status["app-sidecar"]);
        var pod = cli.PodDir(uuid);
        Assert.Contains("worker done", File.ReadAllText(Path.Join(pod, "stage1-kvm/logs/worker.log")));
        Assert.Contains("exited", cli.Run("list").Stdout);
        Assert.False(Directory.Exists(Path.Join(cli.RuntimeRoot, uuid)), "run left its runtime directory behind");
    }

    [SkippableFact]
    public void MutablePod_Sandbox_AddTwo_StopAndRemoveOne_TheOtherRuns_ThenStopAndRm()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var (sandbox, uuid) = cli.Start("app", "sandbox");
        cli.WaitReady(uuid);
        foreach (var name in new[] { "a", "b", "c" })
        {
            var added = cli.Run("app", "add", uuid, Busybox, $"--name={name}", "--exec=/bin/sh", "--", "-c", $"echo {name} up; while true; do sleep 1; done", "---");
            Assert.True(added.ExitCode == 0, added.Stderr);
        }
        Assert.Equal(0, cli.Run("app", "start", uuid, "--app=a").ExitCode);
        Assert.Equal(0, cli.Run("app", "start", uuid, "--app=b").ExitCode);
        var apps = cli.Run("app", "list", "--no-legend", uuid).Stdout;
        Assert.Matches(@"a\s+running", apps);
        Assert.Matches(@"b\s+running", apps);
        Assert.Matches(@"c\s+created", apps);

        // The stage1 side of the contract, directly: app/stop of an app that is not running exits 5.
        var pod = cli.PodDir(uuid);
        var stop = new ProcessStartInfo(Path.Join(pod, "stage1/rootfs/app/stop")) { WorkingDirectory = pod, RedirectStandardError = true };
        stop.ArgumentList.Add("--debug=false");
        stop.ArgumentList.Add("--app=c");
        stop.Environment.Clear();
        stop.Environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";
        stop.Environment["RKT_STAGE1_ENTERCMD"] = Path.Join(pod, "stage1/rootfs/enter");
        stop.Environment["RKT_STAGE1_ENTERPID"] = File.ReadAllText(Path.Join(pod, "pid")).Trim();
        using (var p = Process.Start(stop)!) { p.WaitForExit(); Assert.Equal(5, p.ExitCode); }

        Assert.Equal(0, cli.Run("app", "stop", uuid, "--app=a").ExitCode);
        Assert.Equal(0, cli.Run("app", "rm", uuid, "--app=a").ExitCode);
        Assert.False(Directory.Exists(Path.Join(pod, "stage1/rootfs/opt/stage2/a")), "app rm left the app's rootfs");
        apps = cli.Run("app", "list", "--no-legend", uuid).Stdout;
        Assert.DoesNotMatch(@"(?m)^a\s", apps);
        Assert.Matches(@"b\s+running", apps);
        var enter = cli.Run("app", "exec", "--app=b", uuid, "/bin/sh", "-c", "echo still here");
        Assert.Equal("still here\n", enter.Stdout);

        // Withdrawing the export under a running app: the VMM closes its fds and answers; reads fail
        // in the guest (EIO), but the VMM, the agent and the pod go on.
        var control = new VmmControlClient(Path.Join(File.ReadAllText(Path.Join(pod, "stage1-kvm/runtime-dir")).Trim(), "control.sock"));
        Assert.True(control.RemoveExport("app-b").Ok);
        var afterRemoval = cli.Run("app", "exec", "--app=b", uuid, "/bin/cat", "/etc/os-release");
        Assert.NotEqual(0, afterRemoval.ExitCode);
        Assert.True(control.Status().Ok);
        Assert.Equal("running", cli.Status(uuid)["state"]);

        var stopped = cli.Run("stop", uuid);
        Assert.Equal($"\"{uuid}\"", stopped.Stdout.Trim());
        Assert.True(sandbox.WaitForExit(TimeSpan.FromMinutes(2)), "the sandbox did not end after stop");
        Assert.Equal(0, sandbox.ExitCode);
        Assert.Equal("exited", cli.Status(uuid)["state"]);
        Assert.Equal(0, cli.Run("rm", uuid).ExitCode);
        Assert.False(Directory.Exists(pod));
        Assert.False(Directory.Exists(Path.Join(cli.RuntimeRoot, uuid)));
    }

    [SkippableFact]
    public void KilledVmm_ListShowsExited_AndGcLeavesNothing()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var (run, uuid) = cli.Start("run", Busybox, "--exec=/bin/sh", "--", "-c", "echo up; sleep 1000", "---");
        cli.WaitReady(uuid);
        var pod = cli.PodDir(uuid);
        int vmm = int.Parse(File.ReadAllText(Path.Join(pod, "pid")).Trim());
        Process.GetProcessById(vmm).Kill();
        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(1)), "stage1 run did not notice its VM died");
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("exited", cli.Run("list", "--no-legend").Stdout);

        var gc = cli.Run("gc", "--grace-period=0s");
        Assert.True(gc.ExitCode == 0, gc.Stderr);
        Assert.False(Directory.Exists(pod), "gc left the pod directory");
        Assert.False(Directory.Exists(Path.Join(cli.RuntimeRoot, uuid)), "gc left the runtime directory");
        var leftovers = Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsDigit))
            .Where(pid => { try { return File.ReadAllText($"/proc/{pid}/cmdline").Contains(uuid); } catch (IOException) { return false; } }).ToList();
        Assert.Empty(leftovers);
        Assert.DoesNotContain(cli.Root, File.ReadAllText("/proc/self/mountinfo"));
    }

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for {what}");
            Thread.Sleep(100);
        }
    }
}

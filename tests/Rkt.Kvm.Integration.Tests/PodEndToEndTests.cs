using System.Diagnostics;
using Rkt.Kvm.Vmm.Client.Control;

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

    /// <summary>rkt's default renders pods as overlays (where overlayfs works); --no-overlay lays them out
    /// as files. Both must give the same pod.</summary>
    private static string[] OverlayFlags(bool overlay) => overlay ? [] : ["--no-overlay"];

    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void ImmutablePod_TwoApps_ListStatusEnterVolumes_AndRunReturnsTheFailedAppsCode(bool overlay)
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var rw = Directory.CreateDirectory(Path.Join(cli.Root, "rw")).FullName;
        var ro = Directory.CreateDirectory(Path.Join(cli.Root, "ro")).FullName;
        File.WriteAllText(Path.Join(ro, "given"), "from the host\n");

        var (run, uuid) = cli.Start(["run", .. OverlayFlags(overlay), $"--volume=rw,kind=host,source={rw}", $"--volume=ro,kind=host,source={ro},readOnly=true",
            Busybox, "--name=worker", "--mount=volume=rw,target=/rw", "--mount=volume=ro,target=/ro", "--exec=/bin/sh", "--", "-c",
            "echo written > /rw/out; cat /ro/given; if echo x > /ro/nope 2>/dev/null; then echo RO-WRITABLE; fi; " +
            "while [ ! -e /rw/go ]; do sleep 0.2; done; echo worker done; exit 3", "---",
            Busybox, "--name=sidecar", "--exec=/bin/sh", "--", "-c", "echo sidecar up; while [ ! -e /tmp/stop ]; do sleep 0.2; done; echo sidecar bye", "---"]);
        cli.WaitReady(uuid);

        var list = cli.Run("list", "--no-legend").Stdout;
        Assert.Contains(uuid[..8], list);
        Assert.Contains("worker", list);
        Assert.Contains("sidecar", list);
        Assert.Contains("running", list);
        var add = cli.Run("app", "add", uuid, Busybox, "--name=late");
        Assert.Equal(254, add.ExitCode);
        Assert.Contains("immutable pod", add.Stderr);

        // The shell creates the file, then writes to it (two 9p round trips): wait for the content, not the file.
        WaitUntil(() => File.Exists(Path.Join(rw, "out")) && File.ReadAllText(Path.Join(rw, "out")).Length > 0, "the worker's write to the read-write volume");
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
        Assert.Equal(overlay, File.Exists(Path.Join(pod, "overlay-prepared")));
        Assert.Equal(overlay, cli.MountsUnderRoot().Count > 0);

        Assert.Equal(0, cli.Run("rm", uuid).ExitCode);
        Assert.False(Directory.Exists(pod));
        Assert.Empty(cli.MountsUnderRoot());
    }

    /// <summary>The whole mutable sequence as rkt 1.30 drives it (STAGE1-ABI.md): app sandbox → app add →
    /// app start → enter → app stop → app rm → stop → rm → gc, with overlay and without; nothing is
    /// left behind.</summary>
    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void MutablePod_Sandbox_AddStartEnterStopRm_ThenStopRmGc_LeavesNothing(bool overlay)
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var (sandbox, uuid) = cli.Start(["app", "sandbox", .. OverlayFlags(overlay)]);
        cli.WaitReady(uuid);
        var pod = cli.PodDir(uuid);
        Assert.Equal(overlay, File.Exists(Path.Join(pod, "overlay-prepared")));
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

        // The stage1 side of the contract, directly: app/stop of an app that exists but is not running
        // succeeds (rkt's app rm calls it first and fails on anything else); only an unknown app is 5.
        Assert.Equal(0, CrossingAppStop(pod, "c"));
        Assert.Equal(5, CrossingAppStop(pod, "no-such-app"));

        var entered = cli.Run("enter", "--app=a", uuid, "/bin/sh", "-c", "echo in a; exit 6");
        Assert.Equal(6, entered.ExitCode);
        Assert.Equal("in a\n", entered.Stdout);

        Assert.Equal(0, cli.Run("app", "stop", uuid, "--app=a").ExitCode);
        Assert.Equal(0, cli.Run("app", "stop", uuid, "--app=a").ExitCode); // stopping an exited app succeeds, as in rkt
        var rm = cli.Run("app", "rm", uuid, "--app=a");
        Assert.True(rm.ExitCode == 0, rm.Stderr);
        Assert.False(Directory.Exists(Path.Join(pod, "stage1/rootfs/opt/stage2/a")), "app rm left the app's rootfs");
        Assert.DoesNotContain(cli.MountsUnderRoot(), m => m.Contains("/opt/stage2/a/"));
        var rmCreated = cli.Run("app", "rm", uuid, "--app=c"); // never started
        Assert.True(rmCreated.ExitCode == 0, rmCreated.Stderr);
        apps = cli.Run("app", "list", "--no-legend", uuid).Stdout;
        Assert.DoesNotMatch(@"(?m)^[ac]\s", apps);
        Assert.Matches(@"b\s+running", apps);
        Assert.Equal("still here\n", cli.Run("app", "exec", "--app=b", uuid, "/bin/sh", "-c", "echo still here").Stdout);
        // app exec -it on the mutable pod: a shell on a terminal of its own, driven from a host terminal.
        using (var term = HostTerminal.Start(cli.StartInfo(["app", "exec", "-it", "--app=b", uuid, "/bin/sh"], redirect: false)))
        {
            term.WaitFor("/ # ", TimeSpan.FromMinutes(1));
            term.Type("tty; exit 9\r");
            Assert.Equal(9, term.WaitForExit(TimeSpan.FromMinutes(1)));
            Assert.Contains("/dev/pts/", term.Screen);
        }

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
        var gc = cli.Run("gc", "--grace-period=0s");
        Assert.True(gc.ExitCode == 0, gc.Stderr);
        Assert.False(Directory.Exists(pod));
        Assert.False(Directory.Exists(Path.Join(cli.RuntimeRoot, uuid)));
        Assert.Empty(cli.MountsUnderRoot());
        Assert.Empty(cli.ProcessesMentioning(uuid));
    }

    /// <summary>Runs the pod's stage1 app/stop exactly as rkt's stage0 does: cwd the pod, the replaced environment.</summary>
    private static int CrossingAppStop(string pod, string app)
    {
        var stop = new ProcessStartInfo(Path.Join(pod, "stage1/rootfs/app/stop")) { WorkingDirectory = pod, RedirectStandardError = true };
        stop.ArgumentList.Add("--debug=false");
        stop.ArgumentList.Add($"--app={app}");
        stop.Environment.Clear();
        stop.Environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";
        stop.Environment["RKT_STAGE1_ENTERCMD"] = Path.Join(pod, "stage1/rootfs/enter");
        stop.Environment["RKT_STAGE1_ENTERPID"] = File.ReadAllText(Path.Join(pod, "pid")).Trim();
        using var p = Process.Start(stop)!;
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode;
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
        Assert.Empty(cli.ProcessesMentioning(uuid));
        Assert.Empty(cli.MountsUnderRoot());
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

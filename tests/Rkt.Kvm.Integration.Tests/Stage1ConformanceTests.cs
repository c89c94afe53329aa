using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// The stage1 side of the rkt contract, asserted directly against the built stage1-kvm image
/// (no rkt-kvm in between, no VM needed): its manifest, its entrypoints' argument handling and
/// errors, the lock it requires, and gc's idempotence. STAGE1-ABI.md is the reference.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class Stage1ConformanceTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("rkt-kvm-stage1-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A pod directory by hand, as stage0 lays it out: the stage1 image unpacked into <c>stage1/</c>.</summary>
    private (string Pod, string Uuid) MakePod(string podManifest, Action<string>? alterStage1 = null)
    {
        var uuid = Guid.NewGuid().ToString("D");
        var pod = Directory.CreateDirectory(Path.Join(_root, "pods", "run", uuid)).FullName;
        Directory.CreateDirectory(Path.Join(pod, "stage1"));
        Run("tar", ["-xzf", TestEnvironment.Stage1Aci, "-C", Path.Join(pod, "stage1")], null, _root).AssertOk();
        alterStage1?.Invoke(Path.Join(pod, "stage1"));
        File.WriteAllText(Path.Join(pod, "pod"), podManifest);
        return (pod, uuid);
    }

    private const string OneApp = """
        {"acKind":"PodManifest","acVersion":"0.8.11","apps":[{"name":"a","image":{"name":"x","id":"sha512-1"},
         "app":{"exec":["/bin/true"],"user":"0","group":"0"}}],"volumes":null,"isolators":null,
         "annotations":[{"name":"coreos.com/rkt/stage1/mutable","value":"false"}]}
        """;

    private sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public void AssertOk() => Assert.True(ExitCode == 0, Stderr + Stdout);
    }

    private static Result Run(string program, IEnumerable<string> args, IDictionary<string, string>? env, string cwd)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = cwd };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) { psi.Environment.Clear(); foreach (var (k, v) in env) psi.Environment[k] = v; }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)), $"{program} did not finish");
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>stage1 run the way stage0 starts it: cwd the pod, RKT_LOCK_FD an fd on the locked pod directory.</summary>
    private static Result RunEntrypoint(string pod, params string[] args) =>
        Run("/bin/sh", ["-c", "exec 3<\"$0\" && flock -x 3 && RKT_LOCK_FD=3 exec \"$0/stage1/rootfs/run\" \"$@\"", pod, .. args],
            new Dictionary<string, string> { ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin", ["RKT_KVM_RUNTIME_DIR"] = Path.Join(Path.GetTempPath(), "rkt-kvm-conf") }, pod);

    [Fact]
    public void Manifest_NamesEveryEntrypoint_InterfaceVersion6_AndScriptsThatExist()
    {
        var (pod, _) = MakePod(OneApp);
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Join(pod, "stage1/manifest")))!;
        Assert.Equal("coreos.com/rkt/stage1-kvm", (string?)manifest["name"]);
        var annotations = manifest["annotations"]!.AsArray().ToDictionary(a => (string)a!["name"]!, a => (string)a!["value"]!);
        Assert.Equal("6", annotations["coreos.com/rkt/stage1/interface-version"]);
        foreach (var entry in new[] { "run", "enter", "gc", "stop", "app/add", "app/rm", "app/start", "app/stop", "attach" })
        {
            var path = Path.Join(pod, "stage1/rootfs", annotations[$"coreos.com/rkt/stage1/{entry}"]);
            Assert.True(File.Exists(path), $"entrypoint {entry} at {path} is missing");
            Assert.True(File.GetUnixFileMode(path).HasFlag(UnixFileMode.UserExecute), $"entrypoint {entry} is not executable");
        }
        // rkt's stage0 touches rkt/status before run (with overlay, its default) and writes into
        // rkt/env and rkt/status on app add without creating them.
        Assert.True(Directory.Exists(Path.Join(pod, "stage1/rootfs/rkt/status")), "the stage1 image has no rkt/status");
        Assert.True(Directory.Exists(Path.Join(pod, "stage1/rootfs/rkt/env")), "the stage1 image has no rkt/env");
        var labels = manifest["labels"]!.AsArray().ToDictionary(a => (string)a!["name"]!, a => (string)a!["value"]!);
        Assert.Equal("amd64", labels["arch"]);
        Assert.Equal("linux", labels["os"]);
        Assert.True(labels.ContainsKey("version"));
    }

    [Theory]
    [InlineData("--net=host", "--net=host is not supported")]
    [InlineData("--private-users=0:65536", "--private-users is not supported")]
    [InlineData("--ipc=parent", "--ipc=parent is not supported")]
    public void Run_RefusesWhatAVmCannotDo_WithOneLine(string flag, string message)
    {
        var (pod, uuid) = MakePod(OneApp);
        var r = RunEntrypoint(pod, "--net=default", flag, uuid);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.False(File.Exists(Path.Join(pod, "pid")));
    }

    [Fact]
    public void Run_RefusesAMalformedManifest_AMissingLock_AndAStage1WithoutKernel()
    {
        var (bad, badUuid) = MakePod("""{"acKind":"PodManifest","acVersion":"0.8.11","apps":[{"name":"../x"}]}""");
        var r = RunEntrypoint(bad, "--net=default", badUuid);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("not a valid app name", r.Stderr);

        var (pod, uuid) = MakePod(OneApp);
        var noLock = Run(Path.Join(pod, "stage1/rootfs/run"), ["--net=default", uuid], new Dictionary<string, string> { ["PATH"] = "/usr/bin:/bin" }, pod);
        Assert.Equal(1, noLock.ExitCode);
        Assert.Contains("RKT_LOCK_FD", noLock.Stderr);

        var (noKernel, noKernelUuid) = MakePod(OneApp, stage1 => File.Delete(Path.Join(stage1, "rootfs/kvm/vmlinux")));
        var k = RunEntrypoint(noKernel, "--net=default", noKernelUuid);
        Assert.Equal(1, k.ExitCode);
        Assert.Contains("the guest kernel is missing from the stage1 image", k.Stderr);
        Assert.False(File.Exists(Path.Join(noKernel, "pid")));
    }

    [Fact]
    public void Run_WhenTheVmmFailsToStart_SaysSo_AndStartsNoPod()
    {
        var (pod, uuid) = MakePod(OneApp, stage1 =>
        {
            var vmm = Path.Join(stage1, "rootfs/kvm/rkt-kvm-vmm");
            File.Delete(vmm);
            File.WriteAllText(vmm, "#!/bin/sh\necho 'rkt-kvm-vmm: cannot open /dev/kvm' >&2\nexit 1\n");
            File.SetUnixFileMode(vmm, (UnixFileMode)Convert.ToInt32("755", 8));
        });
        var r = RunEntrypoint(pod, "--net=default", uuid);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("the pod's VM did not start", r.Stderr);
        // The VMM's own words reach the user: rkt-kvm removes a pod that never started, logs included.
        Assert.Contains("  rkt-kvm-vmm: cannot open /dev/kvm", r.Stderr);
        Assert.False(File.Exists(Path.Join(pod, "pid")));
        Assert.False(Directory.Exists(Path.Join(Path.GetTempPath(), "rkt-kvm-conf", uuid)), "run left its runtime directory");
    }

    [Fact]
    public void Gc_IsIdempotent_AndStopOfAPodWithNothingRunningSucceeds()
    {
        var (pod, uuid) = MakePod(OneApp);
        var env = new Dictionary<string, string> { ["PATH"] = "/usr/bin:/bin" };
        for (int i = 0; i < 2; i++)
            Run(Path.Join(pod, "stage1/rootfs/gc"), ["--debug", "--local-config", "/etc/rkt", uuid], env, pod).AssertOk();
        Run(Path.Join(pod, "stage1/rootfs/stop"), [uuid], env, pod).AssertOk();
        Run(Path.Join(pod, "stage1/rootfs/stop"), ["--force", uuid], env, pod).AssertOk();
        Run(Path.Join(pod, "stage1/rootfs/attach"), ["--action=list", "--app=a", "--debug=false"], env, pod).AssertOk();
        Assert.Equal(1, Run(Path.Join(pod, "stage1/rootfs/attach"), ["--action=auto-attach", "--app=a", "--debug=false"], env, pod).ExitCode);
    }
}

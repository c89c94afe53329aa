using System.Diagnostics;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Agent.Vm;
using Rkt.Kvm.Vmm.Client;
using Xunit.Abstractions;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>The apps VM's shared template (<see cref="AppVm.TemplateAsync"/>; made here if no class before needed it); every test restores VMs from it.</summary>
public sealed class WarmVmFixture : IAsyncLifetime
{
    public string Directory { get; } = System.IO.Directory.CreateTempSubdirectory("rkt-kvm-warm-").FullName;
    public AppVmTemplate? Template { get; private set; }
    public string Snapshot => Template!.Snapshot;

    public async Task InitializeAsync()
    {
        if (TestEnvironment.HasKvm) Template = await AppVm.TemplateAsync();
    }

    /// <summary>A VM restored from the template, with its own runtime directory and control socket.</summary>
    public Task<AgentVmProcess> RestoreAsync(string name, Func<VmmCommandLine, VmmCommandLine>? change = null) =>
        Template!.RestoreAsync(System.IO.Directory.CreateDirectory(Path.Join(Directory, name)).FullName, change);

    public Task DisposeAsync()
    {
        try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
        return Task.CompletedTask;
    }
}

/// <summary>Warm starts: VMs restored from a snapshot of a booted agent VM, copy-on-write.</summary>
public sealed class WarmVmTests(WarmVmFixture fixture, ITestOutputHelper output) : IClassFixture<WarmVmFixture>
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(2);

    private WarmVmFixture Fixture
    {
        get
        {
            Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
            return fixture;
        }
    }

    private static async Task<string> Shell(AgentVmProcess vm, string app, string script)
    {
        var start = new ExecStart { App = app };
        start.Argv.AddRange(["/bin/sh", "-c", script]);
        var result = await vm.Client.ExecAsync(start, timeout: Long);
        Assert.True(result.ExitCode == 0, $"'{script}' exited {result.ExitCode}: {result.StderrText}");
        return result.StdoutText.Trim();
    }

    /// <summary>A pod with hostname <paramref name="hostname"/> and one long-running app to exec in.</summary>
    private static async Task StartPod(AgentVmProcess vm, string hostname)
    {
        await vm.Client.ConfigurePodAsync(new ConfigurePodRequest { Hostname = hostname });
        var app = new AddAppRequest { Name = "main", RootfsPath = AppVm.BusyboxRoot };
        app.Exec.AddRange(["/bin/sleep", "600"]);
        await vm.Client.AddAppAsync(app);
        await vm.Client.StartAppAsync("main");
    }

    [SkippableFact]
    public async Task A_restored_vm_is_resumed_with_a_fresh_rng_and_the_hosts_clock_and_runs_apps()
    {
        var f = Fixture;
        var info = f.Template!.Info!;
        output.WriteLine($"template: cold boot {info.StartToReady.TotalSeconds:F1} s, snapshot {info.MemoryBytes >> 20} MiB in {info.Snapshot.TotalMilliseconds:F0} ms");
        await Task.Delay(TimeSpan.FromSeconds(3)); // the template is now measurably older than the host's clock
        double ageMs = (DateTime.UtcNow - f.Template.MadeUtc).TotalMilliseconds;
        using var vm = await f.RestoreAsync("resumed");
        var resumed = vm.Resumed!;
        output.WriteLine($"restored: VMM start -> Resume answered in {vm.StartToReady.TotalMilliseconds:F0} ms; template age {ageMs:F0} ms, clock stepped {resumed.ClockStepMs} ms");
        Assert.True(resumed.HwrngUsed, "the agent did not read virtio-rng on Resume");
        Assert.True(resumed.ReseededBytes >= 64 + 32, $"only {resumed.ReseededBytes} bytes were mixed in");
        // Resume names the agent, so the host needs no Health call after it.
        Assert.Equal((await vm.Client.HealthAsync()).AgentVersion, resumed.AgentVersion);

        await StartPod(vm, "warm-one");
        Assert.Equal("warm-one", await Shell(vm, "main", "hostname"));
        // Whatever the host's KVM did with the guest's clock across the restore, Resume set it to ours.
        long guestNow = long.Parse(await Shell(vm, "main", "date +%s"));
        Assert.InRange(guestNow, DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 5, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 5);
        Assert.Equal("ok", await Shell(vm, "main", "echo ok > /tmp/f && cat /tmp/f"));
    }

    [SkippableFact]
    public async Task Two_vms_restored_from_one_template_are_independent()
    {
        var f = Fixture;
        var starts = new[] { f.RestoreAsync("a"), f.RestoreAsync("b") };
        using var a = await starts[0];
        using var b = await starts[1];
        await Task.WhenAll(StartPod(a, "pod-a"), StartPod(b, "pod-b"));

        // The same kernel RNG state was snapshotted once; Resume reseeded each VM on its own.
        const string Random = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
        string randomA = await Shell(a, "main", Random), randomB = await Shell(b, "main", Random);
        Assert.Equal(64, randomA.Length);
        Assert.NotEqual(randomA, randomB);

        Assert.Equal("pod-a", await Shell(a, "main", "hostname"));
        Assert.Equal("pod-b", await Shell(b, "main", "hostname"));
        await Shell(a, "main", "echo only-a > /tmp/mine");
        Assert.Equal("absent", await Shell(b, "main", "cat /tmp/mine 2>/dev/null || echo absent"));
        // Each VM's processes are its own: killing b's app leaves a's running.
        await b.Client.StopAppAsync("main");
        Assert.Equal("running", await Shell(a, "main", "kill -0 1 && echo running"));
        Assert.NotEqual(a.Pid, b.Pid);
    }

    [SkippableFact]
    public async Task A_corrupt_truncated_or_mismatched_snapshot_is_refused_with_one_clear_line()
    {
        var f = Fixture;
        // Only the head of the snapshot (preamble, header, state) is copied; the rest stays a hole.
        string Head(string name, Action<byte[]> damage, long length)
        {
            string path = Path.Join(f.Directory, name);
            var head = new byte[2 << 20];
            using (var source = File.OpenRead(f.Snapshot)) source.ReadExactly(head);
            damage(head);
            using (var copy = File.Create(path))
            {
                copy.Write(head);
                copy.SetLength(length);
            }
            return path;
        }
        long full = new FileInfo(f.Snapshot).Length;
        string corrupt = Head("corrupt.snapshot", h => h[100] ^= 0x20, full);
        string truncated = Head("truncated.snapshot", _ => { }, full / 2);
        string kernel = Path.Join(f.Directory, "other-vmlinux");
        File.Copy(TestEnvironment.Vmlinux, kernel);
        File.AppendAllText(kernel, "another build");

        var cases = new (string Why, Func<VmmCommandLine, VmmCommandLine> Change)[]
        {
            ("is corrupt", l => l with { Restore = corrupt }),
            ("is truncated", l => l with { Restore = truncated }),
            ("it has 384 MiB of RAM, this VM 512 MiB", l => l with { MemoryMiB = 512 }),
            ("it has 2 vCPUs, this VM 1", l => l with { Cpus = 1 }),
            ("it was made from another kernel", l => l with { Kernel = kernel }),
            ("it has a 9p device and this VM none", l => l with { Control = null }),
            ("it has 0 NICs, this VM 1", l => l with { Net = [new NetDeviceSpec { Isolated = true }] }),
        };
        foreach (var (why, change) in cases)
        {
            var clock = Stopwatch.StartNew();
            var e = await Assert.ThrowsAsync<AgentException>(() => f.RestoreAsync("refused", change));
            output.WriteLine($"{why}: refused in {clock.ElapsedMilliseconds} ms");
            Assert.Contains(why, e.Message);
            Assert.Contains("(exit status 1)", e.Message);
        }
    }
}

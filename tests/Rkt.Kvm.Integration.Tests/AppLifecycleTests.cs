using System.Diagnostics;
using System.Text;
using Grpc.Core;
using Rkt.Kvm.Agent;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Agent.Vm;
using Xunit.Abstractions;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>One VM (agent + busybox rootfs at /images/busybox) shared by the app lifecycle tests.</summary>
public sealed class AppVmFixture : IAsyncLifetime
{
    public AgentVmProcess? Vm { get; private set; }
    private string? _directory;

    public async Task InitializeAsync()
    {
        if (!TestEnvironment.HasKvm) return;
        (Vm, _directory) = await AppVm.BootAsync();
        await Vm.Client.ConfigurePodAsync(new ConfigurePodRequest { Hostname = "apppod", ResolvConf = "nameserver 10.0.0.53\n" });
    }

    public Task DisposeAsync()
    {
        if (Environment.GetEnvironmentVariable("RKT_KVM_APPS_CONSOLE") is { Length: > 0 } path && Vm is not null)
            File.WriteAllText(path, Vm.Diagnostics());
        Vm?.Dispose();
        if (_directory is not null) try { Directory.Delete(_directory, true); } catch (IOException) { }
        return Task.CompletedTask;
    }
}

/// <summary>The agent runs the pod's apps, each isolated: the CRI-like lifecycle on a real VM.</summary>
public sealed partial class AppLifecycleTests(AppVmFixture fixture, ITestOutputHelper output) : IClassFixture<AppVmFixture>
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(2);

    private AgentVmProcess Vm
    {
        get
        {
            Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
            return fixture.Vm!;
        }
    }

    private AgentClient Client => Vm.Client;

    private static AddAppRequest App(string name, string script, Action<AddAppRequest>? configure = null)
    {
        var request = new AddAppRequest { Name = name, RootfsPath = AppVm.BusyboxRoot };
        request.Exec.AddRange(["/bin/sh", "-c", script]);
        configure?.Invoke(request);
        return request;
    }

    private async Task<ExecResult> Exec(string app, params string[] argv)
    {
        var start = new ExecStart { App = app };
        start.Argv.AddRange(argv);
        return await Client.ExecAsync(start, timeout: Long);
    }

    private async Task<string> WaitForOutput(string app, string text)
    {
        var seen = new StringBuilder();
        await foreach (var r in Client.LogsAsync(app, follow: true, Long))
        {
            seen.Append(r.Data.ToStringUtf8());
            if (seen.ToString().Contains(text)) return seen.ToString();
        }
        throw new Xunit.Sdk.XunitException($"{app} ended without printing '{text}': {seen}");
    }

    [SkippableFact]
    public async Task Without_its_kernel_word_the_agent_does_not_serve_the_benchmark_service()
    {
        // This VM is made as stage1 makes a pod's (a template booted without the word, then restored), so its
        // agent is production PID 1: AgentBench's Echo is UNIMPLEMENTED, and naming the word says why.
        var client = Client;
        using var echo = client.Bench.Echo(deadline: client.Deadline());
        var e = await Assert.ThrowsAsync<RpcException>(() => echo.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
        Assert.Contains(AgentProtocol.BenchServiceKernelWord, e.Status.Detail);
    }

    [SkippableFact]
    public async Task Two_apps_run_at_once_with_exit_status_times_and_events()
    {
        var client = Client;
        using var events = await client.EventsAsync(Long);
        await client.AddAppAsync(App("exit3", "sleep 1; exit 3"));
        var added = await client.AddAppAsync(App("sleeper", "echo up; exec sleep 60"));
        Assert.Equal(AppState.Created, added.State);

        var watch = Stopwatch.StartNew();
        var sleeper = await client.StartAppAsync("sleeper");
        await WaitForOutput("sleeper", "up");
        output.WriteLine($"StartApp -> first output line: {watch.ElapsedMilliseconds} ms");
        Assert.Equal(AppState.Running, sleeper.State);
        await client.StartAppAsync("exit3");
        var apps = await client.ListAppsAsync();
        Assert.All(apps.Where(a => a.Name is "exit3" or "sleeper"), a => Assert.Equal(AppState.Running, a.State));

        var done = await client.WaitAppAsync("exit3", Long);
        Assert.Equal((AppState.Exited, 3, 0), (done.State, done.ExitCode, done.Signal));
        Assert.True(done.CreatedAtNs <= done.StartedAtNs && done.StartedAtNs <= done.FinishedAtNs, $"{done}");
        Assert.InRange(done.FinishedAtNs - done.StartedAtNs, 900_000_000L, 60_000_000_000L);
        Assert.Equal(AppState.Running, (await client.AppStatusAsync("sleeper")).State);

        watch.Restart();
        var stopped = await client.StopAppAsync("sleeper", TimeSpan.FromSeconds(20));
        output.WriteLine($"StopApp (SIGTERM, exits at once): {watch.ElapsedMilliseconds} ms");
        Assert.Equal((AppState.Exited, 15), (stopped.State, stopped.Signal));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(15), "SIGTERM should end it well within the grace period");

        var seen = new List<(AppEventType, string)>();
        while (seen.Count(e => e.Item2 is "exit3" or "sleeper") < 4 && await events.ResponseStream.MoveNext())
            seen.Add((events.ResponseStream.Current.Type, events.ResponseStream.Current.App.Name));
        Assert.Contains((AppEventType.AppEventStarted, "exit3"), seen);
        Assert.Contains((AppEventType.AppEventExited, "exit3"), seen);
        Assert.Contains((AppEventType.AppEventExited, "sleeper"), seen);

        await client.RemoveAppAsync("exit3");
        await client.RemoveAppAsync("sleeper");
        var mounts = (await client.GuestInfoAsync(new GuestInfoRequest { IncludeMountinfo = true })).Mountinfo;
        Assert.DoesNotContain("/apps/exit3", mounts);
        Assert.DoesNotContain("/apps/sleeper", mounts);
        await Assert.ThrowsAsync<AgentException>(() => client.AppStatusAsync("exit3"));
    }

    [SkippableFact]
    public async Task An_app_ignoring_SIGTERM_is_killed_after_the_grace_period()
    {
        var client = Client;
        await client.AddAppAsync(App("stubborn", "trap '' TERM; echo ready; while true; do sleep 1; done"));
        await client.StartAppAsync("stubborn");
        await WaitForOutput("stubborn", "ready");
        var watch = Stopwatch.StartNew();
        var stopped = await client.StopAppAsync("stubborn", TimeSpan.FromSeconds(2));
        output.WriteLine($"StopApp with a 2 s grace period: {watch.ElapsedMilliseconds} ms");
        Assert.Equal((AppState.Exited, 9), (stopped.State, stopped.Signal));
        Assert.InRange(watch.Elapsed, TimeSpan.FromSeconds(1.9), TimeSpan.FromSeconds(30));
        await client.RemoveAppAsync("stubborn");
    }

    [SkippableFact]
    public async Task Logs_are_complete_and_in_order_across_stdout_and_stderr()
    {
        var client = Client;
        await client.AddAppAsync(App("chatty", "i=0; while [ $i -lt 1000 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done"));
        await client.StartAppAsync("chatty");
        var follow = new List<LogsReply>();
        await foreach (var r in client.LogsAsync("chatty", follow: true, Long)) follow.Add(r);
        Assert.Equal(AppState.Exited, (await client.AppStatusAsync("chatty")).State);
        var again = new List<LogsReply>();
        await foreach (var r in client.LogsAsync("chatty", follow: false, Long)) again.Add(r);
        Assert.Equal(follow.Select(r => r.Sequence), again.Select(r => r.Sequence));
        for (int i = 1; i < follow.Count; i++)
        {
            Assert.Equal(follow[i - 1].Sequence + 1, follow[i].Sequence);
            Assert.True(follow[i - 1].TimestampNs <= follow[i].TimestampNs);
        }
        foreach (var (stream, prefix) in new[] { (LogStream.Stdout, "out"), (LogStream.Stderr, "err") })
        {
            string text = string.Concat(follow.Where(r => r.Stream == stream).Select(r => r.Data.ToStringUtf8()));
            Assert.Equal(Enumerable.Range(0, 1000).Select(i => $"{prefix} {i}"), text.TrimEnd('\n').Split('\n'));
        }
        var tail = new List<LogsReply>();
        await foreach (var r in client.LogsAsync("chatty", follow: false, Long, sinceSequence: follow[^1].Sequence)) tail.Add(r);
        Assert.Single(tail);
        await client.RemoveAppAsync("chatty");
    }

    [SkippableFact]
    public async Task Exec_gets_stdin_output_and_exit_code_inside_the_app()
    {
        var client = Client;
        await client.AddAppAsync(App("host", "exec sleep 120"));
        await client.StartAppAsync("host");
        var start = new ExecStart { App = "host" };
        start.Argv.AddRange(["sh", "-c", "cat; echo oops >&2; exit 7"]);
        var watch = Stopwatch.StartNew();
        var result = await client.ExecAsync(start, Encoding.UTF8.GetBytes("hello from stdin\n"), Long);
        output.WriteLine($"Exec round trip: {watch.ElapsedMilliseconds} ms");
        Assert.Equal(("hello from stdin\n", "oops\n", 7, 0), (result.StdoutText, result.StderrText, result.ExitCode, result.Signal));

        Assert.Equal("apppod\n", (await Exec("host", "hostname")).StdoutText);
        Assert.Contains("nameserver 10.0.0.53", (await Exec("host", "cat", "/etc/resolv.conf")).StdoutText);
        Assert.Contains("apppod", (await Exec("host", "cat", "/etc/hosts")).StdoutText);
        // The pod's /etc files are laid into the overlay's upper /etc, which keeps the image's mode and owner and its other files.
        Assert.Equal("755 0 0 alice\n", (await Exec("host", "sh", "-c", "echo $(stat -c '%a %u %g' /etc) $(cut -d: -f1 /etc/passwd | grep alice)")).StdoutText);
        var killed = await Exec("host", "sh", "-c", "kill -9 $$");
        Assert.Equal(9, killed.Signal);
        var missing = await Assert.ThrowsAsync<AgentException>(() => Exec("host", "/no/such/program"));
        Assert.Contains("execve", missing.Message);
        await client.StopAppAsync("host", TimeSpan.FromSeconds(5));
        await client.RemoveAppAsync("host");
    }

    [SkippableFact]
    public async Task Apps_see_neither_each_other_nor_the_agent()
    {
        var client = Client;
        await client.AddAppAsync(App("alpha", "echo secret > /alpha-secret; echo written; exec sleep 120"));
        await client.AddAppAsync(App("beta", "exec sleep 120"));
        await client.StartAppAsync("alpha");
        await client.StartAppAsync("beta");
        await WaitForOutput("alpha", "written");

        Assert.Equal("secret\n", (await Exec("alpha", "cat", "/alpha-secret")).StdoutText);
        Assert.NotEqual(0, (await Exec("beta", "cat", "/alpha-secret")).ExitCode);
        Assert.NotEqual(0, (await Exec("beta", "ls", "/apps")).ExitCode);
        Assert.NotEqual(0, (await Exec("beta", "ls", "/init")).ExitCode);
        Assert.NotEqual(0, (await Exec("beta", "ls", "/sbin/rkt-kvm-stage2")).ExitCode);
        Assert.Equal("", (await Exec("beta", "find", "/", "-xdev", "-name", "alpha-secret")).StdoutText);
        Assert.Equal("", (await Exec("beta", "ls", "/sys")).StdoutText);
        // Mount points (field 2); the overlay's options still name its upper dir, which is only text.
        string[] mountPoints = (await Exec("beta", "cat", "/proc/mounts")).StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[1]).ToArray();
        Assert.DoesNotContain(mountPoints, m => m.StartsWith("/apps") || m.StartsWith("/.agent-root") || m.Contains("cgroup") || m == "/sys");
        Assert.NotEqual(0, (await Exec("beta", "ls", "/.agent-root")).ExitCode); // the agent's root went with the pivot
        // /proc shows the pod's PID namespace: pod-init (1), the two apps, this exec.
        string[] pids = (await Exec("beta", "sh", "-c", "ls /proc | grep '^[0-9]'")).StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        output.WriteLine("pids seen by beta: " + string.Join(' ', pids));
        Assert.Contains("1", pids);
        Assert.InRange(pids.Length, 3, 6);
        // Chroot escape attempt: chroot into a subdirectory, then walk up with "..".
        var escape = await Exec("beta", "sh", "-c", "mkdir -p /tmp/x && chroot /tmp/x /bin/ls /init 2>&1; cd /../../..; ls /init");
        Assert.NotEqual(0, escape.ExitCode);

        foreach (string app in new[] { "alpha", "beta" }) await client.StopAppAsync(app, TimeSpan.FromSeconds(5));
        foreach (string app in new[] { "alpha", "beta" }) await client.RemoveAppAsync(app);
    }

    [SkippableFact]
    public async Task Users_and_groups_resolve_by_name_from_the_apps_files()
    {
        var client = Client;
        await client.AddAppAsync(App("asalice", "id -u; id -g; id -G; exec sleep 120", r => { r.User = "alice"; r.SupplementaryGids.Add(2000); }));
        await client.StartAppAsync("asalice");
        string text = await WaitForOutput("asalice", "2000");
        string[] lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("1000", lines[0]);
        Assert.Equal("1000", lines[1]);
        Assert.Equal(new[] { 10, 50, 1000, 2000 }, lines[2].Split(' ').Select(int.Parse).Order());
        Assert.Equal("1000\n", (await Exec("asalice", "id", "-u")).StdoutText); // exec defaults to the app's user
        var asBob = new ExecStart { App = "asalice", User = "bob", Group = "staff" };
        asBob.Argv.AddRange(["sh", "-c", "id -u; id -g"]);
        Assert.Equal("1001\n50\n", (await client.ExecAsync(asBob, timeout: Long)).StdoutText);
        // Non-root: no capabilities left, so it cannot write root's files.
        Assert.NotEqual(0, (await Exec("asalice", "sh", "-c", "echo x > /etc/passwd")).ExitCode);

        var unknown = await Assert.ThrowsAsync<AgentException>(() => client.AddAppAsync(App("ghost", "true", r => r.User = "nobody")));
        Assert.Contains("'nobody' is not in the app's /etc/passwd", unknown.Message);
        await client.StopAppAsync("asalice", TimeSpan.FromSeconds(5));
        await client.RemoveAppAsync("asalice");
    }

    [SkippableFact]
    public async Task Errors_are_statuses_with_a_sentence()
    {
        var client = Client;
        await client.AddAppAsync(App("dup", "exec sleep 120"));
        Assert.Contains("AlreadyExists", (await Assert.ThrowsAsync<AgentException>(() => client.AddAppAsync(App("dup", "true")))).Message);
        Assert.Contains("NotFound", (await Assert.ThrowsAsync<AgentException>(() => client.StartAppAsync("nope"))).Message);
        Assert.Contains("InvalidArgument", (await Assert.ThrowsAsync<AgentException>(() => client.AddAppAsync(App("Bad Name", "true")))).Message);
        await client.StartAppAsync("dup");
        Assert.Contains("FailedPrecondition", (await Assert.ThrowsAsync<AgentException>(() => client.RemoveAppAsync("dup"))).Message);
        Assert.Contains("FailedPrecondition", (await Assert.ThrowsAsync<AgentException>(() => client.StartAppAsync("dup"))).Message);
        await client.StopAppAsync("dup", TimeSpan.FromSeconds(5));
        await client.RemoveAppAsync("dup");

        var noExec = new AddAppRequest { Name = "noexec", RootfsPath = AppVm.BusyboxRoot };
        noExec.Exec.Add("/bin/does-not-exist");
        await client.AddAppAsync(noExec);
        var failed = await Assert.ThrowsAsync<AgentException>(() => client.StartAppAsync("noexec"));
        Assert.Contains("execve", failed.Message);
        output.WriteLine(failed.Message);
        await client.RemoveAppAsync("noexec");
    }

    [SkippableFact]
    public async Task A_fork_bomb_and_a_memory_hog_are_contained_and_the_agent_keeps_answering()
    {
        var client = Client;
        await client.AddAppAsync(App("bomb", "b(){ b | b & }; b; sleep 30", r => r.PidsLimit = 64));
        // One 32 MiB read(2) into one 32 MiB buffer against an 8 MiB limit: the pages are charged inside the
        // syscall and nothing of them can be reclaimed (no swap), so the OOM killer ends it. On nested PVM
        // hosts every fresh guest page costs milliseconds (about 60 s for 16 MiB with the bomb beside it),
        // hence the small limit and the hog's own deadline.
        await client.AddAppAsync(App("hog", "dd if=/dev/zero of=/dev/null bs=33554432 count=1", r => r.MemoryLimitBytes = 8 << 20));
        try
        {
            await client.StartAppAsync("bomb");
            await client.StartAppAsync("hog");
            var worst = TimeSpan.Zero;
            var until = Stopwatch.StartNew();
            while (until.Elapsed < TimeSpan.FromSeconds(10))
            {
                var watch = Stopwatch.StartNew();
                await client.HealthAsync();
                if (watch.Elapsed > worst) worst = watch.Elapsed;
                await Task.Delay(500);
            }
            output.WriteLine($"slowest Health during fork bomb + memory hog: {worst.TotalMilliseconds:0} ms");
            Assert.True(worst < TimeSpan.FromSeconds(5), $"Health took {worst}");
            var bomb = await client.StopAppAsync("bomb", TimeSpan.FromSeconds(1));
            Assert.Equal(AppState.Exited, bomb.State);
            var hog = await client.WaitAppAsync("hog", TimeSpan.FromMinutes(5));
            output.WriteLine($"hog ended {(hog.FinishedAtNs - hog.StartedAtNs) / 1_000_000} ms after it started: {hog}");
            Assert.Equal(9, hog.Signal); // the OOM killer, inside the app's memory.max
        }
        finally
        {
            // Never leave a bomb or a hog to the next test in this VM.
            foreach (var name in new[] { "bomb", "hog" })
            {
                try { await client.StopAppAsync(name, TimeSpan.FromSeconds(1)); } catch (AgentException) { }
                try { await client.RemoveAppAsync(name); } catch (AgentException) { }
            }
        }
        Assert.True((await client.GuestInfoAsync()).MemAvailableBytes > 32UL << 20);
    }
}

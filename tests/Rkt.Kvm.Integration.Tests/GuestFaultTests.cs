using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Agent.Vm;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// SIGKILL of the agent's helpers inside the guest (the stage2 helper while it sets up an app or an
/// exec and after it made the process, and pod-init while apps run), through the agent's fault
/// points (docs/LIFETIME.md) armed on the kernel command line of a VM of its own (a cold boot: a
/// restored VM keeps its template's command line). After each, the pod stays usable: the failed
/// start or exec leaves no process behind, and a new pod-init takes the dead one's place.
/// The host-side kills are <see cref="PodFaultTests"/>; these helpers hold nothing on the host.
/// </summary>
public sealed class GuestFaultTests
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(2);

    private static AddAppRequest App(string name, string script)
    {
        var request = new AddAppRequest { Name = name, RootfsPath = AppVm.BusyboxRoot };
        request.Exec.AddRange(["/bin/sh", "-c", script]);
        return request;
    }

    private static async Task<string> Ps(AgentClient client, string app)
    {
        var start = new ExecStart { App = app };
        start.Argv.AddRange(["ps", "-o", "pid,args"]);
        var ps = await client.ExecAsync(start, timeout: Long);
        Assert.Equal(0, ps.ExitCode);
        return ps.StdoutText;
    }

    private static int Count(string text, string what) => text.Split('\n').Count(l => l.TrimEnd().EndsWith(what, StringComparison.Ordinal));

    [SkippableFact]
    public async Task KilledStage2HelperAndPodInit_LeaveNoProcessBehind_AndThePodRunsOn()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        var template = await AppVm.TemplateAsync();
        string dir = Directory.CreateTempSubdirectory("rkt-kvm-guest-faults-").FullName;
        const string faults = "stage2:app-setup,stage2:app-started,pod-init-after-start:c,stage2:exec-started";
        try
        {
            using var vm = await AgentVmProcess.StartAsync(template.Options(dir, line => line with { Cmdline = AppVm.Cmdline + " RKT_KVM_FAULTS=" + faults }));
            var client = vm.Client;
            await client.ConfigurePodAsync(new ConfigurePodRequest { Hostname = "faultpod" });
            await client.AddAppAsync(App("a", "exec sleep 1001"));

            // The helper dies while it sets the app up: a clear error, and the app can be started again.
            var setup = await Assert.ThrowsAsync<AgentException>(() => client.StartAppAsync("a"));
            Assert.Contains("killed by signal 9", setup.Message);
            Assert.Equal(AppState.Created, (await client.AppStatusAsync("a")).State);

            // The helper dies after it made the app's process (which runs on, unreported): the agent kills it.
            var started = await Assert.ThrowsAsync<AgentException>(() => client.StartAppAsync("a"));
            Assert.Contains("killed by signal 9", started.Message);
            Assert.Equal(AppState.Created, (await client.AppStatusAsync("a")).State);

            // The third start works, and only its process runs: nothing is left of the first two.
            Assert.Equal(AppState.Running, (await client.StartAppAsync("a")).State);
            string ps = await Ps(client, "a");
            Assert.True(Count(ps, "sleep 1001") == 1, ps);

            // pod-init is killed once c has started: the kernel ends every process of the pod's PID namespace.
            await client.AddAppAsync(App("c", "exec sleep 1002"));
            await client.StartAppAsync("c");
            var a = await client.WaitAppAsync("a", Long);
            var c = await client.WaitAppAsync("c", Long);
            Assert.Equal((AppState.Exited, 9), (a.State, a.Signal));
            Assert.Equal((AppState.Exited, 9), (c.State, c.Signal));

            // The pod runs on: a new app gets a new pod-init with the pod's hostname.
            await client.AddAppAsync(App("d", "hostname; exec sleep 1003"));
            Assert.Equal(AppState.Running, (await client.StartAppAsync("d")).State);

            // An exec whose helper dies after making its process fails, and leaves nothing running.
            var exec = new ExecStart { App = "d" };
            exec.Argv.AddRange(["sleep", "1004"]);
            var failed = await Assert.ThrowsAsync<AgentException>(() => client.ExecAsync(exec, timeout: Long));
            Assert.Contains("killed by signal 9", failed.Message);
            ps = await Ps(client, "d");
            Assert.True(Count(ps, "sleep 1003") == 1 && Count(ps, "sleep 1004") == 0 && Count(ps, "sleep 1001") == 0, ps);
            Assert.Contains("faultpod", await LogsOf(client, "d"));

            await client.StopAppAsync("d", TimeSpan.FromSeconds(10));
            Assert.Equal(AppState.Exited, (await client.AppStatusAsync("d")).State);
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }

    private static async Task<string> LogsOf(AgentClient client, string app)
    {
        var text = new System.Text.StringBuilder();
        await foreach (var r in client.LogsAsync(app, follow: false, Long)) text.Append(r.Data.ToStringUtf8());
        return text.ToString();
    }
}

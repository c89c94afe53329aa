using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Xunit.Abstractions;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>ConfigurePod's network in a real VM with the static agent. The VM has no NIC yet, so this covers
/// validation, the NIC wait and lo; the NIC itself is covered in a host netns (Rkt.Kvm.Agent.Tests).</summary>
public sealed class PodNetworkAgentTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(2);

    private static ConfigurePodRequest WithNic(string address)
    {
        var request = new ConfigurePodRequest { Hostname = "netpod" };
        request.Interfaces.Add(new NetworkInterface { Mac = "02:00:ac:10:1c:02", Addresses = { address } });
        return request;
    }

    [SkippableFact]
    public async Task Lo_is_up_for_apps_and_a_bad_or_absent_nic_is_refused_with_its_reason()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        var (vm, directory) = await AppVm.BootAsync();
        try
        {
            AgentClient client = vm.Client;
            var invalid = await Assert.ThrowsAsync<AgentException>(() => client.ConfigurePodAsync(WithNic("fd00::2/64")));
            Assert.Contains("InvalidArgument: The address of the interface 02:00:ac:10:1c:02 'fd00::2/64' is IPv6, which is not supported yet.", invalid.Message);

            // The guest has no NIC with that MAC: the agent waits for the driver, then says what links it has.
            var absent = await Assert.ThrowsAsync<AgentException>(() => client.ConfigurePodAsync(WithNic("172.16.28.2/24")));
            Assert.Contains("FailedPrecondition: No network link has the MAC 02:00:ac:10:1c:02 (waited 2000 ms; links: lo 00:00:00:00:00:00", absent.Message);

            // --net=none: loopback only; empty hosts and resolv_conf keep their meaning.
            await client.ConfigurePodAsync(new ConfigurePodRequest { Hostname = "netpod", Hosts = "", ResolvConf = "" });
            var app = new AddAppRequest { Name = "net", RootfsPath = AppVm.BusyboxRoot };
            app.Exec.AddRange(["/bin/sleep", "3600"]);
            await client.AddAppAsync(app);
            await client.StartAppAsync("net");

            async Task<string> Exec(params string[] argv)
            {
                var start = new ExecStart { App = "net" };
                start.Argv.AddRange(argv);
                ExecResult result = await client.ExecAsync(start, timeout: Long);
                Assert.True(result.ExitCode == 0, $"{string.Join(' ', argv)}: exit {result.ExitCode}: {result.StderrText}");
                return result.StdoutText;
            }
            string lo = await Exec("ip", "addr", "show", "lo");
            output.WriteLine(lo);
            Assert.Matches("<LOOPBACK,UP,LOWER_UP>", lo);
            Assert.Contains("inet 127.0.0.1/8", lo);
            // A TCP round trip over lo inside the app's (the VM's) network namespace.
            Assert.Equal("over lo\n", await Exec("/bin/sh", "-c", "nc -l -p 7000 & sleep 0.3; echo over lo | nc 127.0.0.1 7000 >/dev/null; wait"));
            Assert.Equal("", await Exec("cat", "/etc/resolv.conf"));
            Assert.Contains("127.0.1.1\tnetpod", await Exec("cat", "/etc/hosts"));

            var late = await Assert.ThrowsAsync<AgentException>(() => client.ConfigurePodAsync(new ConfigurePodRequest()));
            Assert.Contains("FailedPrecondition", late.Message);
        }
        catch
        {
            output.WriteLine(vm.Diagnostics());
            throw;
        }
        finally
        {
            vm.Dispose();
            try { Directory.Delete(directory, true); } catch (IOException) { }
        }
    }
}

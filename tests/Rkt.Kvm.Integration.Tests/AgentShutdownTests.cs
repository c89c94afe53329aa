using Rkt.Kvm.Agent.Client;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>The agent's Shutdown call powers the VM off cleanly: the VMM exits 0.</summary>
public sealed class AgentShutdownTests
{
    [SkippableFact]
    public async Task Shutdown_powers_the_vm_off_and_the_vmm_exits_0()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var vm = await AgentVm.BootAsync(cpus: 1);
        await vm.Client.ShutdownAsync();
        Assert.Equal(0, await vm.WaitForExitAsync(TimeSpan.FromMinutes(2)));
        Assert.False(File.Exists(vm.SocketPath), "the VMM left its vsock socket behind");
    }
}

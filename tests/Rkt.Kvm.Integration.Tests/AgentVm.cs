using Rkt.Kvm.Agent.Vm;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>Boots the built artifacts: a VM whose init is the guest agent, ready to answer over vsock.</summary>
public static class AgentVm
{
    public static Task<AgentVmProcess> BootAsync(int cpus = 1, ulong memoryMiB = 256) =>
        AgentVmProcess.StartAsync(new AgentVmOptions
        {
            VmmPath = TestEnvironment.Vmm,
            CommandLine = AgentVmOptions.DefaultCommandLine(TestEnvironment.Vmlinux, TestEnvironment.AgentInitrd) with { Cpus = cpus, MemoryMiB = memoryMiB },
            ReadyTimeout = VmmProcess.BootTimeout,
        });
}

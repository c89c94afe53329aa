using Rkt.Kvm.Agent.Client;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>Boots the built artifacts: a VM whose init is the guest agent, ready to answer over vsock.</summary>
public static class AgentVm
{
    public static Task<AgentVmProcess> BootAsync(int cpus = 1, int memoryMiB = 256, IReadOnlyList<string>? extraVmmArguments = null) =>
        AgentVmProcess.StartAsync(new AgentVmOptions
        {
            VmmPath = TestEnvironment.Vmm,
            KernelPath = TestEnvironment.Vmlinux,
            InitrdPath = TestEnvironment.AgentInitrd,
            Cpus = cpus,
            MemoryMiB = memoryMiB,
            ExtraVmmArguments = extraVmmArguments ?? [],
            ReadyTimeout = VmmProcess.BootTimeout,
        });
}

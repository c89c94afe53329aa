using Rkt.Kvm.Agent.Vm;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>Boots the built artifacts: a VM whose init is the guest agent, ready to answer over vsock.</summary>
public static class AgentVm
{
    /// <param name="benchService">Whether the agent also serves the benchmark service (Echo, Sink, Source).</param>
    public static Task<AgentVmProcess> BootAsync(int cpus = 1, ulong memoryMiB = 256, bool benchService = false)
    {
        var line = AgentVmOptions.DefaultCommandLine(TestEnvironment.Vmlinux, TestEnvironment.AgentInitrd) with { Cpus = cpus, MemoryMiB = memoryMiB };
        return AgentVmProcess.StartAsync(new AgentVmOptions
        {
            VmmPath = TestEnvironment.Vmm,
            CommandLine = benchService ? AgentVmOptions.WithBenchService(line) : line,
            ReadyTimeout = VmmProcess.BootTimeout,
        });
    }
}

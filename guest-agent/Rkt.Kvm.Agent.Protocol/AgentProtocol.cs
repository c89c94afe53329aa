namespace Rkt.Kvm.Agent;

/// <summary>The fixed numbers of the agent protocol.</summary>
public static class AgentProtocol
{
    /// <summary>AF_VSOCK port the agent serves gRPC on (host side: <c>CONNECT 1024</c>).</summary>
    public const uint GrpcPort = 1024;

    /// <summary>Port the agent dials on the host (CID 2) to announce readiness; the VMM forwards it to <c>&lt;socket&gt;_1025</c>.</summary>
    public const uint ReadyPort = 1025;

    /// <summary>The host's vsock context id.</summary>
    public const uint HostCid = 2;

    /// <summary><c>VMADDR_CID_ANY</c>: listen on any CID.</summary>
    public const uint AnyCid = 0xFFFF_FFFF;

    /// <summary>The agent's service as gRPC paths name it (<c>/rkt.kvm.agent.v1.Agent/&lt;Method&gt;</c>), as generated from agent.proto.</summary>
    public const string ServiceName = "rkt.kvm.agent.v1.Agent";

    /// <summary>The benchmark service (Echo, Sink, Source) as gRPC paths name it, as generated from agent_bench.proto.</summary>
    public const string BenchServiceName = "rkt.kvm.agent.v1.AgentBench";

    /// <summary>
    /// The agent serves <see cref="BenchServiceName"/> only when this environment variable is <c>1</c>;
    /// otherwise its methods answer UNIMPLEMENTED. As PID 1 the agent has it from the VM's kernel command
    /// line (<see cref="BenchServiceKernelWord"/>: the kernel hands a <c>key=value</c> word without a dot to
    /// init's environment), which only the host writes and stage1 never fills with it, so neither a pod nor
    /// its guest can turn it on. An agent run as a host process reads its own environment.
    /// </summary>
    public const string BenchServiceVariable = "RKT_KVM_AGENT_BENCH";

    /// <summary>The kernel command-line word that boots an agent serving the benchmark service (tests, benchmarks).</summary>
    public const string BenchServiceKernelWord = BenchServiceVariable + "=1";

    /// <summary>Largest gRPC message either side accepts (the gRPC default receive limit).</summary>
    public const int MaxMessageBytes = 4 * 1024 * 1024;

    /// <summary>Largest chunk AgentBench's Source sends.</summary>
    public const int MaxSourceChunk = 1024 * 1024;

    /// <summary>Default chunk AgentBench's Source sends.</summary>
    public const int DefaultSourceChunk = 64 * 1024;

    /// <summary>The byte Source sends at stream offset <paramref name="offset"/>.</summary>
    public static byte SourceByte(ulong offset) => (byte)(offset % 251);

    /// <summary>Fills <paramref name="destination"/> with the Source pattern starting at stream offset <paramref name="offset"/>.</summary>
    public static void FillSourcePattern(Span<byte> destination, ulong offset)
    {
        int phase = (int)(offset % 251);
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = (byte)phase;
            if (++phase == 251) phase = 0;
        }
    }
}

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

    /// <summary>Full gRPC method paths, as generated from agent.proto.</summary>
    public const string ServiceName = "rkt.kvm.agent.v1.Agent";

    /// <summary>Largest gRPC message either side accepts (the gRPC default receive limit).</summary>
    public const int MaxMessageBytes = 4 * 1024 * 1024;

    /// <summary>Largest chunk Source sends.</summary>
    public const int MaxSourceChunk = 1024 * 1024;

    /// <summary>Default chunk Source sends.</summary>
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

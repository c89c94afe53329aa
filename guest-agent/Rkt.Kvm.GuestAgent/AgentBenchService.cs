using Google.Protobuf;
using Rkt.Kvm.Agent;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent;

/// <summary>
/// The benchmark service (agent_bench.proto): Echo, Sink and Source move bytes through the channel and
/// do nothing else, so bench/vsock and the channel tests measure the transport. A pod has no use for
/// them, so the agent serves them only when the host asked for them with
/// <see cref="AgentProtocol.BenchServiceVariable"/> (see there why a guest cannot); production PID 1
/// answers UNIMPLEMENTED.
/// </summary>
internal sealed class AgentBenchService
{
    /// <summary>The service when this agent's environment asks for it; null (not served) otherwise.</summary>
    public static AgentBenchService? FromEnvironment() =>
        IsRequested(Environment.GetEnvironmentVariable(AgentProtocol.BenchServiceVariable)) ? new AgentBenchService() : null;

    /// <summary>Exactly "1" turns the service on, as <see cref="AgentProtocol.BenchServiceKernelWord"/> writes it.</summary>
    public static bool IsRequested(string? value) => value == "1";

    /// <summary>Copies each request frame to the response as it arrives, unparsed.</summary>
    public async ValueTask EchoAsync(GrpcCall call)
    {
        while (await call.EchoFrameAsync()) { }
    }

    public async ValueTask<SinkReply> SinkAsync(GrpcCall call)
    {
        ulong bytes = 0, chunks = 0;
        var crc = new Crc32C();
        while (await call.ReadAsync(Chunk.Parser) is { } chunk)
        {
            crc.Append(chunk.Data.Span);
            bytes += (ulong)chunk.Data.Length;
            chunks++;
        }
        return new SinkReply { Bytes = bytes, Chunks = chunks, Crc32C = crc.Value };
    }

    public async ValueTask SourceAsync(GrpcCall call, SourceRequest request)
    {
        int chunkSize = request.ChunkSize == 0 ? AgentProtocol.DefaultSourceChunk : (int)Math.Min(request.ChunkSize, (uint)AgentProtocol.MaxSourceChunk + 1);
        if (chunkSize > AgentProtocol.MaxSourceChunk)
            throw new GrpcException(GrpcException.InvalidArgument, $"chunk_size {request.ChunkSize} exceeds the limit of {AgentProtocol.MaxSourceChunk} bytes.");
        // The pattern repeats every 251 bytes, so one buffer of chunkSize + 250 bytes serves every offset.
        byte[] pattern = new byte[chunkSize + 250];
        AgentProtocol.FillSourcePattern(pattern, 0);
        ulong sent = 0;
        while (sent < request.Bytes)
        {
            int n = (int)Math.Min((ulong)chunkSize, request.Bytes - sent);
            int phase = (int)(sent % 251);
            var chunk = new Chunk { Data = UnsafeByteOperations.UnsafeWrap(pattern.AsMemory(phase, n)) };
            await call.WriteAsync(chunk);
            sent += (ulong)n;
        }
    }
}

using Google.Protobuf;
using Rkt.Kvm.Agent;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent;

/// <summary>Figures recorded once the agent is ready.</summary>
internal sealed record ReadyFigures(ulong BootToReadyMs, ulong ProcessStartToReadyMs, ulong MainToReadyUs, ProcessStats AtReady);

/// <summary>The agent's RPC implementations (transport-agnostic; GrpcApplication does the framing).</summary>
internal sealed class AgentService(AgentMode mode)
{
    public const string Version = "0.1.0";

    private readonly TaskCompletionSource<string> _shutdown = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public AgentMode Mode => mode;

    /// <summary>The pod's apps (only as PID 1 in the VM, where the reaper hands out exit statuses).</summary>
    public Apps.AppSupervisor Apps { get; } = new(mode == AgentMode.Guest && Reaper.Started);

    public ReadyFigures? Ready { get; set; }

    /// <summary>Resume after a restore from a template snapshot: reseeds the RNG, sets the clock.</summary>
    public Resume.ResumeHandler Resumer { get; } = new(mode);

    /// <summary>Completes with the reason once someone asked the agent to power off.</summary>
    public Task<string> ShutdownRequested => _shutdown.Task;

    public void RequestShutdown(string reason) => _shutdown.TrySetResult(reason);

    public HealthReply Health() => new() { AgentVersion = Version, Mode = mode };

    public GuestInfoReply GuestInfo(GuestInfoRequest? request = null)
    {
        (ulong total, ulong available) = ProcStats.Memory();
        var reply = new GuestInfoReply
        {
            KernelRelease = Libc.KernelRelease(),
            UptimeMs = Libc.BootTimeMilliseconds(),
            OnlineCpus = (uint)Environment.ProcessorCount,
            MemTotalBytes = total,
            MemAvailableBytes = available,
            AgentVersion = Version,
            Mode = mode,
            Now = ProcStats.Capture(),
        };
        if (request?.IncludeMountinfo == true)
            reply.Mountinfo = File.ReadAllText("/proc/self/mountinfo");
        if (Ready is { } ready)
        {
            reply.BootToReadyMs = ready.BootToReadyMs;
            reply.ProcessStartToReadyMs = ready.ProcessStartToReadyMs;
            reply.MainToReadyUs = ready.MainToReadyUs;
            reply.AtReady = ready.AtReady;
        }
        return reply;
    }

    public DialHostReply DialHost(DialHostRequest request)
    {
        string? error = mode == AgentMode.Guest
            ? Vsock.SendOnce(AgentProtocol.HostCid, request.Port, request.Data.Span)
            : "DialHost needs vsock: the agent runs as a host process";
        return new DialHostReply { Connected = error is null, Error = error ?? "" };
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

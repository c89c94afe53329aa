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
}

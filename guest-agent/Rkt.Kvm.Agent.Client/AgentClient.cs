using Grpc.Core;
using Grpc.Net.Client;
using Rkt.Kvm.Agent.V1;
using AgentBenchStub = Rkt.Kvm.Agent.V1.AgentBench.AgentBenchClient;
using AgentStub = Rkt.Kvm.Agent.V1.Agent.AgentClient;

namespace Rkt.Kvm.Agent.Client;

/// <summary>Time limits of an <see cref="AgentClient"/>.</summary>
public sealed record AgentClientOptions
{
    /// <summary>vsock port of the agent's gRPC server.</summary>
    public uint Port { get; init; } = AgentProtocol.GrpcPort;

    /// <summary>Limit of one connect + CONNECT/OK handshake (the VMM waits 2 s for the guest).</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>How long to keep retrying a connection (socket missing, closed without OK, time-outs) before failing.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Pause between connection attempts.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Deadline of each unary call made through the helper methods.</summary>
    public TimeSpan CallTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// Host-side client of the guest agent: Grpc.Net.Client over HTTP/2 without TLS, dialling the VM's
/// hybrid vsock socket (<c>CONNECT 1024</c> / <c>OK n</c>) or a plain Unix socket. Failures of the helper
/// methods are <see cref="AgentException"/>s; <see cref="Stub"/> gives the generated client for streaming calls
/// (wrap those with <see cref="Translate"/> for the same exceptions).
/// </summary>
public sealed partial class AgentClient : IDisposable
{
    private readonly GrpcChannel _channel;

    public string SocketPath { get; }
    public AgentTransport Transport { get; }
    public AgentClientOptions Options { get; }

    /// <summary>The generated gRPC client (rkt.kvm.agent.v1.Agent).</summary>
    public AgentStub Stub { get; }

    /// <summary>
    /// The generated client of the benchmark service (rkt.kvm.agent.v1.AgentBench: Echo, Sink, Source), on the
    /// same channel. Only an agent started with <see cref="AgentProtocol.BenchServiceKernelWord"/> on its VM's
    /// kernel command line (a host-process agent: that variable in its environment) serves it; others answer UNIMPLEMENTED.
    /// </summary>
    public AgentBenchStub Bench { get; }

    /// <summary>The channel's call invoker, for methods this library's stubs do not know yet.</summary>
    public CallInvoker CallInvoker => _channel.CreateCallInvoker();

    public AgentClient(string socketPath, AgentTransport transport, AgentClientOptions? options = null)
    {
        SocketPath = socketPath;
        Transport = transport;
        Options = options ?? new AgentClientOptions();
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = (_, cancellation) => AgentDialer.ConnectAsync(socketPath, transport, Options.Port, Options.AttemptTimeout, Options.ConnectTimeout, Options.RetryDelay, cancellation),
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            EnableMultipleHttp2Connections = true,
        };
        _channel = GrpcChannel.ForAddress("http://rkt-kvm-agent", new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = AgentProtocol.MaxMessageBytes,
            MaxSendMessageSize = AgentProtocol.MaxMessageBytes,
        });
        Stub = new AgentStub(_channel);
        Bench = new AgentBenchStub(_channel);
    }

    /// <summary>A client for the VM whose hybrid vsock socket is <paramref name="vmSocketPath"/>.</summary>
    public static AgentClient ForVm(string vmSocketPath, AgentClientOptions? options = null) => new(vmSocketPath, AgentTransport.HybridVsock, options);

    /// <summary>A client for an agent listening on a plain Unix socket (<c>rkt-kvm-agent --listen-unix PATH</c>).</summary>
    public static AgentClient ForUnixSocket(string path, AgentClientOptions? options = null) => new(path, AgentTransport.Unix, options);

    /// <summary>Deadline for a call started now.</summary>
    /// <summary>Deadline for a call started now; none for <see cref="Timeout.InfiniteTimeSpan"/> (streams that live as long as the pod).</summary>
    public DateTime? Deadline(TimeSpan? timeout = null)
    {
        var t = timeout ?? Options.CallTimeout;
        return t == Timeout.InfiniteTimeSpan ? null : DateTime.UtcNow + t;
    }

    public Task<HealthReply> HealthAsync(CancellationToken cancellation = default) =>
        Translate(() => Stub.HealthAsync(new HealthRequest(), deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "Health");

    public Task<GuestInfoReply> GuestInfoAsync(CancellationToken cancellation = default) => GuestInfoAsync(new GuestInfoRequest(), cancellation);

    /// <summary>GuestInfo with options (e.g. include_mountinfo for diagnostics).</summary>
    public Task<GuestInfoReply> GuestInfoAsync(GuestInfoRequest request, CancellationToken cancellation = default) =>
        Translate(() => Stub.GuestInfoAsync(request, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "GuestInfo");

    /// <summary>
    /// The first call to a VM restored from a template: the agent reseeds the kernel RNG (from
    /// virtio-rng and 32 bytes of ours) and sets the wall clock to ours, so the VM stops being a
    /// clone of the template. A failure means the VM must not run apps.
    /// </summary>
    public Task<ResumeReply> ResumeAsync(CancellationToken cancellation = default)
    {
        var request = new ResumeRequest
        {
            UnixTimeNs = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100,
            Entropy = Google.Protobuf.ByteString.CopyFrom(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)),
        };
        return Translate(() => Stub.ResumeAsync(request, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "Resume");
    }

    /// <summary>Asks the agent to power the VM off (host-process agent: exit). Returns once the agent acknowledged.</summary>
    public Task ShutdownAsync(CancellationToken cancellation = default) =>
        Translate(() => Stub.ShutdownAsync(new ShutdownRequest(), deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "Shutdown");

    /// <summary>Calls Health until it answers or <paramref name="timeout"/> passes (connection failures are retried).</summary>
    public async Task<HealthReply> WaitUntilHealthyAsync(TimeSpan timeout, CancellationToken cancellation = default)
    {
        long start = Environment.TickCount64;
        while (true)
        {
            try { return await HealthAsync(cancellation).ConfigureAwait(false); }
            catch (AgentException e) when (e.Failure is AgentFailure.Unreachable or AgentFailure.Timeout && Environment.TickCount64 - start < timeout.TotalMilliseconds)
            {
                await Task.Delay(Options.RetryDelay, cancellation).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Runs a call and turns gRPC failures into <see cref="AgentException"/>s with a sentence message.</summary>
    public async Task<T> Translate<T>(Func<Task<T>> call, string method)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            throw Describe(e, method);
        }
    }

    /// <summary>The <see cref="AgentException"/> for a failed call.</summary>
    public AgentException Describe(RpcException e, string method)
    {
        for (Exception? inner = e.Status.DebugException; inner is not null; inner = inner.InnerException)
            if (inner is AgentException agent) return new AgentException(agent.Failure, $"{method}: {agent.Message}", agent);
        string where = Transport == AgentTransport.HybridVsock ? $"the agent of the VM at {SocketPath}" : $"the agent at {SocketPath}";
        return e.StatusCode switch
        {
            StatusCode.DeadlineExceeded => new AgentException(AgentFailure.Timeout, $"{method}: {where} did not answer before the call's deadline.", e),
            StatusCode.Unavailable => new AgentException(AgentFailure.Unreachable, $"{method}: lost the connection to {where}: {Innermost(e)}", e),
            StatusCode.Cancelled => new AgentException(AgentFailure.Failed, $"{method}: the call to {where} was cancelled.", e),
            StatusCode.NotFound => new AgentException(AgentFailure.NotFound, $"{method}: {where} answered NotFound: {e.Status.Detail}", e),
            _ => new AgentException(AgentFailure.Failed, $"{method}: {where} answered {e.StatusCode}: {e.Status.Detail}", e),
        };
    }

    private static string Innermost(RpcException e)
    {
        Exception? inner = e.Status.DebugException;
        while (inner?.InnerException is not null) inner = inner.InnerException;
        string text = (inner?.Message ?? e.Status.Detail).TrimEnd('.');
        return text + " (the VM or its agent has gone away).";
    }

    public void Dispose() => _channel.Dispose();
}

using System.Buffers;
using System.IO.Pipelines;
using Google.Protobuf;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http.Features;
using V1 = Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent;

/// <summary>One gRPC call's message streams, over Kestrel's request and response pipes.</summary>
internal sealed class GrpcCall(PipeReader reader, PipeWriter writer, CancellationToken cancellation)
{
    private volatile bool _readingStopped;

    public CancellationToken Cancellation => cancellation;

    /// <summary>
    /// Ends a read in progress on another task (it returns null) and every later one. A handler that reads
    /// its request stream in the background calls this, and waits for that reader, before it returns:
    /// Kestrel reuses a finished stream's request pipe for the next call, which a leftover read would steal.
    /// </summary>
    public void StopReading()
    {
        _readingStopped = true;
        reader.CancelPendingRead();
    }

    /// <summary>Reads the next request message, or null at the end of the request stream (or after <see cref="StopReading"/>).</summary>
    public async ValueTask<T?> ReadAsync<T>(MessageParser<T> parser) where T : class, IMessage<T>
    {
        while (true)
        {
            if (_readingStopped) return null;
            ReadResult result = await reader.ReadAsync(cancellation);
            if (result.IsCanceled || _readingStopped)
            {
                reader.AdvanceTo(result.Buffer.Start);
                return null;
            }
            ReadOnlySequence<byte> buffer = result.Buffer;
            if (GrpcFraming.TryReadFrame(ref buffer, Rkt.Kvm.Agent.AgentProtocol.MaxMessageBytes, out _, out ReadOnlySequence<byte> payload))
            {
                T message;
                try { message = parser.ParseFrom(payload); }
                catch (InvalidProtocolBufferException e) { throw new GrpcException(GrpcException.Internal, $"Malformed request message: {e.Message}"); }
                reader.AdvanceTo(buffer.Start);
                return message;
            }
            if (result.IsCompleted)
            {
                if (!buffer.IsEmpty) throw new GrpcException(GrpcException.Internal, "The request stream ended inside a message.");
                reader.AdvanceTo(buffer.End);
                return null;
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>Copies the next request frame unchanged to the response (no parse); false at the end of the request stream.</summary>
    public async ValueTask<bool> EchoFrameAsync()
    {
        while (true)
        {
            ReadResult result = await reader.ReadAsync(cancellation);
            ReadOnlySequence<byte> buffer = result.Buffer;
            if (GrpcFraming.TryReadFrame(ref buffer, Rkt.Kvm.Agent.AgentProtocol.MaxMessageBytes, out ReadOnlySequence<byte> frame, out _))
            {
                foreach (ReadOnlyMemory<byte> segment in frame) writer.Write(segment.Span);
                reader.AdvanceTo(buffer.Start);
                await writer.FlushAsync(cancellation);
                return true;
            }
            if (result.IsCompleted)
            {
                if (!buffer.IsEmpty) throw new GrpcException(GrpcException.Internal, "The request stream ended inside a message.");
                reader.AdvanceTo(buffer.End);
                return false;
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>Reads the single request message of a unary or server-streaming call.</summary>
    public async ValueTask<T> ReadSingleAsync<T>(MessageParser<T> parser) where T : class, IMessage<T>
    {
        T message = await ReadAsync(parser) ?? throw new GrpcException(GrpcException.Internal, "The request message is missing.");
        if (await ReadAsync(parser) is not null) throw new GrpcException(GrpcException.Internal, "More than one request message for a unary call.");
        return message;
    }

    /// <summary>Sends the response headers now (server streams that may stay silent a while).</summary>
    public ValueTask<FlushResult> FlushAsync() => writer.FlushAsync(cancellation);

    public ValueTask<FlushResult> WriteAsync(IMessage message)
    {
        GrpcFraming.WriteMessage(writer, message);
        return writer.FlushAsync(cancellation);
    }
}

/// <summary>
/// Kestrel application that serves the agent's gRPC methods with hand-written framing: the Agent service
/// always, the AgentBench service only when <paramref name="bench"/> is given (see <see cref="AgentBenchService"/>).
/// </summary>
internal sealed class GrpcApplication(AgentService service, AgentBenchService? bench) : IHttpApplication<IFeatureCollection>
{
    private const string AgentPrefix = "/" + Rkt.Kvm.Agent.AgentProtocol.ServiceName + "/";
    private const string BenchPrefix = "/" + Rkt.Kvm.Agent.AgentProtocol.BenchServiceName + "/";

    public IFeatureCollection CreateContext(IFeatureCollection contextFeatures) => contextFeatures;

    public void DisposeContext(IFeatureCollection context, Exception? exception) { }

    public async Task ProcessRequestAsync(IFeatureCollection features)
    {
        var request = features.GetRequiredFeature<IHttpRequestFeature>();
        var response = features.GetRequiredFeature<IHttpResponseFeature>();
        var body = features.GetRequiredFeature<IHttpResponseBodyFeature>();
        var trailers = features.GetRequiredFeature<IHttpResponseTrailersFeature>();
        var lifetime = features.GetRequiredFeature<IHttpRequestLifetimeFeature>();
        var reader = features.GetRequiredFeature<IRequestBodyPipeFeature>().Reader;

        string contentType = request.Headers.ContentType.ToString();
        if (request.Method != "POST" || !contentType.StartsWith("application/grpc", StringComparison.Ordinal) || contentType.StartsWith("application/grpc-web", StringComparison.Ordinal))
        {
            response.StatusCode = 415;
            return;
        }
        response.StatusCode = 200;
        response.Headers.ContentType = "application/grpc";

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(lifetime.RequestAborted);
        if (GrpcFraming.ParseTimeout(request.Headers["grpc-timeout"].ToString()) is TimeSpan timeout)
            deadline.CancelAfter(timeout);
        var call = new GrpcCall(reader, body.Writer, deadline.Token);

        int status = 0;
        string? message = null;
        try
        {
            await DispatchAsync(request.Path, call, response);
        }
        catch (GrpcException e) { (status, message) = (e.Status, e.Message); }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            (status, message) = lifetime.RequestAborted.IsCancellationRequested
                ? (GrpcException.Cancelled, "The call was cancelled.")
                : (GrpcException.DeadlineExceeded, "The call's deadline passed.");
        }
        catch (Exception e) { (status, message) = (GrpcException.Internal, $"{e.GetType().Name}: {e.Message}"); }

        trailers.Trailers["grpc-status"] = status == 0 ? "0" : status.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (message is not null) trailers.Trailers["grpc-message"] = GrpcFraming.PercentEncode(message);
    }

    private async Task DispatchAsync(string path, GrpcCall call, IHttpResponseFeature response)
    {
        if (path.StartsWith(AgentPrefix, StringComparison.Ordinal))
            await DispatchAgentAsync(path, call, response);
        else if (path.StartsWith(BenchPrefix, StringComparison.Ordinal))
            await DispatchBenchAsync(path, call);
        else
            throw NotImplemented(path);
    }

    private static GrpcException NotImplemented(string path, string? why = null) =>
        new(GrpcException.Unimplemented, $"Method '{path}' is not implemented by this agent{why}.");

    private async Task DispatchBenchAsync(string path, GrpcCall call)
    {
        if (bench is null)
            throw NotImplemented(path, $" (the benchmark service needs {Rkt.Kvm.Agent.AgentProtocol.BenchServiceKernelWord} on the VM's kernel command line, or in a host-process agent's environment)");
        switch (path[BenchPrefix.Length..])
        {
            case "Echo":
                await bench.EchoAsync(call);
                break;
            case "Sink":
                await call.WriteAsync(await bench.SinkAsync(call));
                break;
            case "Source":
                await bench.SourceAsync(call, await call.ReadSingleAsync(V1.SourceRequest.Parser));
                break;
            default:
                throw NotImplemented(path);
        }
    }

    private async Task DispatchAgentAsync(string path, GrpcCall call, IHttpResponseFeature response)
    {
        switch (path[AgentPrefix.Length..])
        {
            case "Health":
                await call.ReadSingleAsync(Rkt.Kvm.Agent.V1.HealthRequest.Parser);
                await call.WriteAsync(service.Health());
                break;
            case "GuestInfo":
                var info = await call.ReadSingleAsync(Rkt.Kvm.Agent.V1.GuestInfoRequest.Parser);
                await call.WriteAsync(service.GuestInfo(info));
                break;
            case "DialHost":
                var dial = await call.ReadSingleAsync(Rkt.Kvm.Agent.V1.DialHostRequest.Parser);
                await call.WriteAsync(service.DialHost(dial));
                break;
            case "Resume":
                await call.WriteAsync(service.Resumer.Resume(await call.ReadSingleAsync(V1.ResumeRequest.Parser)));
                break;
            case "Shutdown":
                await call.ReadSingleAsync(Rkt.Kvm.Agent.V1.ShutdownRequest.Parser);
                await call.WriteAsync(new Rkt.Kvm.Agent.V1.ShutdownReply());
                // Power off only once the reply and its trailers are on their way.
                response.OnCompleted(static state => { ((AgentService)state).RequestShutdown("Shutdown RPC"); return Task.CompletedTask; }, service);
                break;
            case "ConfigurePod":
                await call.WriteAsync(service.Apps.ConfigurePod(await call.ReadSingleAsync(V1.ConfigurePodRequest.Parser)));
                break;
            case "AddApp":
                await call.WriteAsync(service.Apps.AddApp(await call.ReadSingleAsync(V1.AddAppRequest.Parser)));
                break;
            case "StartApp":
                await call.WriteAsync(await service.Apps.StartAppAsync(await call.ReadSingleAsync(V1.StartAppRequest.Parser)));
                break;
            case "StopApp":
                await call.WriteAsync(await service.Apps.StopAppAsync(await call.ReadSingleAsync(V1.StopAppRequest.Parser), call.Cancellation));
                break;
            case "RemoveApp":
                await call.WriteAsync(await service.Apps.RemoveAppAsync(await call.ReadSingleAsync(V1.RemoveAppRequest.Parser)));
                break;
            case "AppStatus":
                await call.WriteAsync(service.Apps.AppStatus(await call.ReadSingleAsync(V1.AppStatusRequest.Parser)));
                break;
            case "ListApps":
                await call.ReadSingleAsync(V1.ListAppsRequest.Parser);
                await call.WriteAsync(service.Apps.ListApps());
                break;
            case "WaitApp":
                await call.WriteAsync(await service.Apps.WaitAppAsync(await call.ReadSingleAsync(V1.WaitAppRequest.Parser), call.Cancellation));
                break;
            case "Events":
                await call.ReadSingleAsync(V1.EventsRequest.Parser);
                await service.Apps.EventsAsync(call);
                break;
            case "Logs":
                await service.Apps.LogsAsync(call, await call.ReadSingleAsync(V1.LogsRequest.Parser));
                break;
            case "Exec":
                await service.Apps.ExecAsync(call);
                break;
            case "Attach":
                await service.Apps.AttachAsync(call);
                break;
            case "Signal":
                await call.WriteAsync(service.Apps.Signal(await call.ReadSingleAsync(V1.SignalRequest.Parser)));
                break;
            default:
                throw NotImplemented(path);
        }
    }
}

using System.Runtime.CompilerServices;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.Agent.Client;

/// <summary>What an Exec produced: its output and how it ended.</summary>
public sealed record ExecResult(byte[] Stdout, byte[] Stderr, int ExitCode, int Signal)
{
    public string StdoutText => Encoding.UTF8.GetString(Stdout);
    public string StderrText => Encoding.UTF8.GetString(Stderr);
}

/// <summary>The app lifecycle (agent.proto: ConfigurePod … Signal). Unary helpers use <see cref="AgentClientOptions.CallTimeout"/>
/// unless a timeout is given; failures are <see cref="AgentException"/>s whose message carries the agent's sentence.</summary>
public sealed partial class AgentClient
{
    public Task<ConfigurePodReply> ConfigurePodAsync(ConfigurePodRequest request, CancellationToken cancellation = default) =>
        Translate(() => Stub.ConfigurePodAsync(request, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "ConfigurePod");

    public async Task<AppInfo> AddAppAsync(AddAppRequest request, CancellationToken cancellation = default) =>
        (await Translate(() => Stub.AddAppAsync(request, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "AddApp").ConfigureAwait(false)).App;

    public async Task<AppInfo> StartAppAsync(string name, CancellationToken cancellation = default) =>
        (await Translate(() => Stub.StartAppAsync(new StartAppRequest { Name = name }, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "StartApp").ConfigureAwait(false)).App;

    /// <summary>Signals the app (default SIGTERM), SIGKILLs it after <paramref name="gracePeriod"/> (default 10 s); returns its final status.</summary>
    public async Task<AppInfo> StopAppAsync(string name, TimeSpan? gracePeriod = null, int signal = 0, CancellationToken cancellation = default)
    {
        var grace = gracePeriod ?? TimeSpan.FromSeconds(10);
        var request = new StopAppRequest { Name = name, Signal = signal, GracePeriodMs = (uint)Math.Max(1, grace.TotalMilliseconds) };
        return (await Translate(() => Stub.StopAppAsync(request, deadline: Deadline(grace + Options.CallTimeout), cancellationToken: cancellation).ResponseAsync, "StopApp").ConfigureAwait(false)).App;
    }

    public Task RemoveAppAsync(string name, CancellationToken cancellation = default) =>
        Translate(() => Stub.RemoveAppAsync(new RemoveAppRequest { Name = name }, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "RemoveApp");

    public async Task<AppInfo> AppStatusAsync(string name, CancellationToken cancellation = default) =>
        (await Translate(() => Stub.AppStatusAsync(new AppStatusRequest { Name = name }, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "AppStatus").ConfigureAwait(false)).App;

    public async Task<IReadOnlyList<AppInfo>> ListAppsAsync(CancellationToken cancellation = default) =>
        (await Translate(() => Stub.ListAppsAsync(new ListAppsRequest(), deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "ListApps").ConfigureAwait(false)).Apps;

    /// <summary>Waits until the app has exited, at most <paramref name="timeout"/>.</summary>
    public async Task<AppInfo> WaitAppAsync(string name, TimeSpan timeout, CancellationToken cancellation = default) =>
        (await Translate(() => Stub.WaitAppAsync(new WaitAppRequest { Name = name }, deadline: Deadline(timeout), cancellationToken: cancellation).ResponseAsync, "WaitApp").ConfigureAwait(false)).App;

    public Task SignalAsync(string name, int signal, CancellationToken cancellation = default) =>
        Translate(() => Stub.SignalAsync(new SignalRequest { Name = name, Signal = signal }, deadline: Deadline(), cancellationToken: cancellation).ResponseAsync, "Signal");

    /// <summary>The app's log records; with <paramref name="follow"/> until the app exited and its output drained (or <paramref name="timeout"/>).</summary>
    public async IAsyncEnumerable<LogsReply> LogsAsync(string name, bool follow, TimeSpan timeout, ulong sinceSequence = 0, [EnumeratorCancellation] CancellationToken cancellation = default)
    {
        using var call = Stub.Logs(new LogsRequest { Name = name, Follow = follow, SinceSequence = sinceSequence }, deadline: Deadline(timeout), cancellationToken: cancellation);
        while (true)
        {
            LogsReply record;
            try
            {
                if (!await call.ResponseStream.MoveNext(cancellation).ConfigureAwait(false)) yield break;
                record = call.ResponseStream.Current;
            }
            catch (RpcException e) { throw Describe(e, "Logs"); }
            yield return record;
        }
    }

    /// <summary>Subscribes to app events; the returned call has its headers in, so no later event is missed.</summary>
    public async Task<AsyncServerStreamingCall<EventsReply>> EventsAsync(TimeSpan timeout, CancellationToken cancellation = default)
    {
        var call = Stub.Events(new EventsRequest(), deadline: Deadline(timeout), cancellationToken: cancellation);
        try { await call.ResponseHeadersAsync.ConfigureAwait(false); }
        catch (RpcException e) { call.Dispose(); throw Describe(e, "Events"); }
        return call;
    }

    /// <summary>Runs <paramref name="start"/> in its app, feeds it <paramref name="stdin"/> (then closes stdin), collects its output and exit.</summary>
    public async Task<ExecResult> ExecAsync(ExecStart start, byte[]? stdin = null, TimeSpan? timeout = null, CancellationToken cancellation = default)
    {
        using var stream = await StartExecAsync(start, timeout, cancellation).ConfigureAwait(false);
        for (int offset = 0; offset < (stdin?.Length ?? 0); offset += 64 << 10)
            await stream.WriteAsync(stdin.AsMemory(offset, Math.Min(64 << 10, stdin!.Length - offset))).ConfigureAwait(false);
        await stream.CloseStdinAsync().ConfigureAwait(false);
        await stream.CompleteInputAsync().ConfigureAwait(false);
        var stdout = new MemoryStream();
        var stderr = new MemoryStream();
        var exit = await stream.CopyOutputAsync(stdout, stderr, cancellation).ConfigureAwait(false);
        return new ExecResult(stdout.ToArray(), stderr.ToArray(), exit.ExitCode, exit.Signal);
    }

    /// <summary>Starts an Exec whose input and output flow while it runs (a terminal session with <c>start.Tty</c>);
    /// the call lasts until the process has exited, at most <paramref name="timeout"/>.</summary>
    public async Task<ProcessStream> StartExecAsync(ExecStart start, TimeSpan? timeout = null, CancellationToken cancellation = default)
    {
        var call = Stub.Exec(deadline: Deadline(timeout), cancellationToken: cancellation);
        try { await call.RequestStream.WriteAsync(new ExecRequest { Start = start }).ConfigureAwait(false); }
        catch (RpcException e) { call.Dispose(); throw Describe(e, "Exec"); }
        return new CallStream<ExecRequest>(this, call, "Exec", (kind, data, size) => kind switch
        {
            ProcessStream.InputKind.Stdin => new ExecRequest { Stdin = data },
            ProcessStream.InputKind.StdinClose => new ExecRequest { StdinClose = true },
            _ => new ExecRequest { Resize = size },
        });
    }

    /// <summary>Joins a started app's streams (Attach): its output from <paramref name="start"/>'s point on, then its exit;
    /// input goes to its stdin or terminal.</summary>
    public async Task<ProcessStream> AttachAsync(AttachStart start, TimeSpan? timeout = null, CancellationToken cancellation = default)
    {
        var call = Stub.Attach(deadline: Deadline(timeout), cancellationToken: cancellation);
        try { await call.RequestStream.WriteAsync(new AttachRequest { Start = start }).ConfigureAwait(false); }
        catch (RpcException e) { call.Dispose(); throw Describe(e, "Attach"); }
        return new CallStream<AttachRequest>(this, call, "Attach", (kind, data, size) => kind switch
        {
            ProcessStream.InputKind.Stdin => new AttachRequest { Stdin = data },
            ProcessStream.InputKind.StdinClose => new AttachRequest { StdinClose = true },
            _ => new AttachRequest { Resize = size },
        });
    }
}

using System.Text;
using Grpc.Core;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.Stage1.Entrypoints.Supervision;

/// <summary>
/// The part of a pod's life that talks to the guest's agent, run by <c>rkt-kvm-stage1 supervise</c>
/// as the pod's own unprivileged user (<see cref="SupervisorEntrypoint"/>): configures the pod,
/// adds and starts an immutable pod's apps, then follows them: each exit is reported to run at
/// once, each app's output goes to <c>stage1-kvm/logs/&lt;app&gt;.log</c> and to our stdout. An
/// immutable pod ends when all its apps have exited; a mutable one when stopped (run's stop notice, or
/// SIGTERM/SIGINT). Result: the first failed app's code in manifest order, else 0; 1 when the VM itself died.
/// </summary>
internal sealed class PodSupervisor
{
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(10);
    /// <summary>No deadline: the events and log streams live as long as the pod.</summary>
    private static readonly TimeSpan Forever = Timeout.InfiniteTimeSpan;

    private readonly SupervisorPlan _plan;
    private readonly SupervisorReporter _report;
    private readonly Func<string, string> _appLog;
    private readonly Task<string> _vmExited;
    private readonly CancellationToken _stop;
    private readonly Dictionary<string, AppInfo> _exited = [];
    private readonly Dictionary<string, Task> _logFollowers = [];
    private readonly Lock _lock = new();
    private readonly TaskCompletionSource _allExited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _ending;
    private Task<int>? _interactive;

    /// <param name="appLog">Where an app's log file is, by app name.</param>
    /// <param name="vmExited">Completes, with how, when the VM's VMM has exited (or run is gone).</param>
    public PodSupervisor(SupervisorPlan plan, SupervisorReporter report, Func<string, string> appLog, Task<string> vmExited, CancellationToken stop)
    {
        _plan = plan;
        _report = report;
        _appLog = appLog;
        _vmExited = vmExited;
        _stop = stop;
    }

    public async Task<int> RunAsync(AgentClient agent)
    {
        try
        {
            return await SuperviseAsync(agent);
        }
        finally
        {
            if (!_vmExited.IsCompleted) await ShutdownAsync(agent);
        }
    }

    private async Task<int> SuperviseAsync(AgentClient agent)
    {
        if (Environment.GetEnvironmentVariable("RKT_KVM_TIMELINE_GUEST") == "1")
        {
            // bench/pod: the agent's own start-up, to split the guest's boot into kernel and agent.
            var info = await agent.Stub.GuestInfoAsync(new GuestInfoRequest(), deadline: DateTime.UtcNow.AddSeconds(30));
            _report.Timeline("agent-process-start-to-ready-ms", info.ProcessStartToReadyMs);
        }
        await agent.ConfigurePodAsync(_plan.Configure);
        _report.Mark("pod-configured");
        // Subscribe before any app starts, so no exit can be missed.
        using var events = await agent.EventsAsync(Forever);
        var eventLoop = FollowEventsAsync(agent, events.ResponseStream);

        if (!_plan.Mutable)
        {
            foreach (var request in _plan.Apps) await agent.AddAppAsync(request);
            _report.Mark("apps-added");
            foreach (var request in _plan.Apps)
            {
                await agent.StartAppAsync(request.Name);
                // run set the app's terminal (or stdin) from our stdio; the user's session relays it.
                if (request.Name == _plan.InteractiveApp) _interactive = RelayInteractiveAsync(agent, request.Name, Terminal.StdioMode.Auto(stdin: true));
            }
            _report.Mark("apps-started");
            if (_plan.Apps.Count == 0) _allExited.TrySetResult();
        }
        _report.Send(new SupervisorReport.Ready());
        RunEntrypoint.Log("pod ready");

        var stopRequested = Task.Delay(Timeout.Infinite, _stop).ContinueWith(_ => { }, TaskScheduler.Default);
        var finished = await Task.WhenAny(_plan.Mutable ? Task.Delay(Timeout.Infinite) : _allExited.Task, _vmExited, stopRequested);
        if (finished == _vmExited)
        {
            RunEntrypoint.Log($"the VM ended unexpectedly ({await _vmExited})");
            return 1;
        }
        bool stoppedOnRequest = finished == stopRequested;
        if (stoppedOnRequest)
        {
            RunEntrypoint.Log("stopping the pod's apps");
            await StopAllAsync(agent);
        }
        // Let every log follower (and the user's session) drain what the apps wrote before the VM goes.
        _report.Mark("apps-done");
        Task[] followers;
        lock (_lock) followers = [.. _logFollowers.Values, .. _interactive is null ? Array.Empty<Task>() : [_interactive]];
        await Task.WhenAny(Task.WhenAll(followers), Task.Delay(TimeSpan.FromSeconds(10)));
        _ending = true; // the event stream is disposed next
        _ = eventLoop;
        // A pod stopped on request succeeded; otherwise the apps' results decide.
        return stoppedOnRequest ? 0 : ResultCode();
    }

    /// <summary>Reports each app's exit the moment the agent does, and follows the logs of started apps.</summary>
    private async Task FollowEventsAsync(AgentClient agent, IAsyncStreamReader<EventsReply> stream)
    {
        try
        {
            while (await stream.MoveNext(CancellationToken.None))
            {
                var e = stream.Current;
                if (e.Type == AppEventType.AppEventStarted)
                {
                    lock (_lock) _logFollowers[e.App.Name] = FollowLogsAsync(agent, e.App.Name);
                }
                else if (e.Type == AppEventType.AppEventExited)
                {
                    _report.Send(new SupervisorReport.AppExited(e.App.Name, PodApps.ExitCode(e.App)));
                    RunEntrypoint.Log($"app {e.App.Name} {PodApps.Describe(e.App)}");
                    lock (_lock)
                    {
                        _exited[e.App.Name] = e.App;
                        if (!_plan.Mutable && _plan.Apps.All(a => _exited.ContainsKey(a.Name))) _allExited.TrySetResult();
                    }
                }
            }
        }
        catch (Exception e) when (e is RpcException or AgentException or IOException)
        {
            // The VM went away (run tells us), or the stream broke: say so.
            if (!_ending && !_stop.IsCancellationRequested) RunEntrypoint.Log($"lost the agent's event stream: {e.Message.Split('\n')[0]}");
        }
    }

    /// <summary>Attaches our stdio to the interactive app from its first output byte; the pod ends with the app.</summary>
    private static async Task<int> RelayInteractiveAsync(AgentClient agent, string app, Terminal.StdioMode mode)
    {
        try
        {
            using var stream = await agent.AttachAsync(new AttachStart { Name = app, SinceSequence = 1 }, Forever);
            return await Terminal.StdioRelay.RunAsync(stream, mode);
        }
        catch (Exception e) when (e is RpcException or AgentException or IOException)
        {
            RunEntrypoint.Log($"lost the interactive session with app {app}: {e.Message.Split('\n')[0]}");
            return 1;
        }
    }

    private async Task FollowLogsAsync(AgentClient agent, string app)
    {
        bool echo = app != _plan.InteractiveApp; // the interactive app's output reaches the user through its session
        var stdout = Console.OpenStandardOutput();
        var prefix = Encoding.UTF8.GetBytes($"[{app}] ");
        bool atLineStart = true;
        try
        {
            await using var log = new FileStream(_appLog(app), FileMode.Append, FileAccess.Write, FileShare.Read);
            await foreach (var record in agent.LogsAsync(app, follow: true, Forever))
            {
                var data = record.Data.Memory;
                await log.WriteAsync(data);
                await log.FlushAsync();
                // Our stdout: each line prefixed with the app's name, as one write per record.
                var shown = new MemoryStream();
                foreach (var b in data.Span)
                {
                    if (atLineStart) shown.Write(prefix);
                    shown.WriteByte(b);
                    atLineStart = b == '\n';
                }
                if (echo) lock (_lock) stdout.Write(shown.GetBuffer(), 0, (int)shown.Length);
            }
        }
        catch (Exception e) when (e is RpcException or AgentException or IOException or UnauthorizedAccessException) { }
    }

    private static async Task StopAllAsync(AgentClient agent)
    {
        var running = (await agent.ListAppsAsync()).Where(a => a.State == AppState.Running).ToList();
        await Task.WhenAll(running.Select(a => agent.StopAppAsync(a.Name, StopGrace)));
    }

    /// <summary>Asks the guest to power off and waits for run to say the VMM is gone; run kills a VM that does not go.</summary>
    private async Task ShutdownAsync(AgentClient agent)
    {
        try
        {
            await agent.Stub.ShutdownAsync(new ShutdownRequest(), deadline: DateTime.UtcNow.AddSeconds(10));
            await _vmExited.WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (Exception e) when (e is RpcException or AgentException or IOException or TimeoutException)
        {
            RunEntrypoint.Log($"the VM did not power off cleanly ({e.Message.Split('\n')[0]}); killing it");
        }
    }

    /// <summary>The first failed app's code in manifest order; apps that never reported count as 1 (the pod failed).</summary>
    private int ResultCode()
    {
        lock (_lock)
        {
            foreach (var app in _plan.Apps)
            {
                if (!_exited.TryGetValue(app.Name, out var info)) { if (!_plan.Mutable) return 1; continue; }
                int code = PodApps.ExitCode(info);
                if (code != 0) return code;
            }
        }
        return 0;
    }
}

/// <summary>The supervisor's end of the report pipe: one line per report, written whole.</summary>
internal sealed class SupervisorReporter(Stream pipe)
{
    private readonly Lock _lock = new();

    public void Mark(string name) => Timeline(name, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    public void Timeline(string name, double value) => Send(new SupervisorReport.TimelineEntry(name, value));

    public void Send(SupervisorReport report)
    {
        var line = Encoding.UTF8.GetBytes(report.Format());
        lock (_lock)
        {
            pipe.Write(line);
            pipe.Flush();
        }
    }
}

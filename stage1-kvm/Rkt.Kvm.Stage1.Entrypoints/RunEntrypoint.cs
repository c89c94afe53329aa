using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Grpc.Core;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Agent.Vm;
using Rkt.Kvm.Stage1.Entrypoints;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Networking;
using Rkt.Kvm.Stage1.Pods;
using Rkt.Kvm.Stage1.Runtime;
using Rkt.Kvm.Stage1.Sizing;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// <c>run</c>: one VM per pod. Sizes the VM from the isolators, starts the VMM with the pod's
/// exports, waits for the agent's READY, adds and starts the apps (immutable pods), marks the
/// supervisor ready, then follows the apps: each exit is written to <c>rkt/status/&lt;app&gt;</c> at
/// once, each app's output goes to <c>stage1-kvm/logs/&lt;app&gt;.log</c> and to our stdout. An
/// immutable pod ends when all its apps have exited; a mutable one when stopped (SIGTERM, which
/// `stop` sends). Exit status: the first failed app's code in manifest order, else 0; 1 when the
/// VM itself died. The pod lock (RKT_LOCK_FD) is held by this process until it exits.
/// </summary>
public sealed class RunEntrypoint
{
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(10);
    /// <summary>How much of a failed VM's diagnostics a failed start prints.</summary>
    private const int DiagnosticLines = 15;
    /// <summary>No deadline: the events and log streams live as long as the pod.</summary>
    private static readonly TimeSpan Forever = Timeout.InfiniteTimeSpan;

    private readonly RunArguments _args;
    private readonly Stage1Files _files;
    private readonly PodManifest _pod;
    private readonly Dictionary<string, AppInfo> _exited = [];
    private readonly Dictionary<string, Task> _logFollowers = [];
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _allExited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Timeline _timeline;
    /// <summary>The VM was restored from a template (its NICs have the template's MACs).</summary>
    private bool _restored;
    private volatile bool _ending;
    private PodNetworkSetup? _network;
    private Runtime.PodCgroup? _cgroup;
    /// <summary>run --interactive: the app whose streams are the user's, and the session relaying them.</summary>
    private string? _interactiveApp;
    private Task<int>? _interactive;

    private RunEntrypoint(RunArguments args, Stage1Files files, PodManifest pod)
    {
        _args = args;
        _files = files;
        _pod = pod;
        _timeline = new Timeline(Path.Join(files.StateDir, "timeline"));
    }

    public static int Execute(string[] argv)
    {
        var args = RunArguments.Parse(argv);
        using var podLock = PodLock.FromEnvironment(); // held (close-on-exec) until we exit
        var files = Stage1Files.ForCurrentPod();
        if (files.Uuid != args.Uuid) throw new Stage1Exception($"run: the UUID argument {args.Uuid} is not this pod's ({files.Uuid})");
        var pod = PodManifest.Load(files.Pod.Manifest);
        if (args.Mutable && !pod.Mutable) throw new Stage1Exception("run: --mutable was given but the pod manifest says the pod is immutable");
        Stage1Files.RequireVmParts();
        return new RunEntrypoint(args, files, pod).RunAsync().GetAwaiter().GetResult();
    }

    private async Task<int> RunAsync()
    {
        Directory.CreateDirectory(_files.StateDir);
        Directory.CreateDirectory(_files.LogsDir);
        Directory.CreateDirectory(_files.RuntimeDir);
        // Which pods directory this runtime directory serves: gc of that data dir removes it once the pod is gone.
        File.WriteAllText(Path.Join(_files.RuntimeDir, Runtime.PodRuntime.OwnerFile), Runtime.PodRuntime.PodsRootOf(_files.Pod.Path) + "\n");
        File.WriteAllText(_files.RuntimeDirRecord, _files.RuntimeDir + "\n");
        File.WriteAllText(_files.RunPid, $"{Environment.ProcessId}\n");
        _timeline.Write("stage1-process-start", new DateTimeOffset(System.Diagnostics.Process.GetCurrentProcess().StartTime.ToUniversalTime()).ToUnixTimeMilliseconds());
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; _stop.Cancel(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; _stop.Cancel(); });

        var size = VmSize.For(_pod, Environment.ProcessorCount);
        // The pod's cgroup, joined before anything is started: the VMM is born inside its limits.
        try
        {
            _cgroup = Runtime.PodCgroup.Create(_files.Uuid, (ulong)size.MemoryMiB, _files.CgroupRecord, Path.Join(_files.RuntimeDir, Runtime.PodCgroup.RecordFileName));
            _cgroup.Join(Environment.ProcessId);
            // Only with --debug: a pod that fails before its VM (a bad network) says one line, its reason.
            if (_args.Debug) Log(_cgroup.Describe());
        }
        catch (IOException e)
        {
            Log($"no cgroup for the pod ({e.Message}); its VMM runs without memory and task limits");
        }
        var exports = PodApps.Exports(_files, _pod).Select(e => new P9ExportSpec(e.Key, e.Value.Path, e.Value.ReadOnly)).ToList();

        var network = new PodNetwork(_files.Pod, _files.Uuid, CniPlugin.FromEnvironment());
        if (_args.Networks.None && _pod.Ports.Count > 0) throw new Stage1Exception("--port needs a network: the pod was started with --net=none");
        if (!_args.Networks.None)
        {
            _timeline.Mark("network-setup");
            _network = network.Setup(_args.Networks, _args.LocalConfig, _pod.ForwardedPorts());
            _timeline.Mark("network-ready");
            Log($"networks: {NetInfo.Describe(_network.NetInfo)}");
        }

        Log($"starting the VM: {size.Vcpus} vCPU, {size.MemoryMiB} MiB, {_pod.Apps.Count} app(s)");
        AgentVmProcess vm;
        var starter = new PodVmStarter(_files, _timeline, Log);
        try
        {
            vm = await starter.StartAsync(AgentVmOptions.DefaultCommandLine(Stage1Files.Kernel, Stage1Files.Initrd) with
            {
                Cpus = size.Vcpus,
                MemoryMiB = (ulong)size.MemoryMiB,
                ConsoleLog = _files.ConsoleLog,
                Control = _files.ControlSocket,
                Exports = exports,
                Net = _network?.Nics.Select(n => new NetDeviceSpec { Tap = n.Tap, Netns = n.Netns, Mac = n.Mac, Mtu = n.Mtu }).ToList() ?? [],
                Quiet = !_args.Debug,
                User = Runtime.PodVmmUser.For(_files.Uuid),
            }, _stop.Token);
            _restored = starter.Restored;
        }
        catch (AgentException e)
        {
            // rkt-kvm removes a pod that never started, console log included: what the VM and VMM said last goes to stderr now.
            Log($"the last of the VM's console and the VMM's log:\n{Tail(e.Message, DiagnosticLines)}");
            CleanRuntimeDir();
            TeardownNetwork(network);
            _cgroup?.Leave();
            throw new Stage1Exception($"the pod's VM did not start: {e.Message.Split('\n')[0]} (console: {_files.ConsoleLog})", e);
        }
        using (vm)
        {
            _timeline.Mark("agent-ready");
            if (!_restored) _timeline.Write("guest-boot-to-ready-ms", vm.Ready.MillisecondsSinceBoot); // a restored agent was ready long ago
            _files.Pod.WritePid(vm.Pid);
            try
            {
                return await SuperviseAsync(vm);
            }
            finally
            {
                if (!vm.HasExited) await ShutdownAsync(vm);
                _timeline.Mark("vm-off");
                CleanRuntimeDir();
                TeardownNetwork(network);
                _cgroup?.Leave();
            }
        }
    }

    private async Task<int> SuperviseAsync(AgentVmProcess vm)
    {
        var agent = vm.Client;
        if (Environment.GetEnvironmentVariable("RKT_KVM_TIMELINE_GUEST") == "1")
        {
            // bench/pod: the agent's own start-up, to split the guest's boot into kernel and agent.
            var info = await agent.Stub.GuestInfoAsync(new GuestInfoRequest(), deadline: DateTime.UtcNow.AddSeconds(30));
            _timeline.Write("agent-process-start-to-ready-ms", info.ProcessStartToReadyMs);
        }
        await agent.ConfigurePodAsync(ConfigurePodRequest());
        _timeline.Mark("pod-configured");
        // Subscribe before any app starts, so no exit can be missed.
        using var events = await agent.EventsAsync(Forever);
        var eventLoop = FollowEventsAsync(agent, events.ResponseStream);

        if (!_pod.Mutable)
        {
            Terminal.StdioMode? interactive = null;
            foreach (var app in _pod.Apps)
            {
                var request = PodApps.AddAppRequest(_files, _pod, app);
                if (IsInteractive(app))
                {
                    // The user's terminal, when we have one, becomes the app's own terminal's other end.
                    interactive = Terminal.StdioMode.Auto(stdin: true);
                    _interactiveApp = app.Name;
                    if (interactive.Tty)
                    {
                        request.Tty = true;
                        request.Stdin = false;
                        request.TerminalSize = Terminal.RawTerminal.CurrentSize();
                    }
                }
                if (!File.Exists(_files.Pod.AppEnv(app.Name))) _files.Pod.WriteEnvironment(app.Name, app.App!.Environment);
                await agent.AddAppAsync(request);
            }
            _timeline.Mark("apps-added");
            foreach (var app in _pod.Apps)
            {
                await agent.StartAppAsync(app.Name);
                if (app.Name == _interactiveApp) _interactive = RelayInteractiveAsync(agent, app.Name, interactive!);
            }
            _timeline.Mark("apps-started");
            if (_pod.Apps.Count == 0) _allExited.TrySetResult();
        }
        _files.Pod.MarkSupervisorReady();
        NotifyReady();
        Log("pod ready");

        var vmExit = vm.WaitForExitAsync(Timeout.InfiniteTimeSpan);
        var stopRequested = Task.Delay(Timeout.Infinite, _stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
        var finished = await Task.WhenAny(_pod.Mutable ? Task.Delay(Timeout.Infinite) : _allExited.Task, vmExit, stopRequested);
        if (finished == vmExit)
        {
            Log($"the VM ended unexpectedly (VMM {Rkt.Kvm.Vmm.Client.VmmExit.Describe(await vmExit)}); console: {_files.ConsoleLog}");
            return 1;
        }
        bool stoppedOnRequest = finished == stopRequested;
        if (stoppedOnRequest)
        {
            Log("stopping the pod's apps");
            await StopAllAsync(agent);
        }
        // Let every log follower (and the user's session) drain what the apps wrote before the VM goes.
        _timeline.Mark("apps-done");
        Task[] followers;
        lock (_lock) followers = [.. _logFollowers.Values, .. _interactive is null ? Array.Empty<Task>() : [_interactive]];
        await Task.WhenAny(Task.WhenAll(followers), Task.Delay(TimeSpan.FromSeconds(10)));
        _ending = true; // the event stream is disposed next
        _ = eventLoop;
        // A pod stopped on request succeeded; otherwise the apps' results decide.
        return stoppedOnRequest ? 0 : ResultCode();
    }

    /// <summary>Writes each app's exit status the moment the agent reports it, and follows the logs of started apps.</summary>
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
                    _files.Pod.WriteExitStatus(e.App.Name, PodApps.ExitCode(e.App));
                    Log($"app {e.App.Name} {PodApps.Describe(e.App)}");
                    lock (_lock)
                    {
                        _exited[e.App.Name] = e.App;
                        if (!_pod.Mutable && _pod.Apps.All(a => _exited.ContainsKey(a.Name))) _allExited.TrySetResult();
                    }
                }
            }
        }
        catch (Exception e) when (e is RpcException or AgentException or IOException)
        {
            // The VM went away (the VMM's exit is handled by the supervisor), or the stream broke: say so.
            if (!_ending && !_stop.IsCancellationRequested) Log($"lost the agent's event stream: {e.Message.Split('\n')[0]}");
        }
    }

    /// <summary>run --interactive: the app's only stream is the user's (as rkt: only a one-app pod; the
    /// <c>interactive</c> stream mode stage0 writes, or --interactive itself for a stage0 that wrote none).</summary>
    private bool IsInteractive(RuntimeApp app) =>
        _args.Interactive && (StreamModes.Of(app, "stdin") == StreamModes.Interactive || _pod.Apps.Count == 1);

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
            Log($"lost the interactive session with app {app}: {e.Message.Split('\n')[0]}");
            return 1;
        }
    }

    private async Task FollowLogsAsync(AgentClient agent, string app)
    {
        bool echo = app != _interactiveApp; // the interactive app's output reaches the user through its session
        await using var log = new FileStream(_files.AppLog(app), FileMode.Append, FileAccess.Write, FileShare.Read);
        var stdout = Console.OpenStandardOutput();
        var prefix = Encoding.UTF8.GetBytes($"[{app}] ");
        bool atLineStart = true;
        try
        {
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
        catch (Exception e) when (e is RpcException or AgentException or IOException) { }
    }

    private async Task StopAllAsync(AgentClient agent)
    {
        var running = (await agent.ListAppsAsync()).Where(a => a.State == AppState.Running).ToList();
        await Task.WhenAll(running.Select(a => agent.StopAppAsync(a.Name, StopGrace)));
    }

    private async Task ShutdownAsync(AgentVmProcess vm)
    {
        try
        {
            await vm.Client.Stub.ShutdownAsync(new ShutdownRequest(), deadline: DateTime.UtcNow.AddSeconds(10));
            await vm.WaitForExitAsync(TimeSpan.FromSeconds(30));
        }
        catch (Exception e) when (e is RpcException or AgentException or IOException)
        {
            Log($"the VM did not power off cleanly ({e.Message.Split('\n')[0]}); killing it");
        }
    }

    /// <summary>The first failed app's exit code in manifest order; apps that never reported count as 1 (the pod failed).</summary>
    private int ResultCode()
    {
        lock (_lock)
        {
            foreach (var app in _pod.Apps)
            {
                if (!_exited.TryGetValue(app.Name, out var info)) { if (!_pod.Mutable) return 1; continue; }
                int code = PodApps.ExitCode(info);
                if (code != 0) return code;
            }
        }
        return 0;
    }

    /// <summary>The hostname, <c>/etc/hosts</c>, <c>/etc/resolv.conf</c> and network every app of the pod shares.</summary>
    private ConfigurePodRequest ConfigurePodRequest()
    {
        var request = new ConfigurePodRequest
        {
            Hostname = _args.Hostname ?? $"rkt-{_files.Uuid}",
            Hosts = DnsFile("hosts", "rkt-hosts", "/etc/hosts", cni: null),
            ResolvConf = DnsFile("resolv", "rkt-resolv.conf", "/etc/resolv.conf", cni: _network?.ResolvConf),
        };
        foreach (var nic in _network?.Nics ?? [])
        {
            // A VM restored from a template still has the template's MAC on each NIC; the agent moves it to the pod's.
            var nicRequest = new NetworkInterface { Mac = nic.Mac, Mtu = (uint)nic.Mtu, LinkMac = _restored ? VmTemplateStore.TemplateMac(request.Interfaces.Count) : "" };
            nicRequest.Addresses.AddRange(nic.Addresses);
            request.Interfaces.Add(nicRequest);
            request.Routes.AddRange(nic.Routes.Select(r => new NetworkRoute { Destination = r.Destination, Gateway = r.Gateway ?? "", Mac = nic.Mac }));
        }
        return request;
    }

    /// <summary>
    /// <c>--dns-conf-mode</c> as rkt's stage1 reads it: <c>stage0</c> means stage0 wrote the file into
    /// the stage1 rootfs (<c>etc/rkt-resolv.conf</c>, <c>etc/rkt-hosts</c>); <c>host</c> the host's
    /// own file; <c>none</c> nothing; <c>default</c> what a network's plugin returned (resolv.conf),
    /// else the agent's default (empty).
    /// </summary>
    private string DnsFile(string key, string staged, string hostFile, string? cni)
    {
        string Read(string path) => File.Exists(path) ? File.ReadAllText(path) : "";
        return _args.DnsMode(key) switch
        {
            "stage0" => Read(Path.Join(_files.Pod.Stage1Rootfs, "etc", staged)),
            "host" => Read(hostFile),
            "none" => "",
            _ => cni ?? "",
        };
    }

    private void TeardownNetwork(PodNetwork network)
    {
        try { network.Teardown(); }
        catch (Stage1Exception e) { Log($"network teardown incomplete ({e.Message}); `gc` retries it"); }
    }

    /// <summary>sd_notify READY=1 to $NOTIFY_SOCKET (a datagram socket; '@' means the abstract namespace).</summary>
    private static void NotifyReady()
    {
        var path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path)) return;
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.SendTo("READY=1"u8, new UnixDomainSocketEndPoint(path[0] == '@' ? "\0" + path[1..] : path));
        }
        catch (SocketException e)
        {
            Log($"cannot notify {path}: {e.Message}");
        }
    }

    /// <summary>The last <paramref name="lines"/> lines after the first (the failure itself, which the error line says), indented.</summary>
    private static string Tail(string diagnostics, int lines) =>
        string.Join("\n", diagnostics.Split('\n').Skip(1).Where(l => l.Trim().Length > 0).TakeLast(lines).Select(l => "  " + l));

    private void CleanRuntimeDir()
    {
        try { if (Directory.Exists(_files.RuntimeDir)) Directory.Delete(_files.RuntimeDir, recursive: true); }
        catch (IOException) { /* gc retries */ }
    }

    /// <summary>One line on stderr; "\r\n" while the user's terminal is raw (an interactive session), so lines still start at the left.</summary>
    internal static void Log(string message) => Console.Error.Write($"stage1-kvm: {message}{(Terminal.RawTerminal.Active ? "\r\n" : "\n")}");
}

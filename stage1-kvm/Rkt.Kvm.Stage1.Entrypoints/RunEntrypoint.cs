using System.Net.Sockets;
using System.Runtime.InteropServices;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Agent.Vm;
using Rkt.Kvm.Stage1.Entrypoints;
using Rkt.Kvm.Stage1.Entrypoints.Supervision;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Networking;
using Rkt.Kvm.Stage1.Pods;
using Rkt.Kvm.Stage1.Runtime;
using Rkt.Kvm.Stage1.Sizing;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// <c>run</c>: one VM per pod. Sizes the VM from the isolators, puts itself in the pod's cgroup,
/// sets up the pod's network, starts the VMM with the pod's exports and waits for the agent's
/// READY. Then it hands everything that talks to the agent to the pod supervisor, a child running
/// as the pod's own unprivileged user (<see cref="Supervision.PodSupervisor"/>), and keeps only
/// what needs root: it writes the pod's files from the supervisor's reports (each exit to
/// <c>rkt/status/&lt;app&gt;</c> at once, the ready mark), forwards a stop (SIGTERM, which `stop`
/// sends) and, once the supervisor is done, ends the VM and tears the network and cgroup down.
/// Exit status: the supervisor's result (the first failed app's code in manifest order, else 0);
/// 1 when the VM itself died or the supervisor failed. The pod lock (RKT_LOCK_FD) is held by this
/// process until it exits.
/// </summary>
public sealed class RunEntrypoint
{
    /// <summary>How much of a failed VM's diagnostics a failed start prints.</summary>
    private const int DiagnosticLines = 15;

    private readonly RunArguments _args;
    private readonly Stage1Files _files;
    private readonly PodManifest _pod;
    private readonly CancellationTokenSource _stop = new();
    private readonly Timeline _timeline;
    /// <summary>The VM was restored from a template (its NICs have the template's MACs).</summary>
    private bool _restored;
    private PodNetworkSetup? _network;
    private Runtime.PodCgroup? _cgroup;

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
        // Whatever stage0 (or systemd, or a shell) left open without close-on-exec stays ours: the
        // VMM, the supervisor and the CNI plugins get only what we hand them (a helper holding the
        // caller's fds could keep a lock, or a socket, it has no business with).
        Rkt.Kvm.Posix.FileDescriptor.KeepInheritedToThisProcess();
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
        try
        {
            _timeline.Mark("agent-ready");
            if (!_restored) _timeline.Write("guest-boot-to-ready-ms", vm.Ready.MillisecondsSinceBoot); // a restored agent was ready long ago
            GrantSupervisorUser();
            _files.Pod.WritePid(vm.Pid); // from here stage0 lets enter and app/* at the pod: they talk to the agent as the supervisor's user too
            return await SuperviseAsync(vm);
        }
        finally
        {
            // The supervisor asked the guest to power off and waited; a VM still running now is killed, before its network goes.
            if (!vm.HasExited) Log("the VM still runs after its supervisor ended; killing it");
            vm.Dispose();
            _timeline.Mark("vm-off");
            CleanRuntimeDir();
            TeardownNetwork(network);
            _cgroup?.Leave();
        }
    }

    /// <summary>
    /// Starts the pod supervisor as the pod's own user with what it needs (the agent's socket,
    /// the logs directory, the plan) and applies what it reports until it ends.
    /// </summary>
    private async Task<int> SuperviseAsync(AgentVmProcess vm)
    {
        var plan = Plan();
        var vmExit = vm.WaitForExitAsync(Timeout.InfiniteTimeSpan).ContinueWith(t => $"VMM {Rkt.Kvm.Vmm.Client.VmmExit.Describe(t.Result)}; console: {_files.ConsoleLog}",
            CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        // The supervisor makes the user's terminal raw for an interactive app; killed (SIGKILL), it
        // cannot put it back, so run does once it is gone.
        using var terminal = plan.InteractiveApp is not null ? Terminal.RawTerminal.KeepSettings(0) : null;
        using var supervisor = SupervisorProcess.Start(_files.Uuid, plan);
        return await supervisor.RunAsync(vmExit, _stop.Token, Apply);
    }

    /// <summary>
    /// What the pod's supervisor user may reach: the agent's socket (connecting takes write access
    /// to the socket file) and the logs directory. Only when run is root: otherwise the supervisor
    /// stays run's user and has both already.
    /// </summary>
    private void GrantSupervisorUser()
    {
        if (Tmds.Linux.LibC.geteuid() != 0) return;
        var user = PodSupervisorUser.For(_files.Uuid);
        Native.Ownership.Chown(_files.AgentSocket, user.Uid, user.Gid);
        Native.Ownership.Chown(_files.LogsDir, user.Uid, user.Gid);
    }

    /// <summary>A report from the supervisor, already checked, made into the pod's files.</summary>
    private void Apply(SupervisorReport report)
    {
        try
        {
            switch (report)
            {
                case SupervisorReport.AppExited e:
                    _files.Pod.WriteExitStatus(e.App, e.Code);
                    break;
                case SupervisorReport.Ready:
                    _files.Pod.MarkSupervisorReady();
                    NotifyReady();
                    break;
                case SupervisorReport.TimelineEntry t:
                    _timeline.Write(t.Name, t.Value);
                    break;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Stage1Exception)
        {
            Log($"cannot record the supervisor's report {report.Format().TrimEnd()}: {e.Message}");
        }
    }

    /// <summary>
    /// What the supervisor does: the pod's configuration, and an immutable pod's apps in manifest
    /// order, with their environment files written here first (root's, in the pod directory).
    /// run --interactive: the app whose streams are the user's gets our terminal, or our stdin.
    /// </summary>
    private SupervisorPlan Plan()
    {
        var apps = new List<AddAppRequest>();
        string? interactiveApp = null;
        if (!_pod.Mutable)
        {
            foreach (var app in _pod.Apps)
            {
                var request = PodApps.AddAppRequest(_files, _pod, app);
                if (IsInteractive(app))
                {
                    // The user's terminal, when we have one, becomes the app's own terminal's other end.
                    var interactive = Terminal.StdioMode.Auto(stdin: true);
                    interactiveApp = app.Name;
                    if (interactive.Tty)
                    {
                        request.Tty = true;
                        request.Stdin = false;
                        request.TerminalSize = Terminal.RawTerminal.CurrentSize();
                    }
                }
                if (!File.Exists(_files.Pod.AppEnv(app.Name))) _files.Pod.WriteEnvironment(app.Name, app.App!.Environment);
                apps.Add(request);
            }
        }
        return new SupervisorPlan(_pod.Mutable, interactiveApp, ConfigurePodRequest(), apps);
    }

    /// <summary>run --interactive: the app's only stream is the user's (as rkt: only a one-app pod; the
    /// <c>interactive</c> stream mode stage0 writes, or --interactive itself for a stage0 that wrote none).</summary>
    private bool IsInteractive(RuntimeApp app) =>
        _args.Interactive && (StreamModes.Of(app, "stdin") == StreamModes.Interactive || _pod.Apps.Count == 1);

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

using System.Threading.Channels;
using Google.Protobuf;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.GuestAgent.Network;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>One app of the pod.</summary>
internal sealed class App(string name, AddAppRequest spec, AppRoot root, Credentials credentials, ulong capabilities, List<string> env)
{
    public string Name => name;
    public AddAppRequest Spec => spec;
    public AppRoot Root => root;
    public Credentials Credentials => credentials;
    public ulong Capabilities => capabilities;
    public List<string> Env => env;
    public AppState State = AppState.Created;
    public bool Starting, Removing;
    public int Pid;
    public ExitStatus? Exit;
    public long CreatedNs = AppSupervisor.NowNs(), StartedNs, FinishedNs;
    public readonly LogBuffer Logs = new();
    public readonly TaskCompletionSource Exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public int OpenPipes;
    /// <summary>Where Attach writes the app's input: its stdin pipe, or its terminal's master (a
    /// duplicate the output pump does not own). Null without stdin or tty; closed when the app exits.</summary>
    public AppInput? Input;
}

/// <summary>
/// The pod's apps: their roots, cgroups, processes (started through the stage2 helper), exit statuses
/// (from the <see cref="Reaper"/>), logs and events. The pod's PID/IPC/UTS namespaces belong to a
/// pod-init process made before the agent reports ready (<see cref="PrepareAhead"/>; again at the first
/// StartApp if that failed); ConfigurePod sets its hostname. The network namespace is the
/// VM's own, shared by every app as in rkt; ConfigurePod configures it (<see cref="PodNetwork"/>).
/// </summary>
internal sealed class AppSupervisor(bool enabled)
{
    private const string DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    private readonly Lock _lock = new();
    private readonly Dictionary<string, App?> _apps = []; // null: being added
    private readonly List<Channel<EventsReply>> _subscribers = [];
    private PodConfig _pod = PodConfig.Create(null, null, null);
    private Task<int>? _podInit;
    private bool _appsStarted; // under _networkLock: set by the first StartApp, after which the pod's configuration is fixed
    private readonly Lock _networkLock = new();
    private string? _network;        // the applied network (PodNetwork.ToString), once applied
    private string? _networkFailure; // the netlink error that left it half configured

    public static long NowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;

    private void RequireEnabled()
    {
        if (!enabled) throw new GrpcException(GrpcException.FailedPrecondition, "Apps need the agent to run as PID 1 in the pod's VM; this agent runs as a host process.");
    }

    private App Get(string name)
    {
        lock (_lock)
            return _apps.TryGetValue(name, out App? app) && app is not null ? app
                : throw new GrpcException(GrpcException.NotFound, $"There is no app named '{name}'.");
    }

    public static AppInfo Info(App app)
    {
        lock (app)
            return new AppInfo
            {
                Name = app.Name, State = app.State, Pid = app.Pid, ExitCode = app.Exit?.Code ?? 0, Signal = app.Exit?.Signal ?? 0,
                CreatedAtNs = app.CreatedNs, StartedAtNs = app.StartedNs, FinishedAtNs = app.FinishedNs, LogRecordsDropped = app.Logs.Dropped,
            };
    }

    /// <summary>
    /// Sets the hostname and /etc files for apps added later, and applies the pod's network (lo always, then
    /// the NICs and routes) before any app starts. The network is applied once: a later ConfigurePod with the
    /// same network (the same canonical text) leaves it alone, a different one is FailedPrecondition, as is any
    /// ConfigurePod after a netlink failure left the network half made. Validation comes first: a bad request
    /// changes nothing.
    /// </summary>
    public ConfigurePodReply ConfigurePod(ConfigurePodRequest request)
    {
        RequireEnabled();
        if (request.Hostname.Length > 64 || request.Hostname.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '.')))
            throw new GrpcException(GrpcException.InvalidArgument, $"'{request.Hostname}' is not a valid hostname.");
        PodNetwork network;
        try { network = PodNetwork.Parse(request.Interfaces, request.Routes); }
        catch (ArgumentException e) { throw new GrpcException(GrpcException.InvalidArgument, e.Message); }
        // _networkLock, taken by the first StartApp before its app starts, orders the configuration before any app.
        lock (_networkLock)
        {
            if (_appsStarted) throw new GrpcException(GrpcException.FailedPrecondition, "The pod is already running apps; configure it before the first StartApp.");
            ApplyNetwork(network);
            PodConfig pod;
            lock (_lock) _pod = pod = PodConfig.Create(request.Hostname, request.Hosts, request.ResolvConf);
            int podPid;
            // Made ahead with the default name: it takes this one now. If it cannot be made, the first StartApp makes it with this name.
            try { podPid = PodInitAsync().GetAwaiter().GetResult(); }
            catch (StartException) { return new ConfigurePodReply(); }
            try { PodHostname.Set(podPid, pod.Hostname); }
            catch (IOException e) { throw new GrpcException(GrpcException.Internal, e.Message); }
        }
        return new ConfigurePodReply();
    }

    private void ApplyNetwork(PodNetwork network)
    {
        string wanted = network.ToString();
        if (_networkFailure is not null)
            throw new GrpcException(GrpcException.FailedPrecondition, $"An earlier ConfigurePod left the pod's network half configured ({_networkFailure}); it cannot be configured again.");
        if (_network is not null)
        {
            if (_network == wanted) return;
            throw new GrpcException(GrpcException.FailedPrecondition, $"The pod's network is already configured ({_network}); a pod's network is set once.");
        }
        try { network.Apply(PodNetwork.DefaultLinkWait); }
        catch (LinkNotFoundException e) { throw new GrpcException(GrpcException.FailedPrecondition, e.Message); } // only lo changed: a retry may work
        catch (IOException e)
        {
            _networkFailure = e.Message;
            throw new GrpcException(GrpcException.Internal, $"Configuring the pod's network failed: {e.Message}.");
        }
        _network = wanted;
        if (Stage2.Debug) Log.Line($"rkt-kvm-agent: network: {wanted}");
    }

    public static bool IsValidName(string name) =>
        name.Length is > 0 and <= 63 && (char.IsAsciiLetterLower(name[0]) || char.IsAsciiDigit(name[0]))
        && name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '-' or '_' or '.');

    public AddAppReply AddApp(AddAppRequest request)
    {
        RequireEnabled();
        if (!IsValidName(request.Name)) throw new GrpcException(GrpcException.InvalidArgument, $"'{request.Name}' is not a valid app name (lower-case letters, digits, '-', '_', '.'; at most 63).");
        if (request.Exec.Count == 0) throw new GrpcException(GrpcException.InvalidArgument, "The app has no exec (program and arguments).");
        if (request.RootfsCase == AddAppRequest.RootfsOneofCase.None) throw new GrpcException(GrpcException.InvalidArgument, "The app needs rootfs_export or rootfs_path.");
        if (request.RootfsCase == AddAppRequest.RootfsOneofCase.RootfsPath && (!request.RootfsPath.StartsWith('/') || !Directory.Exists(request.RootfsPath)))
            throw new GrpcException(GrpcException.InvalidArgument, $"rootfs_path '{request.RootfsPath}' is not a directory in the guest.");
        if (request.Env.Any(e => !e.Contains('='))) throw new GrpcException(GrpcException.InvalidArgument, "Every env entry must be KEY=VALUE.");
        var volumes = new List<Volume>();
        foreach (var m in request.Mounts)
        {
            if (!m.Target.StartsWith('/')) throw new GrpcException(GrpcException.InvalidArgument, $"The mount target '{m.Target}' is not an absolute path.");
            if ((m.Export.Length == 0) == (m.Path.Length == 0)) throw new GrpcException(GrpcException.InvalidArgument, $"The mount at {m.Target} needs exactly one of export and path.");
            volumes.Add(new Volume(m.Export.Length > 0 ? m.Export : null, m.Path.Length > 0 ? m.Path : null, m.Target, m.ReadOnly));
        }
        ulong caps;
        try { caps = Capabilities.Effective(request.CapabilitiesRetain, request.CapabilitiesRemove); }
        catch (ArgumentException e) { throw new GrpcException(GrpcException.InvalidArgument, e.Message); }

        PodConfig pod;
        lock (_lock)
        {
            if (_apps.ContainsKey(request.Name)) throw new GrpcException(GrpcException.AlreadyExists, $"An app named '{request.Name}' already exists.");
            _apps[request.Name] = null;
            pod = _pod;
        }
        AppRoot? root = null;
        try
        {
            root = AppRoot.Prepare(request.Name,
                request.RootfsCase == AddAppRequest.RootfsOneofCase.RootfsExport ? request.RootfsExport : null,
                request.RootfsCase == AddAppRequest.RootfsOneofCase.RootfsPath ? request.RootfsPath : null,
                request.ReadOnlyRootfs, volumes, pod);
            // From the image itself: the root's /etc/passwd and /etc/group are the image's until the app runs, and the overlay would add 9p lookups.
            Credentials credentials = UserDb.Load(root.Lower).Resolve(request.User, request.Group, request.SupplementaryGids);
            var env = request.Env.ToList();
            if (!env.Any(e => e.StartsWith("PATH=", StringComparison.Ordinal))) env.Add(DefaultPath);
            Cgroup.CreateApp(request.Name, request.MemoryLimitBytes, request.CpuShares, request.PidsLimit);
            var app = new App(request.Name, request.Clone(), root, credentials, caps, env);
            lock (_lock) _apps[request.Name] = app;
            return new AddAppReply { App = Info(app) };
        }
        catch (Exception e)
        {
            root?.Teardown();
            try { Cgroup.RemoveAppAsync(request.Name).GetAwaiter().GetResult(); } catch (IOException) { }
            lock (_lock) _apps.Remove(request.Name);
            throw e switch
            {
                GrpcException g => g,
                ArgumentException a => new GrpcException(GrpcException.InvalidArgument, a.Message),
                _ => new GrpcException(GrpcException.Internal, $"Preparing the app '{request.Name}' failed: {e.Message}"),
            };
        }
    }

    private Task<int> PodInitAsync()
    {
        lock (_lock)
        {
            if (_podInit is { IsFaulted: true }) _podInit = null;
            string hostname = _pod.Hostname;
            return _podInit ??= Task.Run(async () =>
            {
                int devNull = OpenDevNull();
                try
                {
                    int pid = await Stage2.RunAsync(Stage2.PodInitArgs(hostname), devNull, devNull, devNull).ConfigureAwait(false);
                    _ = Reaper.WaitAsync(pid).ContinueWith(t => PodInitExited(pid, t.Result), TaskScheduler.Default);
                    return pid;
                }
                finally { Libc.close(devNull); }
            });
        }
    }

    /// <summary>
    /// pod-init holds the pod's namespaces; when it dies (killed, say by the OOM killer), the kernel
    /// kills every process in its PID namespace, and the apps are reaped as exited by SIGKILL. The
    /// pod lives on: the next StartApp makes a new pod-init, with the pod's hostname.
    /// </summary>
    private void PodInitExited(int pid, ExitStatus status)
    {
        Log.Line($"rkt-kvm-agent: pod-init {pid} {status}");
        lock (_lock)
            if (_podInit is { IsCompletedSuccessfully: true } made && made.Result == pid) _podInit = null;
    }

    /// <summary>
    /// Makes pod-init and the pod's cgroup now, before the agent reports ready: a template VM then holds
    /// them, and no pod pays for them at its first app (about 1.2 s on slow nested hosts). A failure is
    /// logged; the first AddApp or StartApp tries again and reports it.
    /// </summary>
    public void PrepareAhead(TimeSpan wait)
    {
        if (!enabled) return;
        var podInit = PodInitAsync();
        try { Cgroup.EnsurePod(); }
        catch (IOException e) { Log.Line($"rkt-kvm-agent: the pod's cgroup: {e.Message}"); } // CreateApp tries again and reports it
        try
        {
            if (!podInit.Wait(wait)) Log.Line("rkt-kvm-agent: pod-init is not ready yet; the first app waits for it");
        }
        catch (AggregateException e) { Log.Line($"rkt-kvm-agent: pod-init: {e.InnerException?.Message}"); }
    }

    /// <summary>Apps share the VM's network namespace: without a ConfigurePod they still get lo. Fixes the pod's configuration.</summary>
    private void BeginAppsOnce()
    {
        lock (_networkLock)
        {
            _appsStarted = true;
            if (_network is null && _networkFailure is null)
            {
                PodNetwork.BringUpLoopback();
                _network = PodNetwork.LoopbackOnly;
            }
        }
    }

    private static int OpenDevNull()
    {
        int fd = Libc.open("/dev/null", Libc.O_RDWR | Libc.O_CLOEXEC);
        return fd >= 0 ? fd : throw new IOException("open /dev/null: " + Libc.LastError());
    }

    public async Task<StartAppReply> StartAppAsync(StartAppRequest request)
    {
        RequireEnabled();
        App app = Get(request.Name);
        lock (app)
        {
            if (app.State != AppState.Created || app.Starting || app.Removing)
                throw new GrpcException(GrpcException.FailedPrecondition, $"The app '{app.Name}' is {Describe(app)}; only a created app can be started.");
            app.Starting = true;
        }
        try
        {
            int podPid;
            BeginAppsOnce();
            try { podPid = await PodInitAsync().ConfigureAwait(false); }
            catch (StartException e) { throw new GrpcException(GrpcException.Internal, $"Creating the pod's namespaces failed: {e.Message}."); }
            var spec = new ProcessSpec(app.Spec.Exec, app.Env, app.Spec.WorkingDir, app.Credentials, app.Capabilities, app.Spec.NoNewPrivileges, Cgroup.AppPath(app.Name), app.Spec.Tty);
            using var stdio = app.Spec.Tty
                ? ProcessStdio.Terminal(app.Root.Root, app.Spec.TerminalSize, app.Credentials)
                : ProcessStdio.Pipes(withStdin: app.Spec.Stdin);
            app.Input = stdio.TakeInput();
            app.OpenPipes = stdio.OutputCount;
            stdio.StartOutput(
                d => app.Logs.Append(LogBuffer.Stdout, d, NowNs()),
                d => app.Logs.Append(LogBuffer.Stderr, d, NowNs()),
                () => PipeClosed(app));
            long started = NowNs();
            int pid;
            try { pid = await Stage2.RunAsync(Stage2.AppArgs(podPid, app.Root.Root, spec), stdio.ChildStdin, stdio.ChildStdout, stdio.ChildStderr).ConfigureAwait(false); }
            catch (StartException e)
            {
                // A helper killed after making the process may not have said which one it made: whatever
                // runs in the app's cgroup now is from this failed start (a created app has nothing else there).
                Cgroup.Kill(app.Name);
                lock (app) app.Starting = false;
                app.Input?.Dispose();
                throw new GrpcException(GrpcException.FailedPrecondition, $"Starting the app '{app.Name}' failed: {e.Message}.");
            }
            lock (app)
            {
                app.Pid = pid;
                app.StartedNs = started;
                app.State = AppState.Running;
                app.Starting = false;
            }
            _ = Reaper.WaitAsync(pid).ContinueWith(t => OnExit(app, t.Result), TaskScheduler.Default);
            Publish(AppEventType.AppEventStarted, app);
            if (FaultPoints.Armed.Fire(FaultPoints.PodInitAfterStart + app.Name)) Libc.kill(podPid, Libc.SIGKILL);
            return new StartAppReply { App = Info(app) };
        }
        catch (Exception e) when (e is not GrpcException)
        {
            lock (app) app.Starting = false;
            throw new GrpcException(GrpcException.Internal, $"Starting the app '{app.Name}' failed: {e.Message}");
        }
    }

    private static void PipeClosed(App app)
    {
        Interlocked.Decrement(ref app.OpenPipes);
        CompleteLogsWhenDone(app);
    }

    /// <summary>
    /// The log is complete once both pipes are drained and the app was reaped, in either order: a
    /// follower that reaches the end finds the app Exited (the pipes can close before the reaper
    /// has the exit status).
    /// </summary>
    private static void CompleteLogsWhenDone(App app)
    {
        lock (app)
            if (Volatile.Read(ref app.OpenPipes) == 0 && app.State == AppState.Exited) app.Logs.Complete();
    }

    private void OnExit(App app, ExitStatus status)
    {
        lock (app)
        {
            app.State = AppState.Exited;
            app.Exit = status;
            app.FinishedNs = NowNs();
        }
        app.Input?.Dispose(); // nothing reads it any more; a writer blocked on a full pipe gets EPIPE
        CompleteLogsWhenDone(app);
        app.Exited.TrySetResult();
        if (Stage2.Debug) Log.Line($"app {app.Name}: pid {app.Pid} {status}");
        // What the app left behind (daemonised children, an exec) goes with it, and their pipe ends with them.
        try { Cgroup.Kill(app.Name); }
        catch (Exception e) { Log.Line($"rkt-kvm-agent: app {app.Name}: cgroup.kill: {e.Message}"); }
        Publish(AppEventType.AppEventExited, app);
    }

    private static string Describe(App app) => app.Removing ? "being removed" : app.Starting ? "starting" : app.State switch
    {
        AppState.Created => "created",
        AppState.Running => "running",
        _ => "exited",
    };

    public async Task<StopAppReply> StopAppAsync(StopAppRequest request, CancellationToken cancellation)
    {
        RequireEnabled();
        App app = Get(request.Name);
        int pid;
        lock (app)
        {
            if (app.State != AppState.Running) return new StopAppReply { App = Info(app) };
            pid = app.Pid;
        }
        int signal = request.Signal == 0 ? 15 : request.Signal;
        uint grace = request.GracePeriodMs == 0 ? 10_000 : request.GracePeriodMs;
        int rc = Libc.kill(pid, signal);
        if (Stage2.Debug) Log.Line($"app {app.Name}: kill({pid}, {signal}) = {rc}");
        if (rc != 0 && System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Libc.EINVAL)
            throw new GrpcException(GrpcException.InvalidArgument, $"{request.Signal} is not a signal number.");
        if (await Task.WhenAny(app.Exited.Task, Task.Delay((int)Math.Min(grace, int.MaxValue), cancellation)).ConfigureAwait(false) != app.Exited.Task)
        {
            cancellation.ThrowIfCancellationRequested();
            Cgroup.Kill(app.Name);
            Libc.kill(pid, Libc.SIGKILL);
            await app.Exited.Task.WaitAsync(cancellation).ConfigureAwait(false);
        }
        return new StopAppReply { App = Info(app) };
    }

    public SignalReply Signal(SignalRequest request)
    {
        RequireEnabled();
        App app = Get(request.Name);
        lock (app)
        {
            if (app.State != AppState.Running) throw new GrpcException(GrpcException.FailedPrecondition, $"The app '{app.Name}' is {Describe(app)}, not running.");
            if (Libc.kill(app.Pid, request.Signal) != 0)
                throw new GrpcException(GrpcException.InvalidArgument, $"Signal {request.Signal} to the app '{app.Name}' failed: {Libc.LastError()}.");
        }
        return new SignalReply();
    }

    public async Task<RemoveAppReply> RemoveAppAsync(RemoveAppRequest request)
    {
        RequireEnabled();
        App app = Get(request.Name);
        lock (app)
        {
            if (app.State == AppState.Running || app.Starting || app.Removing)
                throw new GrpcException(GrpcException.FailedPrecondition, $"The app '{app.Name}' is {Describe(app)}; stop it before removing it.");
            app.Removing = true;
        }
        string? failures = null;
        try { await Cgroup.RemoveAppAsync(app.Name).ConfigureAwait(false); }
        catch (IOException e) { failures = e.Message; }
        string? mounts = app.Root.Teardown();
        app.Logs.Complete();
        lock (_lock) _apps.Remove(app.Name);
        if (failures is not null || mounts is not null)
            throw new GrpcException(GrpcException.Internal, $"The app '{app.Name}' was removed, but not cleanly: {failures} {mounts}".Trim());
        return new RemoveAppReply();
    }

    public AppStatusReply AppStatus(AppStatusRequest request)
    {
        RequireEnabled();
        return new AppStatusReply { App = Info(Get(request.Name)) };
    }

    public ListAppsReply ListApps()
    {
        RequireEnabled();
        var reply = new ListAppsReply();
        lock (_lock)
            foreach (var app in _apps.Values)
                if (app is not null) reply.Apps.Add(Info(app));
        return reply;
    }

    public async Task<WaitAppReply> WaitAppAsync(WaitAppRequest request, CancellationToken cancellation)
    {
        RequireEnabled();
        App app = Get(request.Name);
        await app.Exited.Task.WaitAsync(cancellation).ConfigureAwait(false);
        return new WaitAppReply { App = Info(app) };
    }

    private void Publish(AppEventType type, App app)
    {
        var reply = new EventsReply { Type = type, App = Info(app) };
        lock (_subscribers)
            foreach (var s in _subscribers) s.Writer.TryWrite(reply);
    }

    public async Task EventsAsync(GrpcCall call)
    {
        RequireEnabled();
        var channel = Channel.CreateBounded<EventsReply>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest });
        lock (_subscribers) _subscribers.Add(channel);
        try
        {
            await call.FlushAsync().ConfigureAwait(false);
            await foreach (var e in channel.Reader.ReadAllAsync(call.Cancellation).ConfigureAwait(false))
                await call.WriteAsync(e).ConfigureAwait(false);
        }
        finally { lock (_subscribers) _subscribers.Remove(channel); }
    }

    public async Task LogsAsync(GrpcCall call, LogsRequest request)
    {
        RequireEnabled();
        App app = Get(request.Name);
        await foreach (var r in app.Logs.ReadAllAsync(request.SinceSequence, request.Follow, call.Cancellation).ConfigureAwait(false))
            await call.WriteAsync(new LogsReply
            {
                Stream = (LogStream)r.Stream, TimestampNs = r.TimestampNs, Sequence = r.Sequence, Data = UnsafeByteOperations.UnsafeWrap(r.Data),
            }).ConfigureAwait(false);
    }

    /// <summary>How long the output of a process that exited may still take to drain: its pipes or terminal can
    /// stay open in something it left behind, and the exit must not wait for that.</summary>
    private static readonly TimeSpan OutputDrainAfterExit = TimeSpan.FromSeconds(2);

    public async Task ExecAsync(GrpcCall call)
    {
        RequireEnabled();
        ExecRequest first = await call.ReadAsync(ExecRequest.Parser).ConfigureAwait(false) ?? throw new GrpcException(GrpcException.InvalidArgument, "Exec needs a first message with start.");
        if (first.KindCase != ExecRequest.KindOneofCase.Start) throw new GrpcException(GrpcException.InvalidArgument, "The first Exec message must be start.");
        ExecStart start = first.Start;
        if (start.Argv.Count == 0) throw new GrpcException(GrpcException.InvalidArgument, "Exec needs argv.");
        App app = Get(start.App);
        int targetPid;
        lock (app)
        {
            if (app.State != AppState.Running) throw new GrpcException(GrpcException.FailedPrecondition, $"The app '{app.Name}' is {Describe(app)}, not running.");
            targetPid = app.Pid;
        }
        Credentials credentials = app.Credentials;
        if (start.User.Length > 0 || start.Group.Length > 0)
        {
            try { credentials = UserDb.Load(app.Root.Root).Resolve(start.User.Length > 0 ? start.User : app.Spec.User, start.Group, app.Spec.SupplementaryGids); }
            catch (ArgumentException e) { throw new GrpcException(GrpcException.InvalidArgument, e.Message); }
        }
        var env = start.Env.Count > 0 ? start.Env.ToList() : app.Env;
        if (!env.Any(e => e.StartsWith("PATH=", StringComparison.Ordinal))) env.Add(DefaultPath);
        if (start.Tty && !env.Any(e => e.StartsWith("TERM=", StringComparison.Ordinal))) env.Add("TERM=xterm");
        var spec = new ProcessSpec(start.Argv, env, start.WorkingDir.Length > 0 ? start.WorkingDir : app.Spec.WorkingDir, credentials,
            app.Capabilities, app.Spec.NoNewPrivileges, Cgroup.AppPath(app.Name), start.Tty);

        var output = Channel.CreateBounded<ExecReply>(new BoundedChannelOptions(64) { SingleReader = true });
        ProcessStdio stdio;
        try { stdio = start.Tty ? ProcessStdio.Terminal(app.Root.Root, start.Size, credentials) : ProcessStdio.Pipes(withStdin: true); }
        catch (IOException e) { throw new GrpcException(GrpcException.Internal, $"Exec in the app '{app.Name}': {e.Message}."); }
        AppInput input = stdio.TakeInput()!;
        int pid;
        using (stdio)
        {
            int open = stdio.OutputCount;
            void Ended() { if (Interlocked.Decrement(ref open) == 0) output.Writer.TryComplete(); }
            stdio.StartOutput(
                d => output.Writer.WriteAsync(new ExecReply { Stdout = ByteString.CopyFrom(d) }).AsTask().GetAwaiter().GetResult(),
                d => output.Writer.WriteAsync(new ExecReply { Stderr = ByteString.CopyFrom(d) }).AsTask().GetAwaiter().GetResult(),
                Ended);
            try { pid = await Stage2.RunAsync(Stage2.ExecArgs(targetPid, spec), stdio.ChildStdin, stdio.ChildStdout, stdio.ChildStderr).ConfigureAwait(false); }
            catch (StartException e)
            {
                input.Dispose();
                throw new GrpcException(GrpcException.FailedPrecondition, $"Exec in the app '{app.Name}' failed: {e.Message}.");
            }
        }
        Task<ExitStatus> exited = Reaper.WaitAsync(pid);
        _ = exited.ContinueWith(_ => input.Dispose(), TaskScheduler.Default);
        var reading = Task.Run(() => RelayInputAsync(call, ExecRequest.Parser, input, ExecInput, closeAtEnd: true));
        try
        {
            await RelayOutputAsync(output.Reader, exited, call).ConfigureAwait(false);
            ExitStatus status = await exited.WaitAsync(call.Cancellation).ConfigureAwait(false);
            await call.WriteAsync(new ExecReply { Exit = new ExecExit { ExitCode = status.Code, Signal = status.Signal } }).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Libc.kill(pid, Libc.SIGKILL);
            throw;
        }
        finally { await StopReadingAsync(call, reading).ConfigureAwait(false); }
    }

    /// <summary>Ends the background reader of a call's request stream and waits for it (see <see cref="GrpcCall.StopReading"/>).</summary>
    private static async Task StopReadingAsync(GrpcCall call, Task reading)
    {
        call.StopReading();
        try { await reading.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
        catch (TimeoutException) { Log.Line("rkt-kvm-agent: a call's input reader did not stop"); } // a write into a full stdin; it ends with the process
    }

    private static InputMessage ExecInput(ExecRequest m) => m.KindCase switch
    {
        ExecRequest.KindOneofCase.Stdin => new InputMessage(m.Stdin, false, null),
        ExecRequest.KindOneofCase.StdinClose => new InputMessage(null, true, null),
        ExecRequest.KindOneofCase.Resize => new InputMessage(null, false, m.Resize),
        _ => new InputMessage(null, false, null),
    };

    /// <summary>One input request of Exec or Attach: stdin bytes, the end of stdin, or a new terminal size.</summary>
    private sealed record InputMessage(ByteString? Stdin, bool Close, TerminalSize? Resize);

    /// <summary>Writes the call's stdin and resizes into <paramref name="input"/> until the call's input ends or
    /// the process stops reading. stdin_close closes a pipe (EOF for the process) and sends a terminal its
    /// end-of-file character; with <paramref name="closeAtEnd"/> (Exec: the call owns the process's stdin) the
    /// end of the call closes a pipe too, while an attached client that goes leaves the app's stdin open.</summary>
    private static async Task RelayInputAsync<T>(GrpcCall call, MessageParser<T> parser, AppInput input, Func<T, InputMessage> decode, bool closeAtEnd) where T : class, IMessage<T>
    {
        try
        {
            while (await call.ReadAsync(parser).ConfigureAwait(false) is { } message)
            {
                var m = decode(message);
                if (m.Stdin is { } data) { if (!await BlockingThreads.Run(() => input.Write(data.Span)).ConfigureAwait(false)) break; }
                else if (m.Close) { input.CloseInput(); if (!input.IsTerminal) return; }
                else if (m.Resize is { } size) input.Resize(size);
            }
        }
        catch (Exception) { /* the call ended */ }
        if (closeAtEnd && !input.IsTerminal) input.Dispose();
    }

    /// <summary>Sends what the process wrote until its outputs end, or until <see cref="OutputDrainAfterExit"/>
    /// after it exited (something it left behind holds them).</summary>
    private static async Task RelayOutputAsync<T>(ChannelReader<T> output, Task exited, GrpcCall call) where T : IMessage
    {
        using var drained = CancellationTokenSource.CreateLinkedTokenSource(call.Cancellation);
        _ = exited.ContinueWith(_ => drained.CancelAfter(OutputDrainAfterExit), TaskScheduler.Default);
        try
        {
            await foreach (var reply in output.ReadAllAsync(drained.Token).ConfigureAwait(false))
                await call.WriteAsync(reply).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!call.Cancellation.IsCancellationRequested) { /* left open by an orphan */ }
    }

    /// <summary>
    /// Attach: the app's output from the requested point (its log records, so a late joiner sees what was
    /// kept), then its exit once it has exited and its output drained; stdin and resizes go to its input.
    /// </summary>
    public async Task AttachAsync(GrpcCall call)
    {
        RequireEnabled();
        AttachRequest first = await call.ReadAsync(AttachRequest.Parser).ConfigureAwait(false) ?? throw new GrpcException(GrpcException.InvalidArgument, "Attach needs a first message with start.");
        if (first.KindCase != AttachRequest.KindOneofCase.Start) throw new GrpcException(GrpcException.InvalidArgument, "The first Attach message must be start.");
        App app = Get(first.Start.Name);
        lock (app)
            if (app.State == AppState.Created)
                throw new GrpcException(GrpcException.FailedPrecondition, $"The app '{app.Name}' is {Describe(app)}; attach to it once it is started.");
        ulong since = first.Start.Live ? app.Logs.NextSequence : first.Start.SinceSequence;
        AppInput? input = app.Input;
        using var refused = CancellationTokenSource.CreateLinkedTokenSource(call.Cancellation);
        GrpcException? refusal = null;
        var reading = Task.Run(async () =>
        {
            if (input is not null) { await RelayInputAsync(call, AttachRequest.Parser, input, AttachInput, closeAtEnd: false).ConfigureAwait(false); return; }
            // No input to write: any stdin or resize is a mistake the caller should hear about.
            try
            {
                while (await call.ReadAsync(AttachRequest.Parser).ConfigureAwait(false) is { } message)
                    if (message.KindCase is AttachRequest.KindOneofCase.Stdin or AttachRequest.KindOneofCase.Resize)
                    {
                        refusal = new GrpcException(GrpcException.FailedPrecondition, $"The app '{app.Name}' has no stdin or terminal to write to (add it with stdin or tty).");
                        refused.Cancel();
                        return;
                    }
            }
            catch (Exception) { /* the call ended */ }
        });
        try
        {
            try
            {
                await foreach (var r in app.Logs.ReadAllAsync(since, follow: true, refused.Token).ConfigureAwait(false))
                    await call.WriteAsync(r.Stream == LogBuffer.Stderr
                        ? new ExecReply { Stderr = UnsafeByteOperations.UnsafeWrap(r.Data) }
                        : new ExecReply { Stdout = UnsafeByteOperations.UnsafeWrap(r.Data) }).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (refusal is not null) { throw refusal; }
            // Complete: the app exited (or was removed, having exited before).
            AppInfo info = Info(app);
            await call.WriteAsync(new ExecReply { Exit = new ExecExit { ExitCode = info.ExitCode, Signal = info.Signal } }).ConfigureAwait(false);
        }
        finally { await StopReadingAsync(call, reading).ConfigureAwait(false); }
    }

    private static InputMessage AttachInput(AttachRequest m) => m.KindCase switch
    {
        AttachRequest.KindOneofCase.Stdin => new InputMessage(m.Stdin, false, null),
        AttachRequest.KindOneofCase.StdinClose => new InputMessage(null, true, null),
        AttachRequest.KindOneofCase.Resize => new InputMessage(null, false, m.Resize),
        _ => new InputMessage(null, false, null),
    };
}

using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;
using Rkt.Kvm.Vmm.Client.Control;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>Processes stage1 started for a pod, found by pid file and checked by command line, so
/// a pid the kernel reused for something else is never signalled.</summary>
internal static class PodProcesses
{
    public static int? Alive(string pidFile, string mustMention)
    {
        if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), out int pid) || pid <= 1) return null;
        try
        {
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
            return cmdline.Contains(mustMention, StringComparison.Ordinal) ? pid : null;
        }
        catch (IOException) { return null; } // gone
    }

    public static void Signal(int pid, int signal)
    {
        if (Native.Signals.Kill(pid, signal) != 0 && Native.Signals.LastError != Native.Signals.ESRCH)
            throw new Stage1Exception($"cannot signal process {pid}: errno {Native.Signals.LastError}");
    }
}

/// <summary><c>stop [--force] UUID</c>: asks the pod's run process to stop its apps and the VM
/// (SIGTERM) and returns at once; --force kills the VMM (the <c>pid</c> file), and run, seeing
/// its VM gone, ends the pod.</summary>
internal static class StopEntrypoint
{
    public static int Execute(string[] argv)
    {
        var args = StopArguments.Parse(argv);
        var files = Stage1Files.ForCurrentPod();
        if (args.Force)
        {
            if (PodProcesses.Alive(files.Pod.PidFile, files.Uuid) is { } vmm) PodProcesses.Signal(vmm, Native.Signals.SIGKILL);
            return 0;
        }
        if (PodProcesses.Alive(files.RunPid, files.Uuid) is { } run) PodProcesses.Signal(run, Native.Signals.SIGTERM);
        return 0;
    }
}

/// <summary><c>gc UUID</c>: frees what a pod took on the host even when its stage1 or VMM was
/// killed, at any point: every process in the pod's cgroup (then removed) and every other still
/// serving the pod (found by executable and command line, so also a VMM whose <c>pid</c> was never
/// written), then the pod's networks and network namespace, then the runtime directory with the
/// sockets. Idempotent.</summary>
internal static class GcEntrypoint
{
    public static int Execute(string[] argv)
    {
        GcArguments.Parse(argv);
        var files = Stage1Files.ForCurrentPod();
        // Everything in the pod's cgroup first (a process there is the pod's, whatever its name), then any the cgroup missed.
        Runtime.PodCgroup.KillAndRemove(files.CgroupRecord, files.Uuid, TimeSpan.FromSeconds(5));
        Runtime.PodRuntime.Kill(Runtime.PodRuntime.Processes(files.Uuid), TimeSpan.FromSeconds(5));
        // With the VMM gone nothing holds the taps: CNI DEL each network, then remove the namespace.
        new Networking.PodNetwork(files.Pod, files.Uuid, Networking.CniPlugin.FromEnvironment()).Teardown();
        // Only a directory named after this pod: the record is a file in the pod directory, and gc must never be talked into deleting anything else.
        if (Directory.Exists(files.RuntimeDir) && Path.GetFileName(Path.TrimEndingDirectorySeparator(files.RuntimeDir)) == files.Uuid)
            Directory.Delete(files.RuntimeDir, recursive: true);
        return 0;
    }
}

/// <summary><c>enter --pid=PID --appname=APP [--tty=BOOL] [--stdin=BOOL] -- CMD…</c>: runs the command in the app
/// through the agent's Exec, its output shown as it comes. With a terminal (by default when our stdin and
/// stdout are one) the command gets a pseudo-terminal in the app and ours goes raw until it ends; stdin is
/// forwarded with a terminal or when redirected. The exit code is the command's (128 + signal).</summary>
internal static class EnterEntrypoint
{
    public static int Execute(string[] argv)
    {
        var args = EnterArguments.Parse(argv);
        var files = Stage1Files.ForCurrentPod();
        using var agent = Supervision.PodUserSession.Enter(files).Agent();
        var mode = Terminal.StdioMode.Auto(args.Tty, args.Stdin);
        var start = new ExecStart { App = args.App, Tty = mode.Tty };
        start.Argv.AddRange(args.Command);
        if (mode.Tty) start.Size = Terminal.RawTerminal.CurrentSize();
        using var stream = agent.StartExecAsync(start, Timeout.InfiniteTimeSpan).GetAwaiter().GetResult();
        return Terminal.StdioRelay.RunAsync(stream, mode).GetAwaiter().GetResult();
    }
}

/// <summary>The mutable-pod entrypoints: app/add, app/start, app/stop, app/rm. Exit codes as rkt's
/// stage0 reads them (STAGE1-ABI.md): app/stop exits 5 only when the pod has no such app
/// (systemctl's "unit not loaded"); stopping an app that exists but is not running succeeds.</summary>
internal static class AppEntrypoints
{
    public const int NoSuchApp = 5;

    public static int Add(string[] argv)
    {
        var args = AppArguments.Parse(argv, "app/add");
        var files = Stage1Files.ForCurrentPod();
        var pod = PodManifest.Load(files.Pod.Manifest);
        var app = pod.App(args.App) ?? throw new Stage1Exception($"app/add: the pod manifest has no app {args.App}");
        // Only this app's root and the volumes it mounts; other exports are already there.
        var wanted = PodApps.Exports(files, pod)
            .Where(e => e.Key == Stage1Files.AppExport(app.Name) || app.Mounts.Any(m => e.Key == Stage1Files.VolumeExport(m.Volume)))
            .ToDictionary(e => e.Key, e => e.Value);
        PodApps.EnsureExports(new VmmControlClient(files.ControlSocket), wanted);
        var request = PodApps.AddAppRequest(files, pod, app);
        using var agent = Supervision.PodUserSession.Enter(files).Agent(); // root's work is done
        agent.AddAppAsync(request).GetAwaiter().GetResult();
        return 0;
    }

    public static int Start(string[] argv)
    {
        var args = AppArguments.Parse(argv, "app/start");
        var files = Stage1Files.ForCurrentPod();
        // What a restart needs from the pod directory, read while we may.
        var pod = PodManifest.Load(files.Pod.Manifest);
        var restart = pod.App(args.App) is { } app ? PodApps.AddAppRequest(files, pod, app) : null;
        using var agent = Supervision.PodUserSession.Enter(files).Agent();
        var status = agent.AppStatusAsync(args.App).GetAwaiter().GetResult();
        if (status.State == AppState.Exited && restart is not null)
        {
            // A restart: the agent runs a created app; make the exited one created again.
            agent.RemoveAppAsync(args.App).GetAwaiter().GetResult();
            agent.AddAppAsync(restart).GetAwaiter().GetResult();
        }
        agent.StartAppAsync(args.App).GetAwaiter().GetResult();
        return 0;
    }

    public static int Stop(string[] argv)
    {
        var args = AppArguments.Parse(argv, "app/stop");
        var files = Stage1Files.ForCurrentPod();
        using var agent = Supervision.PodUserSession.Enter(files).Agent();
        AppInfo status;
        try { status = agent.AppStatusAsync(args.App).GetAwaiter().GetResult(); }
        catch (AgentException e) when (e.Failure == AgentFailure.NotFound)
        {
            Console.Error.WriteLine($"app/stop: the pod has no app {args.App}");
            return NoSuchApp;
        }
        if (status.State == AppState.Running) agent.StopAppAsync(args.App, TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
        return 0;
    }

    /// <summary>Removes the app in the guest (its mounts of the export go), then the export (the
    /// VMM closes its host fds), so stage0 can unmount and delete the rootfs when we return. The
    /// control socket is root's: it is connected first, and the agent's reply is read as the pod's
    /// user, like every agent reply outside run's start.</summary>
    public static int Remove(string[] argv)
    {
        var args = AppArguments.Parse(argv, "app/rm");
        var files = Stage1Files.ForCurrentPod();
        using var control = VmmControlClient.ConnectNow(files.ControlSocket);
        using (var agent = Supervision.PodUserSession.Enter(files).Agent())
        {
            try { agent.RemoveAppAsync(args.App).GetAwaiter().GetResult(); }
            catch (AgentException e) when (e.Failure == AgentFailure.NotFound) { } // never added, or removed before: nothing left in the guest
        }
        if (control.ListExports().Any(e => e.Name == Stage1Files.AppExport(args.App)))
            control.RemoveExport(Stage1Files.AppExport(args.App));
        return 0;
    }
}

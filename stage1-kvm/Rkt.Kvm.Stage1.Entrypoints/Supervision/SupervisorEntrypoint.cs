using System.IO.Pipes;
using System.Runtime.InteropServices;

namespace Rkt.Kvm.Stage1.Entrypoints.Supervision;

/// <summary>
/// <c>rkt-kvm-stage1 supervise</c>, started by run once the pod's VM is up. It reads its plan,
/// confines itself (<see cref="PodUserSession"/>: the runtime directory, for the agent's socket,
/// and the logs directory stay reachable) before it reads a byte from the guest, and runs the
/// <see cref="PodSupervisor"/>. It reports back to run; it writes no pod file but the apps' logs.
/// </summary>
internal static class SupervisorEntrypoint
{
    public static int Execute(string[] argv)
    {
        // First: a stop by signal (^C on the user's terminal reaches us too) ends the pod cleanly rather than this process.
        using var stop = new CancellationTokenSource();
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        var args = SupervisorArguments.Parse(argv);
        var files = Stage1Files.ForCurrentPod();
        if (files.Uuid != args.Uuid) throw new Stage1Exception($"supervise: the UUID argument {args.Uuid} is not this pod's ({files.Uuid})");
        using var planPipe = new AnonymousPipeClientStream(PipeDirection.In, args.PlanFd.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var reportPipe = new AnonymousPipeClientStream(PipeDirection.Out, args.ReportFd.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var plan = SupervisorPlan.ReadFrom(planPipe);
        // Confined before it reads a byte from the guest; the logs are the only files it writes.
        var session = PodUserSession.Enter(files, files.LogsDir);
        var reporter = new SupervisorReporter(reportPipe);
        var vmExited = FollowRun(planPipe, stop);
        using var agent = session.Agent();
        var supervisor = new PodSupervisor(plan, reporter, app => session.PathIn(files.LogsDir, Path.GetFileName(files.AppLog(app))), vmExited, stop.Token);
        int code = supervisor.RunAsync(agent).GetAwaiter().GetResult();
        reporter.Send(new SupervisorReport.Result(code));
        return code;
    }

    /// <summary>
    /// Follows run's notices: a stop cancels <paramref name="stop"/>; the task completes when run
    /// says the VMM has exited, or when run is gone (the pipe's end: its VMM went with it).
    /// </summary>
    private static Task<string> FollowRun(Stream planPipe, CancellationTokenSource stop) => Task.Factory.StartNew(() =>
    {
        try
        {
            using var reader = new StreamReader(planPipe, leaveOpen: true);
            while (reader.ReadLine() is { } line)
            {
                var (stopNow, vmExited) = RunNotice.Parse(line);
                if (stopNow) stop.Cancel();
                if (vmExited is not null) return vmExited;
            }
        }
        catch (IOException) { }
        return "stage1 run, which held it, is gone";
    }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
}

using System.Diagnostics;
using System.IO.Pipes;
using System.Text;

namespace Rkt.Kvm.Stage1.Entrypoints.Supervision;

/// <summary>
/// run's side of the pod supervisor: starts <c>rkt-kvm-stage1 supervise</c> (this binary) with the
/// two pipes of <see cref="SupervisorContract"/> and our stdio (the apps' output, the user's
/// terminal), hands it the plan, passes on a stop and the VMM's exit (<see cref="RunNotice"/>),
/// and applies its reports, each checked, as they come. The child holds nothing of run's but
/// those pipes and stdio: every other fd run has is close-on-exec.
/// </summary>
internal sealed class SupervisorProcess : IDisposable
{
    private readonly Process _process;
    private readonly AnonymousPipeServerStream _plan;
    private readonly AnonymousPipeServerStream _reports;
    private readonly Lock _planLock = new();
    private SupervisorReport.Result? _result;
    /// <summary>Set once run stops listening: a report that comes later (from a fork that kept the pipe) is dropped.</summary>
    private volatile bool _finished;

    private SupervisorProcess(Process process, AnonymousPipeServerStream plan, AnonymousPipeServerStream reports)
    {
        _process = process;
        _plan = plan;
        _reports = reports;
    }

    public int Pid => _process.Id;

    public static SupervisorProcess Start(string uuid, SupervisorPlan plan)
    {
        // The child's ends are inheritable; nothing else run starts while they exist (run starts no
        // other process from here until the supervisor is gone), so only the supervisor gets them.
        var planPipe = new AnonymousPipeServerStream(PipeDirection.Out, HandleInheritability.Inheritable);
        var reportPipe = new AnonymousPipeServerStream(PipeDirection.In, HandleInheritability.Inheritable);
        try
        {
            // Our own ends stay ours (.NET makes both ends of an inheritable pipe so): were the
            // supervisor to hold the plan pipe's writing end, it would never see that run is gone.
            KeepToThisProcess(planPipe);
            KeepToThisProcess(reportPipe);
            var arguments = new SupervisorArguments(uuid, int.Parse(planPipe.GetClientHandleAsString(), System.Globalization.CultureInfo.InvariantCulture),
                int.Parse(reportPipe.GetClientHandleAsString(), System.Globalization.CultureInfo.InvariantCulture));
            var start = new ProcessStartInfo(Environment.ProcessPath ?? throw new Stage1Exception("cannot tell where rkt-kvm-stage1 is")) { UseShellExecute = false };
            foreach (var a in arguments.ToArgs()) start.ArgumentList.Add(a);
            start.Environment.Remove("NOTIFY_SOCKET"); // run tells systemd; the supervisor is not the unit's main process
            // In a network namespace of its own (only a loopback, down) when run may make one: it
            // dials the agent by path, and so reaches no abstract Unix socket of the host's and no network.
            Process? process = null;
            Posix.ChildNamespaces.StartWherePermitted(Posix.ChildNamespaces.Network, () => process = Process.Start(start));
            if (process is null) throw new Stage1Exception("cannot start the pod supervisor");
            planPipe.DisposeLocalCopyOfClientHandle();
            reportPipe.DisposeLocalCopyOfClientHandle();
            var supervisor = new SupervisorProcess(process, planPipe, reportPipe);
            try
            {
                planPipe.Write(plan.Serialize());
                planPipe.Flush();
            }
            catch (IOException e)
            {
                RunEntrypoint.Log($"the pod supervisor did not take its plan ({e.Message})");
            }
            return supervisor;
        }
        catch
        {
            planPipe.Dispose();
            reportPipe.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs until the supervisor exits and returns the pod's result: the supervisor's own, or 1
    /// when it ended without one (it failed, or was killed). <paramref name="apply"/> gets each
    /// valid report (on one thread, in order); <paramref name="vmExit"/> completing (with how the
    /// VMM ended) is passed on, and so is <paramref name="stop"/>, both as <see cref="RunNotice"/>
    /// lines: a pipe keeps a stop that comes before the supervisor listens, where a signal would kill it.
    /// </summary>
    public async Task<int> RunAsync(Task<string> vmExit, CancellationToken stop, Action<SupervisorReport> apply)
    {
        var reports = Task.Factory.StartNew(() => ReadReports(apply), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        var exited = _process.WaitForExitAsync();
        using (stop.Register(() => Tell(RunNotice.Stop)))
        {
            if (await Task.WhenAny(exited, vmExit) == vmExit) Tell(RunNotice.VmExited(vmExit.IsCompletedSuccessfully ? vmExit.Result : "the VMM is gone"));
            await exited;
        }
        // Its last reports are in the pipe; its end closes the pipe (no other process holds it).
        await Task.WhenAny(reports, Task.Delay(TimeSpan.FromSeconds(5)));
        _finished = true;
        if (_result is { } result) return result.Code;
        RunEntrypoint.Log($"the pod supervisor (pid {_process.Id}) ended without the pod's result ({Describe(_process.ExitCode)})");
        return 1;
    }

    private void Tell(string notice)
    {
        try
        {
            lock (_planLock)
            {
                _plan.Write(Encoding.UTF8.GetBytes(notice));
                _plan.Flush();
            }
        }
        catch (IOException) { } // it is gone already
    }

    private void ReadReports(Action<SupervisorReport> apply)
    {
        using var reader = new StreamReader(_reports, Encoding.UTF8, detectEncodingFromByteOrderMarks: false, bufferSize: 4096, leaveOpen: true);
        var line = new StringBuilder();
        int c;
        while ((c = reader.Read()) >= 0)
        {
            if (c != '\n')
            {
                // A line longer than the contract allows is cut off and refused, not buffered without end.
                if (line.Length <= SupervisorContract.MaxReportLine) line.Append((char)c);
                continue;
            }
            SupervisorReport report;
            try { report = SupervisorReport.Parse(line.ToString()); }
            catch (FormatException e)
            {
                RunEntrypoint.Log($"ignored a report from the pod supervisor: {e.Message}");
                line.Clear();
                continue;
            }
            line.Clear();
            if (_finished) return;
            if (report is SupervisorReport.Result r) _result = r;
            else apply(report);
        }
    }

    private static void KeepToThisProcess(AnonymousPipeServerStream pipe)
    {
        int fd = (int)pipe.SafePipeHandle.DangerousGetHandle();
        if (Tmds.Linux.LibC.fcntl(fd, Tmds.Linux.LibC.F_SETFD, Tmds.Linux.LibC.FD_CLOEXEC) < 0)
            throw new Posix.ErrnoException("fcntl(F_SETFD, FD_CLOEXEC) on the supervisor's pipe", Tmds.Linux.LibC.errno);
    }

    /// <summary>.NET gives a process killed by a signal the status 128 + its number; the supervisor itself exits with at most 5 when it has no result.</summary>
    private static string Describe(int status) => status > 128 ? $"killed by signal {status - 128}" : $"exit status {status}";

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            try { _process.Kill(); } catch (InvalidOperationException) { }
        }
        _process.Dispose();
        _plan.Dispose();
        _reports.Dispose();
    }
}

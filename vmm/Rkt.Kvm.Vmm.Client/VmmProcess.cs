using System.Diagnostics;
using System.Text;
using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Client;

/// <summary>
/// One <c>rkt-kvm-vmm</c> child process: started from a <see cref="VmmCommandLine"/>, its stderr (the
/// VMM's log) kept for error reports. Disposing kills a VMM that still runs. What runs inside the
/// VM, and how to tell it is ready, is the caller's business (AgentVmProcess for the guest agent).
/// </summary>
public sealed class VmmProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();

    public VmmCommandLine CommandLine { get; }

    /// <summary>Prepares the process; nothing runs until <see cref="Start"/>.</summary>
    public VmmProcess(string vmmPath, VmmCommandLine commandLine)
    {
        CommandLine = commandLine;
        _process = new Process { StartInfo = new ProcessStartInfo(vmmPath) { RedirectStandardError = true, UseShellExecute = false } };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
    }

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    /// <summary>The VMM's exit status (0: the guest powered off; see <c>rkt-kvm-vmm --help</c>).</summary>
    public int ExitCode => _process.ExitCode;

    /// <summary>
    /// Starts the VMM. A jailed one gets a PID namespace of its own (it is then PID 1 there and can
    /// name no other process) whenever this process may create namespaces (root; stage1 always
    /// is): a process cannot enter a PID namespace itself, so this is the only place it can come from.
    /// </summary>
    public void Start()
    {
        var line = CommandLine;
        bool ownNamespace = line.Jail && ChildNamespaces.CanUnshare;
        FileDescriptor? ownerPidfd = null;
        try
        {
            if (ownNamespace && line.OwnerPid == Environment.ProcessId)
            {
                // Our pid means nothing in the VMM's namespace: it gets a pidfd of us instead, inherited
                // (close-on-exec cleared for the spawn only; the VMM sets it again once it holds it).
                // A process another thread of ours starts meanwhile inherits it too: stage1 starts
                // its helpers one at a time, and a pidfd of us gives no power over us to another user.
                ownerPidfd = Pidfd.Open(Environment.ProcessId)!;
                ErrnoException.Check(Tmds.Linux.LibC.fcntl(ownerPidfd.Number, Tmds.Linux.LibC.F_SETFD, 0), "fcntl(pidfd, clear FD_CLOEXEC)");
                line = line with { OwnerPid = null, OwnerPidfd = ownerPidfd.Number };
            }
            _process.StartInfo.ArgumentList.Clear();
            foreach (var a in line.ToArguments()) _process.StartInfo.ArgumentList.Add(a);
            if (ownNamespace) ChildNamespaces.Start(ChildNamespaces.Pid, () => _process.Start());
            else _process.Start();
        }
        finally
        {
            ownerPidfd?.Dispose();
        }
        _process.BeginErrorReadLine();
    }

    /// <summary>Completes when the VMM has exited and its log is read to the end.</summary>
    public Task WaitForExitAsync(CancellationToken cancellation = default) => _process.WaitForExitAsync(cancellation);

    /// <summary>The guest console (from <see cref="VmmCommandLine.ConsoleLog"/>) and the VMM's own log, for error reports.</summary>
    public string Diagnostics()
    {
        string console = CommandLine.ConsoleLog is { } log && File.Exists(log) ? File.ReadAllText(log) : "(no console log)";
        lock (_stderr) return $"--- guest console ---\n{console.TrimEnd()}\n--- VMM log ---\n{_stderr.ToString().TrimEnd()}";
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill();
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException) { } // never started
        _process.Dispose();
    }
}

using System.Diagnostics;
using System.Text;

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
        var psi = new ProcessStartInfo(vmmPath) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in commandLine.ToArguments()) psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
    }

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    /// <summary>The VMM's exit status (0: the guest powered off; see <c>rkt-kvm-vmm --help</c>).</summary>
    public int ExitCode => _process.ExitCode;

    public void Start()
    {
        _process.Start();
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

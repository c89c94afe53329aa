using System.Runtime.InteropServices;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>
/// SIGTERM, SIGINT and SIGHUP stop the VM the way the control socket's stop does: the VMM exits
/// cleanly, its devices closed. Handled rather than left to their default action because in a PID
/// namespace of its own the VMM is that namespace's init, and the kernel does not deliver a signal
/// that init has no handler for (only SIGKILL and SIGSTOP reach it regardless): without this,
/// <c>kill &lt;vmm&gt;</c> from the host would do nothing.
/// </summary>
public sealed class StopSignals : IDisposable
{
    private readonly List<PosixSignalRegistration> _registrations;

    public StopSignals(Action<string> stop, Serilog.ILogger log)
    {
        _registrations = [.. new[] { (PosixSignal.SIGTERM, "SIGTERM"), (PosixSignal.SIGINT, "SIGINT"), (PosixSignal.SIGHUP, "SIGHUP") }
            .Select(s => PosixSignalRegistration.Create(s.Item1, context =>
            {
                context.Cancel = true; // no default action: the VM ends through stop
                log.Information("{Signal}: stopping the VM", s.Item2);
                stop($"stopped by {s.Item2}");
            }))];
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}

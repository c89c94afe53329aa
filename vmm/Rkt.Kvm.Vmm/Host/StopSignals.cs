using System.Runtime.InteropServices;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>
/// SIGTERM stops the VM the way the control socket's stop does: the VMM exits 0, its devices
/// closed. Handled rather than left to its default action because in a PID namespace of its own
/// the VMM is that namespace's init, and the kernel does not deliver a signal that init has no
/// handler for (only SIGKILL and SIGSTOP reach it regardless): without this, <c>kill &lt;vmm&gt;</c>
/// from the host would do nothing. SIGINT and SIGHUP are left alone on purpose: a ^C or a hang-up
/// on stage1's terminal reaches its whole process group, and stage1 then stops the pod's apps
/// gracefully before it ends the VM, which a VMM that stopped at once would cut short. (A VMM
/// started by hand, not its namespace's init, still dies of them, as any program does.)
/// </summary>
public sealed class StopSignals : IDisposable
{
    private readonly PosixSignalRegistration _term;

    public StopSignals(Action<string> stop, Serilog.ILogger log)
    {
        _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true; // no default action: the VM ends through stop
            log.Information("SIGTERM: stopping the VM");
            stop("stopped by SIGTERM");
        });
    }

    public void Dispose() => _term.Dispose();
}

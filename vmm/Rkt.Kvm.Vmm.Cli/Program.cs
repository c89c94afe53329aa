using System.Diagnostics;
using Rkt.Kvm.Vmm;
using Rkt.Kvm.Vmm.Boot;
using Rkt.Kvm.Vmm.Devices.VirtioNet;
using Rkt.Kvm.Vmm.Kvm;
using Rkt.Kvm.Vmm.Memory;
using Serilog;
using Serilog.Events;

namespace Rkt.Kvm.Vmm.Cli;

/// <summary>`rkt-kvm-vmm`: boots one VM and exits with its <see cref="VmExitStatus"/>.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var sinceStart = Stopwatch.StartNew();
        VmmOptions options;
        try
        {
            options = VmmOptions.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"rkt-kvm-vmm: {e.Message} (see rkt-kvm-vmm --help)");
            return (int)VmExitStatus.VmmError;
        }
        if (options.ShowHelp)
        {
            Console.Out.Write(VmmOptions.Usage);
            return 0;
        }
        if (options.Machine.Jail && !Host.Confinement.VmmJail.IsInside)
        {
            // Returns only by failing: on success the VMM starts over in its own namespaces (same pid).
            try { Host.Confinement.VmmJail.Enter(args); }
            catch (IOException e)
            {
                Console.Error.WriteLine($"rkt-kvm-vmm: {e.Message} (--jail=off runs without the jail, for debugging only)");
                return (int)VmExitStatus.VmmError;
            }
        }

        using var log = new LoggerConfiguration()
            .MinimumLevel.Is(options.Debug ? LogEventLevel.Debug : options.Quiet ? LogEventLevel.Warning : LogEventLevel.Information)
            .WriteTo.Console(standardErrorFromLevel: LogEventLevel.Verbose, outputTemplate: "[vmm {Timestamp:HH:mm:ss.fff} {Level:u3}] {Message:lj}{NewLine}")
            .CreateLogger();
        if (options.Machine.Jail && Environment.ProcessId != 1)
            log.Warning("The VMM is not PID 1 of a PID namespace of its own: whoever started it did not give it one (stage1 does), so it can still see and name the host's processes");
        try
        {
            using var machine = Machine.Create(options.Machine, () => OpenConsoleTargets(options), log, sinceStart);
            var result = machine.Run();
            var level = result.Status == VmExitStatus.GuestShutdown ? LogEventLevel.Debug : LogEventLevel.Error;
            log.Write(level, "VM exited ({Status}, exit status {Code}): {Reason}", result.Status, (int)result.Status, result.Reason);
            log.Dispose();
            // vCPU threads of a halted guest may still sit in KVM_RUN; the process exit ends them.
            Environment.Exit((int)result.Status);
            return (int)result.Status;
        }
        catch (Exception e) when (e is BootException or Rkt.Kvm.Vmm.Snapshot.SnapshotException or KvmException or GuestMemoryException or TapException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"rkt-kvm-vmm: {e.Message}");
            return (int)VmExitStatus.VmmError;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"rkt-kvm-vmm: internal error: {(options.Debug ? e.ToString() : e.Message)}");
            return (int)VmExitStatus.VmmError;
        }
    }

    private static IReadOnlyList<Stream> OpenConsoleTargets(VmmOptions options)
    {
        var targets = new List<Stream>();
        if (options.ConsoleToStdout) targets.Add(Console.OpenStandardOutput());
        if (options.ConsoleLogPath is { } path)
            targets.Add(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16));
        return targets;
    }
}

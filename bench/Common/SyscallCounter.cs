using System.Diagnostics;
using System.Globalization;

namespace Rkt.Kvm.Bench;

/// <summary>
/// Counts the system calls one process makes while it runs (<c>perf stat -e
/// raw_syscalls:sys_enter -p PID</c>, a kernel tracepoint: every call, on every thread, at a cost
/// to the process too small to matter here). What turns a per-call cost (bench/seccomp: what the
/// VMM's filters add to each call) into a per-operation one. Null from <see cref="Start"/> when
/// perf or the tracepoint is not there (not root, no linux-perf): the caller says so and goes on.
/// </summary>
public sealed class SyscallCounter
{
    private readonly Process _perf;

    private SyscallCounter(Process perf) => _perf = perf;

    public static SyscallCounter? Start(int pid)
    {
        try
        {
            var psi = new ProcessStartInfo("perf") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[] { "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", pid.ToString(CultureInfo.InvariantCulture) }) psi.ArgumentList.Add(a);
            var perf = Process.Start(psi)!;
            Thread.Sleep(300); // perf attaches to every thread before it counts; calls before that are not ours to count
            if (perf.HasExited) return null;
            return new SyscallCounter(perf);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null; // no perf
        }
    }

    /// <summary>Stops counting (SIGINT: perf prints its count and exits); null if perf printed none.</summary>
    public long? Stop()
    {
        Process.Start("kill", ["-INT", _perf.Id.ToString(CultureInfo.InvariantCulture)])!.WaitForExit();
        string output = _perf.StandardError.ReadToEnd();
        _perf.WaitForExit();
        _perf.Dispose();
        // CSV: "count,unit,event,..."; "<not counted>" or "<not supported>" when the event could not be read.
        foreach (var line in output.Split('\n'))
        {
            var fields = line.Split(',');
            if (fields.Length > 2 && fields[2] == "raw_syscalls:sys_enter" && long.TryParse(fields[0], CultureInfo.InvariantCulture, out long count)) return count;
        }
        return null;
    }
}

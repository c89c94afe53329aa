using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static Rkt.Kvm.Images.Confinement.ConfinementCalls;

namespace Rkt.Kvm.Images.Confinement;

/// <summary>
/// <c>rkt-kvm __extract</c>: the confined side of an extraction (<see cref="ExtractionContract"/>).
/// Reads its plan, loads what it will run, pivots into the destination, locks itself down
/// (<see cref="ExtractionJail"/>), applies the archives from their inherited fds, and reports.
/// </summary>
public static class ExtractionChild
{
    /// <param name="args">what follows the verb.</param>
    public static int Run(IReadOnlyList<string> args)
    {
        using var report = new StreamWriter(new FileStream(new SafeFileHandle(ExtractionContract.ReportFd, ownsHandle: false), FileAccess.Write, 1))
        { AutoFlush = true, NewLine = "\n" };
        try
        {
            var arguments = ExtractionContract.Parse(args);
            var plan = ExtractionContract.ReadPlan(ReadLine(ExtractionContract.PlanFd));
            var clock = System.Diagnostics.Stopwatch.StartNew();
            ExtractionJail.LoadEverythingNow();
            long loaded = clock.ElapsedMilliseconds;
            string root = ExtractionJail.PivotIntoDestination(ExtractionContract.RootFd);
            ExtractionJail.LockDown(ExtractionJail.Needed(plan.AllowDevices), plan.MaxBytes);
            Serilog.Log.Debug("Extraction child {Pid}: assemblies loaded in {Loaded} ms, confined in {Confined} ms",
                Environment.ProcessId, loaded, clock.ElapsedMilliseconds - loaded);
            if (arguments.Hook == ExtractionContract.TestHook.Escape) TryToEscape(report);
            if (arguments.Hook == ExtractionContract.TestHook.Pause)
            {
                report.WriteLine($"{ExtractionContract.Hook}paused {Environment.ProcessId}");
                ReadLine(ExtractionContract.PlanFd); // until the parent has looked
            }
            long pending = 0;
            PlannedExtraction.Apply(plan, root, applyOwners: true,
                i => new FileStream(new SafeFileHandle(ExtractionContract.FirstArchiveFd + i, ownsHandle: true), FileAccess.Read, 1 << 16),
                n =>
                {
                    if ((pending += n) < 1 << 20) return;
                    report.WriteLine(ExtractionContract.Progress + pending);
                    pending = 0;
                });
            if (pending > 0) report.WriteLine(ExtractionContract.Progress + pending);
            report.WriteLine(ExtractionContract.Ok);
            return 0;
        }
        catch (Exception e)
        {
            Serilog.Log.Debug(e, "Extraction failed");
            report.WriteLine(ExtractionContract.ErrorLine(e));
            return 1;
        }
    }

    /// <summary>One line from an fd, byte by byte: nothing past it is consumed.</summary>
    private static unsafe string ReadLine(int fd)
    {
        var bytes = new List<byte>();
        byte b;
        while (true)
        {
            nint n = read(fd, &b, 1);
            if (n < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
            if (n < 0) throw Failure($"read fd {fd}");
            if (n == 0 || b == '\n') break;
            bytes.Add(b);
        }
        return System.Text.Encoding.UTF8.GetString([.. bytes]);
    }

    /// <summary>The escape hook: what a bug in the path checks would try, from the locked-down child.
    /// Each host path must be missing; the socket must kill the child (SIGSYS).</summary>
    private static void TryToEscape(StreamWriter report)
    {
        foreach (var path in new[] { "/etc/passwd", "/proc/1/root/etc/passwd", "/proc/self/exe" })
        {
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            int errno = Marshal.GetLastPInvokeError();
            report.WriteLine($"{ExtractionContract.Hook}open {path}: {(fd >= 0 ? "opened" : Marshal.GetPInvokeErrorMessage(errno))}");
            if (fd >= 0) close(fd);
        }
        report.WriteLine($"{ExtractionContract.Hook}socket(AF_INET)");
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        report.WriteLine($"{ExtractionContract.Hook}socket(AF_INET) returned {s}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        if (s >= 0) close(s);
    }
}

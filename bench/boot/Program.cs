using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Bench.Boot;

/// <summary>
/// Boots the same vmlinux + initrd + RAM + command line with our VMM and with QEMU microvm,
/// alternating, several times each, and reports: time from process start to init's first line,
/// VMM overhead RSS (everything but guest RAM) once init runs, and our VMM's own start-up time
/// (process start to first vCPU entry). Prints RESULT lines at the end.
/// </summary>
public static class Program
{
    private const string InitMarker = "rkt-kvm-guest: kernel";
    private const int MemoryMiB = 128;
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(4);

    public static int Main(string[] args)
    {
        var o = Options.Parse(args);
        string qemu = FindQemu();
        // The exact command line our VMM gives the guest (its own options + ours), so QEMU gets the same.
        string extra = "quiet rkt.init=hang";
        string cmdline = ProbeCmdline(o, extra);
        Console.WriteLine($"kernel:  {o.Kernel}\ninitrd:  {o.Initrd}\nmemory:  {MemoryMiB} MiB, 1 vCPU\ncmdline: {cmdline}\n");

        var ours = new List<Sample>();
        var theirs = new List<Sample>();
        for (int i = 0; i < o.Runs; i++)
        {
            var a = Boot("rkt-kvm-vmm", o.Vmm, ["--kernel", o.Kernel, "--initrd", o.Initrd, "--memory", MemoryMiB.ToString(), "--cmdline", extra, "--debug", "--console", "stdout"]);
            ours.Add(a);
            Console.WriteLine($"run {i + 1}: ours boot {a.BootMs:F0} ms, overhead RSS {a.OverheadRssKiB} KiB, start-up {a.StartupMs:F1} ms");
            var b = Boot("qemu", qemu,
            [
                "-enable-kvm", "-M", "microvm,x-option-roms=off,pit=on,pic=on,rtc=off,isa-serial=on",
                "-cpu", "qemu64,-cx16,+xsaveerptr", "-m", MemoryMiB.ToString(), "-smp", "1", "-nographic", "-nodefaults",
                "-serial", "stdio", "-no-reboot", "-kernel", o.Kernel, "-initrd", o.Initrd, "-append", cmdline,
            ]);
            theirs.Add(b);
            Console.WriteLine($"run {i + 1}: qemu boot {b.BootMs:F0} ms, overhead RSS {b.OverheadRssKiB} KiB");
        }

        double bootOurs = Median(ours.Select(s => s.BootMs)), bootRef = Median(theirs.Select(s => s.BootMs));
        double rssOurs = Median(ours.Select(s => (double)s.OverheadRssKiB)), rssRef = Median(theirs.Select(s => (double)s.OverheadRssKiB));
        double startup = Median(ours.Select(s => s.StartupMs));
        Console.WriteLine();
        Console.WriteLine(Result("boot_to_init_median", bootOurs, "ms", bootRef));
        Console.WriteLine(Result("vmm_overhead_rss_median", rssOurs, "KiB", rssRef));
        Console.WriteLine(Result("vmm_startup_to_first_vcpu_entry_median", startup, "ms", null));
        return 0;
    }

    private static string Result(string name, double ours, string unit, double? reference) =>
        reference is { } r
            ? string.Create(CultureInfo.InvariantCulture, $"RESULT {name} ours={ours:F1}{unit} ref={r:F1}{unit} ratio={ours / r:F3}")
            : string.Create(CultureInfo.InvariantCulture, $"RESULT {name} ours={ours:F1}{unit}");

    private sealed record Sample(double BootMs, long OverheadRssKiB, double StartupMs);

    /// <summary>Starts a VMM, waits for init's first line, samples memory, kills it.</summary>
    private static Sample Boot(string label, string program, IReadOnlyList<string> args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var marker = new TaskCompletionSource<double>(TaskCreationOptions.RunContinuationsAsynchronously);
        double? firstEntryUnixUs = null;
        var stderr = new List<string>();
        var watch = new Stopwatch();
        long spawnUnixUs = UnixMicros();
        watch.Start();
        using var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, e) => { if (e.Data?.Contains(InitMarker) == true) marker.TrySetResult(watch.Elapsed.TotalMilliseconds); };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (stderr) stderr.Add(e.Data);
            var m = Regex.Match(e.Data, @"First vCPU entry .* \(unix (\d+) µs\)");
            if (m.Success) firstEntryUnixUs = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try
        {
            if (!marker.Task.Wait(BootTimeout))
                throw new TimeoutException($"{label} did not reach init within {BootTimeout.TotalMinutes} minutes: {string.Join('\n', stderr)}");
            double bootMs = marker.Task.Result;
            long rss = OverheadRssKiB(p.Id, MemoryMiB);
            double startup = firstEntryUnixUs is { } fe ? (fe - spawnUnixUs) / 1000.0 : double.NaN;
            return new Sample(bootMs, rss, startup);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
    }

    /// <summary>
    /// Resident memory of the process minus its guest-RAM mapping(s): the anonymous mappings at
    /// least as large as the guest's RAM. That is what the VMM itself costs per VM.
    /// </summary>
    private static long OverheadRssKiB(int pid, int guestMiB)
    {
        long total = 0, guest = 0, size = 0;
        foreach (string line in File.ReadLines($"/proc/{pid}/smaps"))
        {
            if (line.StartsWith("Size:", StringComparison.Ordinal)) size = KiB(line);
            else if (line.StartsWith("Rss:", StringComparison.Ordinal))
            {
                long rss = KiB(line);
                total += rss;
                if (size >= guestMiB * 1024L) guest += rss;
            }
        }
        return total - guest;
    }

    private static long KiB(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    private static long UnixMicros() => (DateTime.UtcNow - DateTime.UnixEpoch).Ticks / 10;

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    private static string ProbeCmdline(Options o, string extra)
    {
        // A zero-vCPU-time probe: the VMM logs its final command line at --debug before booting; we stop it right after.
        var psi = new ProcessStartInfo(o.Vmm) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--kernel", o.Kernel, "--initrd", o.Initrd, "--memory", MemoryMiB.ToString(), "--cmdline", extra, "--debug", "--console", "none" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string? line;
        while ((line = p.StandardError.ReadLine()) is not null)
        {
            var m = Regex.Match(line, "cmdline \"(.*)\"");
            if (m.Success)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                return m.Groups[1].Value;
            }
        }
        throw new InvalidOperationException("The VMM did not report its kernel command line.");
    }

    private static string FindQemu()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            string path = Path.Combine(dir, "qemu-system-x86_64");
            if (File.Exists(path)) return path;
        }
        throw new InvalidOperationException("qemu-system-x86_64 is not installed (Debian package qemu-system-x86; `make deps` installs it).");
    }

    private sealed record Options(string Vmm, string Kernel, string Initrd, int Runs)
    {
        public static Options Parse(string[] args)
        {
            string Get(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"{name} is required");
            int runs = args.Contains("--runs") ? int.Parse(Get("--runs"), CultureInfo.InvariantCulture) : 3;
            return new Options(Get("--vmm"), Get("--kernel"), Get("--initrd"), runs);
        }
    }
}

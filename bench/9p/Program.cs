using System.Diagnostics;
using System.Globalization;
using Rkt.Kvm.Bench;

namespace Rkt.Kvm.Bench.NineP;

/// <summary>
/// Boots the same kernel and the same p9bench initramfs (p9bench.c as /init) with our VMM
/// (<c>--9p-export bench=DIR</c>) and with QEMU microvm (<c>-device virtio-9p-device</c> on a
/// <c>local</c> fsdev of the same DIR), alternating. The guest mounts the export with identical
/// options and runs a 64 MiB write (+fsync), its read-back and 2,000 lstat calls, three times per
/// boot, printing a marker line as each phase begins and ends. Phases are timed on the host's clock
/// by when those lines arrive (the guest's clock is unreliable on nested PVM hosts). Prints each
/// run, then RESULT lines with the medians over all runs.
/// </summary>
public static class Program
{
    private const int MemoryMiB = 256;
    private static int StatFiles = 2000; // p9bench.c's STAT_FILES (--stat-files, as run.sh compiled it)
    private const int FileMiB = 64;     // p9bench.c's FILE_MIB
    private static readonly TimeSpan RunTimeout = TimeSpan.FromMinutes(15);

    public static int Main(string[] args)
    {
        string Get(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"{name} is required");
        string vmm = Get("--vmm"), kernel = Get("--kernel"), initrd = Get("--initrd"), work = Get("--work");
        int boots = args.Contains("--boots") ? int.Parse(Get("--boots"), CultureInfo.InvariantCulture) : 1;
        if (args.Contains("--stat-files")) StatFiles = int.Parse(Get("--stat-files"), CultureInfo.InvariantCulture);

        string export = PrepareExport(Path.Join(work, "export"));
        string qemu = BenchSupport.FindQemu();
        string extra = "quiet";
        string cmdline = BenchSupport.WithoutVirtioMmioDevices(
            BenchSupport.ProbeCmdline(vmm, ["--kernel", kernel, "--initrd", initrd, "--memory", MemoryMiB.ToString(CultureInfo.InvariantCulture)], extra));
        Console.WriteLine($"kernel:  {kernel}\ninitrd:  {initrd} (p9bench.c as /init)\nexport:  {export} ({StatFiles} small files + a 64 MiB file written by the guest)\n" +
                          $"memory:  {MemoryMiB} MiB, 1 vCPU\nqemu:    {BenchSupport.QemuVersion(qemu)}\n");

        var ours = new Dictionary<string, List<double>>();
        var unconfined = new Dictionary<string, List<double>>();
        var theirs = new Dictionary<string, List<double>>();
        bool referenceOnly = args.Contains("--reference-only");
        // Only what confinement costs (ours confined against ours unconfined), without QEMU: on slow hosts a boot of each takes minutes.
        bool confinementOnly = args.Contains("--confinement-only");
        for (int i = 0; i < boots; i++)
        {
            string[] ourArgs = ["--kernel", kernel, "--initrd", initrd, "--memory", MemoryMiB.ToString(CultureInfo.InvariantCulture), "--cmdline", extra,
                 "--console", "stdout", "--9p-export", $"bench={export}"];
            if (!referenceOnly)
            {
                // Confined as a pod's VMM is: jailed and filtered (the defaults), as an unprivileged user of its own (PodVmmUser's range).
                Collect(ours, Run("ours", vmm, [.. ourArgs, "--user", "2046820394:2046820394"]));
                // What confinement costs: the same VMM without its jail, seccomp filter and user.
                Collect(unconfined, Run("ours unconfined", vmm, [.. ourArgs, "--jail", "off", "--seccomp", "off"]));
            }
            if (confinementOnly) continue;
            var qemuArgs = BenchSupport.MicrovmArgs(kernel, initrd, MemoryMiB, cmdline);
            qemuArgs.AddRange(["-fsdev", $"local,id=bench,path={export},security_model=passthrough", "-device", "virtio-9p-device,fsdev=bench,mount_tag=rkt"]);
            Collect(theirs, Run("qemu", qemu, qemuArgs));
        }

        if (referenceOnly)
        {
            foreach (var (name, values) in theirs) Console.WriteLine(BenchSupport.Result($"9p_qemu_{name}", BenchSupport.Median(values), "", null, "F2"));
            return 0;
        }
        Console.WriteLine();
        if (!confinementOnly)
        {
            Console.WriteLine(BenchSupport.Result("9p_write_64mib", BenchSupport.Median(ours["write_mib_s"]), "MiB/s", BenchSupport.Median(theirs["write_mib_s"]), "F2"));
            Console.WriteLine(BenchSupport.Result("9p_read_64mib", BenchSupport.Median(ours["read_mib_s"]), "MiB/s", BenchSupport.Median(theirs["read_mib_s"]), "F2"));
            Console.WriteLine(BenchSupport.Result($"9p_stat_{StatFiles}_files", BenchSupport.Median(ours["stat_per_s"]), "stat/s", BenchSupport.Median(theirs["stat_per_s"])));
        }
        Console.WriteLine(BenchSupport.Result("9p_write_64mib_confined_vs_not", BenchSupport.Median(ours["write_mib_s"]), "MiB/s", BenchSupport.Median(unconfined["write_mib_s"]), "F2"));
        Console.WriteLine(BenchSupport.Result("9p_read_64mib_confined_vs_not", BenchSupport.Median(ours["read_mib_s"]), "MiB/s", BenchSupport.Median(unconfined["read_mib_s"]), "F2"));
        Console.WriteLine(BenchSupport.Result($"9p_stat_{StatFiles}_files_confined_vs_not", BenchSupport.Median(ours["stat_per_s"]), "stat/s", BenchSupport.Median(unconfined["stat_per_s"])));
        return 0;
    }

    /// <summary>DIR/files/f0000..f1999 (a few bytes each), fresh for the run.</summary>
    private static string PrepareExport(string dir)
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(Path.Join(dir, "files"));
        for (int i = 0; i < StatFiles; i++)
            File.WriteAllText(Path.Join(dir, "files", $"f{i:D4}"), $"file {i}\n");
        return Path.GetFullPath(dir);
    }

    private static void Collect(Dictionary<string, List<double>> into, Dictionary<string, List<double>> run)
    {
        foreach (var (name, values) in run)
        {
            if (!into.TryGetValue(name, out var list)) into[name] = list = [];
            list.AddRange(values);
        }
    }

    /// <summary>Boots one VMM, collects the guest's "P9BENCH name run value" lines until "P9BENCH done".</summary>
    private static Dictionary<string, List<double>> Run(string label, string program, IReadOnlyList<string> args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var figures = new Dictionary<string, List<double>>();
        var begun = new Dictionary<string, double>();
        var clock = Stopwatch.StartNew();
        var done = new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var tail = new Queue<string>();
        using var p = Process.Start(psi)!;
        void OnLine(string? line)
        {
            if (line is null) return;
            lock (tail) { tail.Enqueue(line); if (tail.Count > 40) tail.Dequeue(); }
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            int at = Array.IndexOf(parts, "P9BENCH");
            if (at < 0) return;
            parts = parts[at..];
            if (parts.Length >= 2 && parts[1] == "done") done.TrySetResult(null);
            else if (parts.Length >= 2 && parts[1] == "error") done.TrySetResult(line);
            else if (parts.Length == 5 && parts[1] == "mark")
            {
                double now = clock.Elapsed.TotalSeconds;
                string key = $"{parts[2]} {parts[3]}";
                if (parts[4] == "begin") { lock (begun) begun[key] = now; return; }
                double seconds;
                lock (begun) seconds = now - begun[key];
                var (name, value) = parts[2] switch
                {
                    "write" => ("write_mib_s", FileMiB / seconds),
                    "read" => ("read_mib_s", FileMiB / seconds),
                    "stat" => ("stat_per_s", StatFiles / seconds),
                    _ => (null, 0),
                };
                if (name is null) { done.TrySetResult($"an unknown phase: {line}"); return; }
                lock (figures) { if (!figures.TryGetValue(name, out var l)) figures[name] = l = []; l.Add(value); }
                Console.WriteLine($"{label,-5} run {parts[3]}: {name} {value:F2} (host clock; {seconds:F1} s)");
            }
            else if (parts.Length == 5 && parts[1] == "guest") Console.WriteLine($"{label,-5} run {parts[3]}: {parts[2]} {parts[4]} (guest clock)");
        }
        p.OutputDataReceived += (_, e) => OnLine(e.Data);
        p.ErrorDataReceived += (_, e) => OnLine(e.Data);
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try
        {
            int which = Task.WaitAny([done.Task, p.WaitForExitAsync()], RunTimeout);
            if (which != 0 || done.Task.Result is not null)
            {
                string why = which < 0 ? $"did not finish within {RunTimeout.TotalMinutes} minutes"
                    : which == 1 ? $"exited with status {p.ExitCode} before the guest finished" : $"guest failed: {done.Task.Result}";
                string log;
                lock (tail) log = string.Join('\n', tail);
                throw new InvalidOperationException($"{label} {why}:\n{log}");
            }
            return figures;
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
    }
}

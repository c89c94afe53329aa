using System.Diagnostics;
using System.Globalization;
using Rkt.Kvm.Bench;

namespace Rkt.Kvm.Bench.Pod;

/// <summary>
/// Pods through rkt-kvm as a user runs them, warm (each VM restored from the data directory's
/// template) beside cold (a data directory with templates turned off, every VM booted), measured
/// in the same run: per `rkt-kvm run busybox --exec=/bin/true` the wall time, VMM start → agent
/// ready and app start (stage1's timeline); pods per minute back to back; what making the template
/// cost; app add/start latency on an idle warm `app sandbox`; and host memory (PSS, so pages shared
/// between VMs count once) of N idle sandboxes of each kind.
/// </summary>
public static class Program
{
    private sealed record PodRun(double WallMs, double VmmToReadyMs, double AppStartMs);

    public static int Main(string[] args)
    {
        string Get(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"{name} is required");
        string cli = Get("--cli"), stage1 = Get("--stage1"), busybox = Get("--busybox"), work = Get("--work");
        int runs = args.Contains("--runs") ? int.Parse(Get("--runs"), CultureInfo.InvariantCulture) : 3;
        int idle = args.Contains("--idle") ? int.Parse(Get("--idle"), CultureInfo.InvariantCulture) : 10;
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        var env = new Dictionary<string, string> { ["RKT_KVM_STAGE1"] = stage1 };
        string coldData = Path.Join(work, "cold"), warmData = Path.Join(work, "warm");
        foreach (var data in new[] { coldData, warmData }) Cli(cli, data, env, "image", "import", busybox);
        // The administrator's switch: this data directory never uses templates.
        Directory.CreateDirectory(Path.Join(coldData, "stage1-kvm"));
        File.WriteAllText(Path.Join(coldData, "stage1-kvm", "no-templates"), "");

        var template = RunTrue(cli, warmData, env, work, "template");
        Console.WriteLine($"first warm pod (makes the template): {template.WallMs:F0} ms");
        var warm = Enumerable.Range(0, runs).Select(i => RunTrue(cli, warmData, env, work, $"warm {i + 1}")).ToList();
        var cold = Enumerable.Range(0, runs).Select(i => RunTrue(cli, coldData, env, work, $"cold {i + 1}")).ToList();

        // An idle warm sandbox: app add and app start latency.
        var (addMs, startMs, firstLineMs) = SandboxApp(cli, warmData, env, work);

        // N idle sandboxes of each kind at once: host memory.
        double warmPss = IdlePss(cli, warmData, env, work, idle), coldPss = IdlePss(cli, coldData, env, work, idle);
        Console.WriteLine($"{idle} idle sandboxes: warm {warmPss / 1024:F0} MiB PSS, cold {coldPss / 1024:F0} MiB PSS");
        foreach (var data in new[] { coldData, warmData }) Cli(cli, data, env, "gc", "--grace-period=0s");

        double Med(IEnumerable<PodRun> r, Func<PodRun, double> f) => BenchSupport.Median(r.Select(f).ToList());
        Console.WriteLine();
        Console.WriteLine(BenchSupport.Result("pod_run_true_wall", Med(warm, r => r.WallMs), "ms", Med(cold, r => r.WallMs), "F0"));
        Console.WriteLine(BenchSupport.Result("vmm_start_to_agent_ready", Med(warm, r => r.VmmToReadyMs), "ms", Med(cold, r => r.VmmToReadyMs), "F0"));
        Console.WriteLine(BenchSupport.Result("app_start_in_pod", Med(warm, r => r.AppStartMs), "ms", Med(cold, r => r.AppStartMs), "F0"));
        Console.WriteLine(BenchSupport.Result("pods_per_minute_back_to_back", 60_000 / warm.Average(r => r.WallMs), "", 60_000 / cold.Average(r => r.WallMs), "F2"));
        Console.WriteLine(BenchSupport.Result("first_pod_making_the_template_wall", template.WallMs, "ms", Med(cold, r => r.WallMs), "F0"));
        Console.WriteLine(BenchSupport.Result("app_add_latency", addMs, "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("app_start_latency", startMs, "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("app_start_to_first_output_line", firstLineMs, "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result($"idle_pods_{idle}_host_pss", warmPss, "KiB", coldPss, "F0"));
        return 0;
    }

    /// <summary>One `run busybox --exec=/bin/true`, split with stage1's timeline.</summary>
    private static PodRun RunTrue(string cli, string data, Dictionary<string, string> env, string work, string label)
    {
        var uuidFile = Path.Join(work, $"uuid-{label.Replace(' ', '-')}");
        var watch = Stopwatch.StartNew();
        Cli(cli, data, env, "run", "rkt-kvm.local/busybox", "--exec=/bin/true", $"--uuid-file-save={uuidFile}");
        double wall = watch.Elapsed.TotalMilliseconds;
        var t = Timeline(data, File.ReadAllText(uuidFile));
        var run = new PodRun(wall, t["agent-ready"] - t["vmm-start"], t["apps-started"] - t["agent-ready"]);
        Console.WriteLine($"{label}: {wall:F0} ms; VMM start -> agent ready {run.VmmToReadyMs:F0} ms; app start {run.AppStartMs:F0} ms " +
                          $"(ConfigurePod {t["pod-configured"] - t["agent-ready"]:F0}, AddApp {t["apps-added"] - t["pod-configured"]:F0}, StartApp {t["apps-started"] - t["apps-added"]:F0} ms)");
        return run;
    }

    private static Dictionary<string, double> Timeline(string data, string uuid) =>
        File.ReadAllLines(Path.Join(data, "pods", "run", uuid, "stage1-kvm", "timeline"))
            .Select(l => l.Split(' ')).GroupBy(p => p[0]).ToDictionary(g => g.Key, g => double.Parse(g.Last()[1], CultureInfo.InvariantCulture));

    private static (double AddMs, double StartMs, double FirstLineMs) SandboxApp(string cli, string data, Dictionary<string, string> env, string work)
    {
        var sandboxUuid = Path.Join(work, "uuid-sandbox");
        var sandbox = Start(cli, data, env, "app", "sandbox", $"--uuid-file-save={sandboxUuid}");
        try
        {
            var uuid = WaitForUuid(sandboxUuid);
            Cli(cli, data, env, "status", "--wait-ready=5m", uuid);
            var watch = Stopwatch.StartNew();
            Cli(cli, data, env, "app", "add", uuid, "rkt-kvm.local/busybox", "--name=idle", "--exec=/bin/sh", "--", "-c", "echo first; while true; do sleep 10; done", "---");
            double addMs = watch.Elapsed.TotalMilliseconds;
            watch.Restart();
            Cli(cli, data, env, "app", "start", uuid, "--app=idle");
            double startMs = watch.Elapsed.TotalMilliseconds;
            // app start → the app's first line in its log file (stage1 follows the agent's Logs stream).
            var log = Path.Join(data, "pods", "run", uuid, "stage1-kvm", "logs", "idle.log");
            var deadline = Stopwatch.StartNew();
            while (!File.Exists(log) || !File.ReadAllText(log).Contains("first\n", StringComparison.Ordinal))
            {
                if (deadline.Elapsed > TimeSpan.FromMinutes(5)) throw new TimeoutException($"the app's first line never reached {log}");
                Thread.Sleep(20);
            }
            double firstLineMs = watch.Elapsed.TotalMilliseconds;
            Console.WriteLine($"sandbox: app add {addMs:F0} ms, app start {startMs:F0} ms (first line after {firstLineMs:F0} ms)");
            Cli(cli, data, env, "stop", uuid);
            sandbox.WaitForExit(120_000);
            return (addMs, startMs, firstLineMs);
        }
        finally
        {
            if (!sandbox.HasExited) sandbox.Kill(entireProcessTree: true);
        }
    }

    /// <summary>
    /// Starts <paramref name="count"/> idle sandboxes one after another (each ready before the next
    /// starts: ten cold boots at once outlast stage1's 5-minute boot timeout on a 2-core nested host),
    /// lets them settle, sums their VMMs' PSS (KiB), stops them.
    /// </summary>
    private static double IdlePss(string cli, string data, Dictionary<string, string> env, string work, int count)
    {
        var uuidFiles = Enumerable.Range(0, count).Select(i => Path.Join(work, $"uuid-idle-{Path.GetFileName(data)}-{i}")).ToList();
        var sandboxes = new List<Process>();
        try
        {
            var uuids = new List<string>();
            foreach (var file in uuidFiles)
            {
                sandboxes.Add(Start(cli, data, env, "app", "sandbox", $"--uuid-file-save={file}"));
                uuids.Add(WaitForUuid(file));
                Cli(cli, data, env, "status", "--wait-ready=15m", uuids[^1]);
            }
            Thread.Sleep(5000); // let the guests settle
            double pss = uuids.Sum(uuid => PssKiB(int.Parse(File.ReadAllText(Path.Join(data, "pods", "run", uuid, "pid")).Trim(), CultureInfo.InvariantCulture)));
            foreach (var uuid in uuids) Cli(cli, data, env, "stop", uuid);
            foreach (var s in sandboxes) s.WaitForExit(120_000);
            return pss;
        }
        finally
        {
            foreach (var s in sandboxes) if (!s.HasExited) s.Kill(entireProcessTree: true);
        }
    }

    private static string WaitForUuid(string file)
    {
        var deadline = Stopwatch.StartNew();
        while (!File.Exists(file) || new FileInfo(file).Length == 0)
        {
            if (deadline.Elapsed > TimeSpan.FromMinutes(15)) throw new TimeoutException($"no pod UUID in {file}");
            Thread.Sleep(50);
        }
        return File.ReadAllText(file).Trim();
    }

    /// <summary>Proportional set size: a page shared by k processes counts 1/k in each, so the sum over pods is what they cost together.</summary>
    private static long PssKiB(int pid) =>
        long.Parse(File.ReadLines($"/proc/{pid}/smaps_rollup").First(l => l.StartsWith("Pss:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    private static long Now() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private static Process Start(string cli, string data, Dictionary<string, string> env, params string[] args)
    {
        var psi = new ProcessStartInfo(cli) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add($"--dir={data}");
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    private static void Cli(string cli, string data, Dictionary<string, string> env, params string[] args)
    {
        using var p = Start(cli, data, env, args);
        if (!p.WaitForExit(600_000)) { p.Kill(true); throw new TimeoutException($"rkt-kvm {string.Join(' ', args)} timed out"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"rkt-kvm {string.Join(' ', args)} exited {p.ExitCode}");
    }
}

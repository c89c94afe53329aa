using System.Diagnostics;
using System.Globalization;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Bench;

namespace Rkt.Kvm.Bench.Pod;

/// <summary>
/// Pods through rkt-kvm as a user runs them. Per `rkt-kvm run busybox --exec=/bin/true`: wall time
/// split into stage0 prep, VMM start, kernel (to the init thread; then initcalls, initramfs and agent
/// start), app start, app run, teardown (from
/// stage1's timeline and the guest's own clock); pods per minute back to back; then, on an idle
/// `app sandbox`: app add and app start latency and host memory (VMM RSS, which includes the guest
/// RAM actually touched, plus stage1's supervisor). Reference, measured in the same run: the same
/// VMM, kernel and agent booted bare (start → READY → Shutdown), i.e. a pod without stage0/stage1.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        string Get(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"{name} is required");
        string cli = Get("--cli"), stage1 = Get("--stage1"), busybox = Get("--busybox"), work = Get("--work");
        string vmm = Get("--vmm"), kernel = Get("--kernel"), initrd = Get("--initrd");
        int runs = args.Contains("--runs") ? int.Parse(Get("--runs"), CultureInfo.InvariantCulture) : 3;
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        var data = Path.Join(work, "data");
        var env = new Dictionary<string, string> { ["RKT_KVM_STAGE1"] = stage1, ["RKT_KVM_TIMELINE_GUEST"] = "1" };
        Cli(cli, data, env, "image", "import", busybox);

        var phases = new Dictionary<string, List<double>>();
        var walls = new List<double>();
        for (int i = 0; i < runs; i++)
        {
            var uuidFile = Path.Join(work, $"uuid-{i}");
            long t0 = Now();
            var watch = Stopwatch.StartNew();
            Cli(cli, data, env, "run", "rkt-kvm.local/busybox", "--exec=/bin/true", $"--uuid-file-save={uuidFile}");
            double wall = watch.Elapsed.TotalMilliseconds;
            long end = t0 + (long)wall;
            walls.Add(wall);
            var uuid = File.ReadAllText(uuidFile);
            var t = File.ReadAllLines(Path.Join(data, "pods", "run", uuid, "stage1-kvm", "timeline"))
                .Select(l => l.Split(' ')).ToDictionary(p => p[0], p => double.Parse(p[1], CultureInfo.InvariantCulture));
            double vmmToReady = t["agent-ready"] - t["vmm-start"], guest = t["guest-boot-to-ready-ms"], agent = t["agent-process-start-to-ready-ms"];
            var split = new Dictionary<string, double>
            {
                ["stage0_prep"] = t["stage1-process-start"] - t0,
                ["stage1_setup"] = t["vmm-start"] - t["stage1-process-start"],
                ["vmm_start"] = vmmToReady - guest,
                // PID 1's start time is when the kernel made the init thread, before the initcalls and the
                // initramfs unpacking; so the split is "kernel until init thread" and "initcalls + agent".
                ["kernel_to_init_thread"] = guest - agent,
                ["initcalls_and_agent_start"] = agent,
                ["app_start"] = t["apps-started"] - t["agent-ready"],
                ["app_exit"] = t["apps-done"] - t["apps-started"],
                ["teardown"] = end - t["apps-done"],
            };
            foreach (var (k, v) in split) (phases.TryGetValue(k, out var l) ? l : phases[k] = []).Add(v);
            Console.WriteLine($"run {i + 1}: {wall:F0} ms = " + string.Join(", ", split.Select(kv => $"{kv.Key} {kv.Value:F0}")));
        }

        // Reference: the bare VM, no stage0/stage1: VMM start → agent READY → Shutdown → exit.
        var bare = new List<double>();
        for (int i = 0; i < runs; i++)
        {
            var watch = Stopwatch.StartNew();
            using var vm = AgentVmProcess.StartAsync(new AgentVmOptions { VmmPath = vmm, CommandLine = AgentVmOptions.DefaultCommandLine(kernel, initrd) }).GetAwaiter().GetResult();
            vm.Client.Stub.Shutdown(new Rkt.Kvm.Agent.V1.ShutdownRequest());
            vm.WaitForExitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
            bare.Add(watch.Elapsed.TotalMilliseconds);
            Console.WriteLine($"bare VM {i + 1}: {bare[^1]:F0} ms");
        }

        // An idle sandbox: app add + app start latency, then host memory.
        var sandboxUuid = Path.Join(work, "uuid-sandbox");
        var sandbox = Start(cli, data, env, "app", "sandbox", $"--uuid-file-save={sandboxUuid}");
        double addMs, startMs, firstLineMs, stopMs;
        long vmmRssKiB, stage1RssKiB;
        try
        {
            while (!File.Exists(sandboxUuid) || new FileInfo(sandboxUuid).Length == 0) Thread.Sleep(50);
            var uuid = File.ReadAllText(sandboxUuid);
            Cli(cli, data, env, "status", "--wait-ready=5m", uuid);
            var watch = Stopwatch.StartNew();
            Cli(cli, data, env, "app", "add", uuid, "rkt-kvm.local/busybox", "--name=idle", "--exec=/bin/sh", "--", "-c", "echo first; while true; do sleep 10; done", "---");
            addMs = watch.Elapsed.TotalMilliseconds;
            watch.Restart();
            Cli(cli, data, env, "app", "start", uuid, "--app=idle");
            startMs = watch.Elapsed.TotalMilliseconds;
            // app start → the app's first line in its log file (stage1 follows the agent's Logs stream).
            var log = Path.Join(data, "pods", "run", uuid, "stage1-kvm", "logs", "idle.log");
            var firstLineDeadline = Stopwatch.StartNew();
            while (!File.Exists(log) || !File.ReadAllText(log).Contains("first\n", StringComparison.Ordinal))
            {
                if (firstLineDeadline.Elapsed > TimeSpan.FromMinutes(5)) throw new TimeoutException($"the app's first line never reached {log}");
                Thread.Sleep(20);
            }
            firstLineMs = watch.Elapsed.TotalMilliseconds;
            Thread.Sleep(5000); // let the guest settle
            var pod = Path.Join(data, "pods", "run", uuid);
            vmmRssKiB = RssKiB(int.Parse(File.ReadAllText(Path.Join(pod, "pid")).Trim(), CultureInfo.InvariantCulture));
            stage1RssKiB = RssKiB(int.Parse(File.ReadAllText(Path.Join(pod, "stage1-kvm", "run.pid")).Trim(), CultureInfo.InvariantCulture));
            Console.WriteLine($"sandbox: app add {addMs:F0} ms, app start {startMs:F0} ms (first line after {firstLineMs:F0} ms), VMM RSS {vmmRssKiB} KiB, stage1 run RSS {stage1RssKiB} KiB");
            watch.Restart();
            Cli(cli, data, env, "app", "stop", uuid, "--app=idle");
            stopMs = watch.Elapsed.TotalMilliseconds; // SIGTERM: sh dies at once (no trap)
            Console.WriteLine($"sandbox: app stop {stopMs:F0} ms");
            Cli(cli, data, env, "stop", uuid);
            sandbox.WaitForExit(120_000);
        }
        finally
        {
            if (!sandbox.HasExited) sandbox.Kill(entireProcessTree: true);
        }
        Cli(cli, data, env, "gc", "--grace-period=0s");

        double wallMedian = BenchSupport.Median(walls);
        Console.WriteLine();
        Console.WriteLine(BenchSupport.Result("pod_run_true_wall", wallMedian, "ms", BenchSupport.Median(bare), "F0"));
        foreach (var (name, values) in phases)
            Console.WriteLine(BenchSupport.Result($"pod_phase_{name}", BenchSupport.Median(values), "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("pods_per_minute_back_to_back", 60_000 / walls.Average(), "", 60_000 / bare.Average(), "F2"));
        Console.WriteLine(BenchSupport.Result("app_add_latency", addMs, "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("app_start_latency", startMs, "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("app_start_to_first_output_line", firstLineMs, "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("app_stop_latency", stopMs, "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("idle_pod_host_memory", vmmRssKiB + stage1RssKiB, "KiB", null, "F0"));
        return 0;
    }

    private static long Now() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private static long RssKiB(int pid) =>
        long.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

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

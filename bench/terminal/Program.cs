using System.Diagnostics;
using System.Globalization;
using System.Text;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Bench;

namespace Rkt.Kvm.Bench.Terminal;

/// <summary>
/// On one running pod (rkt-kvm run busybox, sleeping), through the agent's socket as stage1 enter
/// uses it: a keystroke's round trip through a terminal (one byte into an Exec with a tty running
/// <c>cat</c>; the terminal's echo and cat's copy come back) against the same byte through an Exec
/// on pipes (<c>cat</c> copies it back), and KiB/s of output from <c>cat FILE</c> on a terminal against
/// the same on a pipe. Medians; the reference is the pipe path measured in the same run.
/// </summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        string Get(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"{name} is required");
        string cli = Get("--cli"), stage1 = Get("--stage1"), busybox = Get("--busybox"), work = Get("--work");
        int keys = int.Parse(Get("--keys"), CultureInfo.InvariantCulture), kib = int.Parse(Get("--kib"), CultureInfo.InvariantCulture);
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        var data = Path.Join(work, "data");
        Cli(cli, data, stage1, "image", "import", busybox);
        var uuidFile = Path.Join(work, "uuid");
        using var pod = Start(cli, data, stage1, "run", "rkt-kvm.local/busybox", "--name=shell", "--exec=/bin/sleep", $"--uuid-file-save={uuidFile}", "--", "3600", "---");
        try
        {
            while (!File.Exists(uuidFile) || new FileInfo(uuidFile).Length == 0) Thread.Sleep(50);
            var uuid = File.ReadAllText(uuidFile);
            Cli(cli, data, stage1, "status", "--wait-ready=5m", uuid);
            var socket = File.ReadAllText(Path.Join(data, "pods", "run", uuid, "stage1-kvm", "runtime-dir")).Trim() + "/vm.sock";
            using var agent = AgentClient.ForVm(socket);
            await WaitRunning(agent);

            var tty = await RoundTrips(agent, tty: true, keys);
            var pipe = await RoundTrips(agent, tty: false, keys);
            Console.WriteLine($"keystroke round trip: terminal median {BenchSupport.Median(tty):F1} ms, pipes {BenchSupport.Median(pipe):F1} ms ({keys} each)");

            await Exec(agent, false, $"head -c {kib * 1024} /dev/zero | tr '\\0' x > /tmp/out");
            double ttyRate = await OutputRate(agent, tty: true, kib), pipeRate = await OutputRate(agent, tty: false, kib);
            Console.WriteLine($"{kib} KiB of output: terminal {ttyRate:F1} KiB/s, pipe {pipeRate:F1} KiB/s");
            Console.WriteLine();
            Console.WriteLine(BenchSupport.Result("keystroke_round_trip_tty", BenchSupport.Median(tty), "ms", BenchSupport.Median(pipe), "F1"));
            Console.WriteLine(BenchSupport.Result("output_throughput_tty", ttyRate, "KiB/s", pipeRate, "F1"));
            Cli(cli, data, stage1, "stop", uuid);
            pod.WaitForExit(120_000);
        }
        finally
        {
            if (!pod.HasExited) pod.Kill(entireProcessTree: true);
            Cli(cli, data, stage1, "gc", "--grace-period=0s");
        }
        return 0;
    }

    private static async Task WaitRunning(AgentClient agent)
    {
        for (int i = 0; i < 600; i++)
        {
            if ((await agent.ListAppsAsync()).Any(a => a.Name == "shell" && a.State == AppState.Running)) return;
            await Task.Delay(100);
        }
        throw new TimeoutException("the app never ran");
    }

    /// <summary>One Exec of <c>cat</c>; each round trip sends one byte and waits until it (or its echo) is back.</summary>
    private static async Task<List<double>> RoundTrips(AgentClient agent, bool tty, int count)
    {
        var start = new ExecStart { App = "shell", Tty = tty };
        // A terminal in raw mode without echo: exactly the byte comes back, as through the pipe.
        start.Argv.AddRange(["/bin/sh", "-c", tty ? "stty raw -echo; echo go; exec cat" : "echo go; exec cat"]);
        using var stream = await agent.StartExecAsync(start, TimeSpan.FromMinutes(10));
        await ReadUntil(stream, "go");
        var times = new List<double>();
        for (int i = 0; i < count; i++)
        {
            byte key = (byte)('a' + i % 26);
            var watch = Stopwatch.StartNew();
            await stream.WriteAsync(new[] { key });
            await ReadUntil(stream, ((char)key).ToString());
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
        await stream.CloseStdinAsync();
        if (tty) await stream.WriteAsync("\u0003"u8.ToArray()); // raw: ^C is a byte to cat; end it through the process instead
        return times;
    }

    private static async Task ReadUntil(ProcessStream stream, string text)
    {
        var seen = new StringBuilder();
        while (!seen.ToString().Contains(text, StringComparison.Ordinal))
        {
            var output = await stream.ReadAsync() ?? throw new InvalidOperationException($"the stream ended before '{text}'");
            if (output.Exit is not null) throw new InvalidOperationException($"the process exited before '{text}': {seen}");
            seen.Append(Encoding.Latin1.GetString(output.Data.Span));
        }
    }

    /// <summary>KiB/s of <c>cat /tmp/out</c> (no newlines, so the terminal's ONLCR adds nothing), first output byte to exit.</summary>
    private static async Task<double> OutputRate(AgentClient agent, bool tty, int kib)
    {
        var start = new ExecStart { App = "shell", Tty = tty };
        start.Argv.AddRange(["/bin/cat", "/tmp/out"]);
        using var stream = await agent.StartExecAsync(start, TimeSpan.FromMinutes(30));
        await stream.CloseStdinAsync();
        long bytes = 0;
        Stopwatch? watch = null;
        while (await stream.ReadAsync() is { } output && output.Exit is null)
        {
            watch ??= Stopwatch.StartNew();
            bytes += output.Data.Length;
        }
        if (bytes < kib * 1024L) throw new InvalidOperationException($"only {bytes} bytes arrived");
        return bytes / 1024.0 / watch!.Elapsed.TotalSeconds;
    }

    private static async Task Exec(AgentClient agent, bool tty, string script)
    {
        var start = new ExecStart { App = "shell", Tty = tty };
        start.Argv.AddRange(["/bin/sh", "-c", script]);
        var result = await agent.ExecAsync(start, timeout: TimeSpan.FromMinutes(5));
        if (result.ExitCode != 0) throw new InvalidOperationException($"{script}: exit {result.ExitCode}: {result.StderrText}");
    }

    private static void Cli(string cli, string data, string stage1, params string[] args)
    {
        using var p = Start(cli, data, stage1, args);
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"rkt-kvm {string.Join(' ', args)} exited {p.ExitCode}");
    }

    private static Process Start(string cli, string data, string stage1, params string[] args)
    {
        var psi = new ProcessStartInfo(cli) { UseShellExecute = false, RedirectStandardInput = true };
        psi.ArgumentList.Add($"--dir={data}");
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["RKT_KVM_STAGE1"] = stage1;
        var p = Process.Start(psi)!;
        p.StandardInput.Close();
        return p;
    }
}

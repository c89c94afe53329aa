using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using Rkt.Kvm.Agent;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Agent.Vm;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Bench.Vsock;

/// <summary>
/// Measures, in one run: unary gRPC round trips (median, p99) and streaming throughput each way
/// to the guest agent through our virtio-vsock; the same against the same agent binary serving
/// on a host Unix socket (the ceiling: no VM in the path); the same through the VMM with KVM's
/// eventfds switched off (notifies as MMIO exits); the same without the VMM's confinement
/// (--seccomp=off --jail=off: what the filter, the namespaces and the empty root cost), with the
/// VMM's system calls per round trip counted both ways (perf); and the agent's start-up inside the guest.
/// </summary>
public static class Program
{
    /// <param name="VmmSyscallsPerRoundTrip">the VMM's system calls per unary (or raw) round trip, every thread's; null where not counted.</param>
    private sealed record Figures(double MedianUs, double P99Us, double HostToGuestMiBs, double GuestToHostMiBs, double? VmmSyscallsPerRoundTrip = null);

    public static async Task<int> Main(string[] args)
    {
        var o = args.Select((a, i) => (a, i)).Where(x => x.a.StartsWith("--", StringComparison.Ordinal))
            .ToDictionary(x => x.a[2..], x => args[x.i + 1]);
        int calls = int.Parse(o.GetValueOrDefault("calls", "500"), CultureInfo.InvariantCulture);
        long bytes = long.Parse(o.GetValueOrDefault("mib", "64"), CultureInfo.InvariantCulture) << 20;
        int boots = int.Parse(o.GetValueOrDefault("boots", "1"), CultureInfo.InvariantCulture);
        // Sink and Source are the benchmark service's, which the agent serves only when its kernel command line asks.
        // Confined as a pod's VMM is: jailed and filtered (the defaults), as an unprivileged user of its own (PodVmmUser's range).
        var vmOptions = new AgentVmOptions { VmmPath = o["vmm"], CommandLine = AgentVmOptions.WithBenchService(AgentVmOptions.DefaultCommandLine(o["kernel"], o["initrd"])) with { User = new VmmUser(0x7A00_002A, 0x7A00_002A) } };

        Console.WriteLine($"== ceiling: the same agent on a host Unix socket ({calls} unary calls, {bytes >> 20} MiB each way)");
        var ceiling = await MeasureHostAgent(o["agent"], calls, bytes);
        Print(ceiling);

        Console.WriteLine("== ours: the agent in a VM, through virtio-vsock (ioeventfd + irqfd)");
        Figures ours;
        GuestInfoReply info;
        TimeSpan startToReady;
        using (var vm = await AgentVmProcess.StartAsync(vmOptions))
        {
            startToReady = vm.StartToReady;
            info = await vm.Client.GuestInfoAsync();
            ours = await Measure(vm.Client, calls, bytes, countPid: vm.Pid);
            await vm.Client.ShutdownAsync();
            await vm.WaitForExitAsync(TimeSpan.FromMinutes(2));
        }
        Print(ours);

        Console.WriteLine("== ours without KVM eventfds (notifies exit to a vCPU thread, interrupts by KVM_IRQ_LINE)");
        var exits = await MeasureVm(vmOptions with { CommandLine = vmOptions.CommandLine with { KvmEventFds = KvmEventFds.Off } }, calls, bytes);
        Print(exits);

        Console.WriteLine("== the VMM and guest kernel alone: a static C echo server as init, raw bytes through the hybrid socket");
        var rawOptions = vmOptions with { CommandLine = vmOptions.CommandLine with { Initrd = o["raw-initrd"] } };
        long rawBytes = Math.Min(bytes, 8L << 20);
        var raw = await MeasureRawEcho(rawOptions, calls, rawBytes, count: true);
        Console.WriteLine($"  64-byte round trip median {raw.MedianUs:F0} us, p99 {raw.P99Us:F0} us; echo {raw.HostToGuestMiBs:F2} MiB/s each way");

        // What confinement costs (--seccomp=off --jail=off, no --user): confined and unconfined VMs
        // alternate, one pair per boot, and the figures are medians over the boots: a single boot
        // on this kind of host varies by more than the few per cent being measured.
        Console.WriteLine($"== confined against not (--seccomp=off --jail=off), alternating, {boots} boot(s) each");
        static VmmCommandLine Unconfined(VmmCommandLine line) => line with { Seccomp = SeccompAction.Off, Jail = false, User = null };
        List<Figures> confined = [ours], unconfined = [], rawConfined = [raw], rawUnconfined = [];
        for (int i = 0; i < boots; i++)
        {
            if (i > 0) confined.Add(await MeasureVm(vmOptions, calls, bytes));
            unconfined.Add(await MeasureVm(vmOptions with { CommandLine = Unconfined(vmOptions.CommandLine) }, calls, bytes, count: i == 0));
            if (i > 0) rawConfined.Add(await MeasureRawEcho(rawOptions, calls, rawBytes));
            rawUnconfined.Add(await MeasureRawEcho(rawOptions with { CommandLine = Unconfined(rawOptions.CommandLine) }, calls, rawBytes, count: i == 0));
            Console.WriteLine($"  boot {i + 1}: agent rtt {confined[i].MedianUs:F0} vs {unconfined[i].MedianUs:F0} us, host->guest {confined[i].HostToGuestMiBs:F2} vs {unconfined[i].HostToGuestMiBs:F2} MiB/s, " +
                $"guest->host {confined[i].GuestToHostMiBs:F2} vs {unconfined[i].GuestToHostMiBs:F2} MiB/s; " +
                $"raw rtt {rawConfined[i].MedianUs:F0} vs {rawUnconfined[i].MedianUs:F0} us, echo {rawConfined[i].HostToGuestMiBs:F2} vs {rawUnconfined[i].HostToGuestMiBs:F2} MiB/s (confined vs not)");
        }
        static double Median(List<Figures> f, Func<Figures, double> pick) => Rkt.Kvm.Bench.BenchSupport.Median(f.Select(pick));

        var r = info.AtReady;
        Console.WriteLine($"""
            == agent start-up inside the guest (1 vCPU, 256 MiB)
              kernel boot -> agent ready   {info.BootToReadyMs} ms (VMM start -> READY on the host: {startToReady.TotalMilliseconds:F0} ms)
              agent Main -> ready          {info.MainToReadyUs / 1000.0:F0} ms (PID 1 exists from early kernel boot, so its process start time says little)
              at ready                     RSS {r.VmRssBytes >> 10} KiB (peak {r.VmHwmBytes >> 10} KiB), {r.MinorFaults} minor + {r.MajorFaults} major page faults,
                                           {r.ReadSyscalls} read + {r.WriteSyscalls} write syscalls, {r.Threads} threads
            """);

        Result("vsock_unary_rtt_median", ours.MedianUs, "us", ceiling.MedianUs);
        Result("vsock_unary_rtt_p99", ours.P99Us, "us", ceiling.P99Us);
        Result("vsock_stream_host_to_guest", ours.HostToGuestMiBs, "MiB/s", ceiling.HostToGuestMiBs);
        Result("vsock_stream_guest_to_host", ours.GuestToHostMiBs, "MiB/s", ceiling.GuestToHostMiBs);
        Result("vsock_raw_echo_rtt_median", raw.MedianUs, "us", ours.MedianUs);
        Result("vsock_raw_echo_throughput", raw.HostToGuestMiBs, "MiB/s");
        Result("vsock_unary_rtt_median_confined_vs_not", Median(confined, f => f.MedianUs), "us", Median(unconfined, f => f.MedianUs));
        Result("vsock_stream_host_to_guest_confined_vs_not", Median(confined, f => f.HostToGuestMiBs), "MiB/s", Median(unconfined, f => f.HostToGuestMiBs));
        Result("vsock_stream_guest_to_host_confined_vs_not", Median(confined, f => f.GuestToHostMiBs), "MiB/s", Median(unconfined, f => f.GuestToHostMiBs));
        Result("vsock_raw_echo_rtt_median_confined_vs_not", Median(rawConfined, f => f.MedianUs), "us", Median(rawUnconfined, f => f.MedianUs));
        Result("vsock_raw_echo_throughput_confined_vs_not", Median(rawConfined, f => f.HostToGuestMiBs), "MiB/s", Median(rawUnconfined, f => f.HostToGuestMiBs));
        // How many calls each round trip costs the VMM, confined and not (the same code paths: the
        // filters add time to calls, not calls); times bench/seccomp's per-call figures, what the filters cost per round trip.
        if (ours.VmmSyscallsPerRoundTrip is { } oc && unconfined[0].VmmSyscallsPerRoundTrip is { } uc)
            Result("vsock_vmm_syscalls_per_unary_rtt_confined_vs_not", oc, "", uc);
        else Console.WriteLine("  (VMM system calls not counted: needs perf with the raw_syscalls tracepoint, as root)");
        if (raw.VmmSyscallsPerRoundTrip is { } rc && rawUnconfined[0].VmmSyscallsPerRoundTrip is { } ruc)
            Result("vsock_vmm_syscalls_per_raw_rtt_confined_vs_not", rc, "", ruc);
        Result("vsock_unary_rtt_median_without_eventfds", exits.MedianUs, "us", ours.MedianUs);
        Result("vsock_stream_host_to_guest_without_eventfds", exits.HostToGuestMiBs, "MiB/s", ours.HostToGuestMiBs);
        Result("agent_main_to_ready", info.MainToReadyUs / 1000.0, "ms");
        Result("agent_boot_to_ready", info.BootToReadyMs, "ms");
        Result("agent_rss_at_ready", r.VmRssBytes / 1024.0, "KiB");
        Result("agent_page_faults_at_ready", r.MinorFaults + r.MajorFaults, "");
        Result("agent_rw_syscalls_at_ready", r.ReadSyscalls + r.WriteSyscalls, "");
        return 0;
    }

    /// <summary>A VM of its own with these options: measured, then shut down.</summary>
    private static async Task<Figures> MeasureVm(AgentVmOptions options, int calls, long bytes, bool count = false)
    {
        using var vm = await AgentVmProcess.StartAsync(options);
        var figures = await Measure(vm.Client, calls, bytes, count ? vm.Pid : null);
        await vm.Client.ShutdownAsync();
        await vm.WaitForExitAsync(TimeSpan.FromMinutes(2));
        return figures;
    }

    private static async Task<Figures> MeasureHostAgent(string agentPath, int calls, long bytes)
    {
        string dir = Directory.CreateTempSubdirectory("rkt-kvm-bench-vsock-").FullName;
        string socket = Path.Combine(dir, "agent.sock");
        var start = new ProcessStartInfo(agentPath) { ArgumentList = { "--listen-unix", socket }, UseShellExecute = false, RedirectStandardOutput = true };
        start.Environment[AgentProtocol.BenchServiceVariable] = "1"; // a host-process agent reads its own environment
        using var agent = Process.Start(start)!;
        try
        {
            using var client = AgentClient.ForUnixSocket(socket);
            await client.WaitUntilHealthyAsync(TimeSpan.FromSeconds(30));
            return await Measure(client, calls, bytes);
        }
        finally
        {
            agent.Kill();
            agent.WaitForExit();
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <param name="countPid">the VMM whose system calls to count during the round trips; null: none.</param>
    private static async Task<Figures> Measure(AgentClient client, int calls, long bytes, int? countPid = null)
    {
        for (int i = 0; i < 20; i++) await client.HealthAsync(); // warm the connection and both JITs/caches
        var samples = new double[calls];
        var counter = countPid is { } pid ? Rkt.Kvm.Bench.SyscallCounter.Start(pid) : null;
        for (int i = 0; i < calls; i++)
        {
            long start = Stopwatch.GetTimestamp();
            await client.HealthAsync();
            samples[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
        }
        double? perCall = counter?.Stop() is { } n ? (double)n / calls : null;
        Array.Sort(samples);

        const int chunk = 64 * 1024;
        var payload = ByteString.CopyFrom(new byte[chunk]);
        var watch = Stopwatch.StartNew();
        using (var sink = client.Bench.Sink(deadline: client.Deadline(TimeSpan.FromMinutes(10))))
        {
            for (long sent = 0; sent < bytes; sent += chunk) await sink.RequestStream.WriteAsync(new Chunk { Data = payload });
            await sink.RequestStream.CompleteAsync();
            var reply = await sink;
            if ((long)reply.Bytes != bytes) throw new InvalidOperationException($"Sink counted {reply.Bytes} bytes, not {bytes}.");
        }
        double up = bytes / 1048576.0 / watch.Elapsed.TotalSeconds;

        watch.Restart();
        long received = 0;
        using (var source = client.Bench.Source(new SourceRequest { Bytes = (ulong)bytes, ChunkSize = chunk }, deadline: client.Deadline(TimeSpan.FromMinutes(10))))
        {
            await foreach (var c in source.ResponseStream.ReadAllAsync()) received += c.Data.Length;
        }
        if (received != bytes) throw new InvalidOperationException($"Source sent {received} bytes, not {bytes}.");
        double down = bytes / 1048576.0 / watch.Elapsed.TotalSeconds;
        return new Figures(samples[calls / 2], samples[(int)(calls * 0.99)], up, down, perCall);
    }

    /// <summary>Round trips of 64 bytes and a streamed echo through the raw echo init (no gRPC, no .NET in the guest).</summary>
    private static async Task<Figures> MeasureRawEcho(AgentVmOptions options, int calls, long bytes, bool count = false)
    {
        using var vm = await AgentVmProcess.StartAsync(options);
        await using var stream = await AgentDialer.ConnectAsync(vm.SocketPath, AgentTransport.HybridVsock, 1024,
            TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(50));
        var small = new byte[64];
        var samples = new double[calls];
        var counter = count ? Rkt.Kvm.Bench.SyscallCounter.Start(vm.Pid) : null;
        for (int i = 0; i < calls; i++)
        {
            long start = Stopwatch.GetTimestamp();
            await stream.WriteAsync(small);
            await stream.ReadExactlyAsync(small);
            samples[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
        }
        double? perCall = counter?.Stop() is { } n ? (double)n / calls : null;
        Array.Sort(samples);
        var watch = Stopwatch.StartNew();
        var reader = Task.Run(async () =>
        {
            var buffer = new byte[1 << 20];
            for (long got = 0; got < bytes;) got += await stream.ReadAsync(buffer);
        });
        var block = new byte[64 * 1024];
        for (long sent = 0; sent < bytes; sent += block.Length) await stream.WriteAsync(block);
        await reader;
        double rate = bytes / 1048576.0 / watch.Elapsed.TotalSeconds;
        await stream.WriteAsync("Q"u8.ToArray());
        await vm.WaitForExitAsync(TimeSpan.FromMinutes(2));
        return new Figures(samples[calls / 2], samples[(int)(calls * 0.99)], rate, rate, perCall);
    }

    private static void Print(Figures f) =>
        Console.WriteLine($"  unary round trip median {f.MedianUs:F0} us, p99 {f.P99Us:F0} us; streaming host->guest {f.HostToGuestMiBs:F1} MiB/s, guest->host {f.GuestToHostMiBs:F1} MiB/s");

    private static void Result(string name, double ours, string unit, double? reference = null)
    {
        string F(double v) => v.ToString(v >= 100 ? "F0" : "F2", CultureInfo.InvariantCulture);
        Console.WriteLine(reference is { } r
            ? $"RESULT {name} ours={F(ours)}{unit} ref={F(r)}{unit} ratio={(ours / r).ToString("F3", CultureInfo.InvariantCulture)}"
            : $"RESULT {name} ours={F(ours)}{unit}");
    }
}

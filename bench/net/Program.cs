using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Rkt.Kvm.Bench;

namespace Rkt.Kvm.Bench.Net;

/// <summary>
/// Part 1, the data path: boots the same kernel and the same netbench initramfs (netbench.c as
/// /init) with our VMM (<c>--net tap=rknb0,…</c> plus <c>--vsock</c>) and with QEMU microvm
/// (<c>-netdev tap,…,vhost=off -device virtio-net-device</c> on the same tap), alternating. The tap
/// lives in the host's own namespace as 10.213.0.1/24, the guest configures 10.213.0.2/24, and all
/// traffic stays between the two. The host is the client: per boot it measures a 1-byte TCP round
/// trip (median), TCP throughput host→guest (sink, until the guest's byte count comes back) and
/// guest→host (source), all on the host's clock; then, in our VM only, the same three over our
/// vsock (hybrid socket, guest port 5002): there is no vhost-vsock here for a QEMU reference, so
/// the vsock figures are printed against our own virtio-net's.
/// Part 2, pod start-up: <c>rkt-kvm run busybox --exec=/bin/true</c> with the default network
/// against <c>--net=none</c>, alternating; wall time medians, and the network set-up time from the
/// pod's stage1 timeline (network-setup → network-ready).
/// </summary>
public static class Program
{
    /// <summary>An id in the range stage1 gives pods' VMMs (PodVmmUser).</summary>
    private const uint ConfinedUser = 0x7A00_0000 + 42;
    private const int MemoryMiB = 256;
    private const string Tap = "rknb0";
    private const string HostCidr = "10.213.0.1/24";
    private const string GuestAddress = "10.213.0.2"; // netbench.c's GUEST_ADDR
    private const string GuestMac = "02:00:0a:d5:00:02";
    private const int TcpPort = 5001, VsockPort = 5002; // netbench.c's ports
    private const int WarmupRoundTrips = 20;
    private const int ChunkBytes = 256 * 1024;
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan IoTimeout = TimeSpan.FromMinutes(10);

    private sealed record Figures(double HostToGuestMiBs, double GuestToHostMiBs, double RttMedianUs, double RttP99Us);

    public static int Main(string[] args)
    {
        string? Opt(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
        string Get(string name) => Opt(name) ?? throw new ArgumentException($"{name} is required");
        int Int(string name, int fallback) => Opt(name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
        int boots = Int("--boots", 1), mib = Int("--mib", 8), roundTrips = Int("--round-trips", 1000), podRuns = Int("--pod-runs", 2);
        string work = Path.GetFullPath(Get("--work"));
        Directory.CreateDirectory(work);

        if (boots > 0)
        {
            string vmm = Get("--vmm"), kernel = Get("--kernel"), initrd = Get("--initrd");
            bool oursNet = Opt("--ours-net") != "off"; // off: measure only vsock in our VM (while our virtio-net is not in)
            DataPath(vmm, kernel, initrd, work, boots, (long)mib << 20, roundTrips, oursNet);
        }
        if (podRuns > 0)
            PodStart(Get("--cli"), Get("--stage1"), Get("--busybox"), work, podRuns);
        return 0;
    }

    // ---------------------------------------------------------------------------------------------
    // Part 1: the data path.

    private static void DataPath(string vmm, string kernel, string initrd, string work, int boots, long bytes, int roundTrips, bool oursNet)
    {
        string qemu = BenchSupport.FindQemu();
        const string extra = "quiet";
        string memory = MemoryMiB.ToString(CultureInfo.InvariantCulture);
        string cmdline = BenchSupport.WithoutVirtioMmioDevices(BenchSupport.ProbeCmdline(vmm, ["--kernel", kernel, "--initrd", initrd, "--memory", memory], extra));
        string vsockPath = Path.Join(work, "vsock.sock");
        Console.WriteLine($"kernel:  {kernel}\ninitrd:  {initrd} (netbench.c as /init)\n" +
                          $"network: tap {Tap} in the host's namespace ({HostCidr}), guest {GuestAddress} ({GuestMac}), TCP port {TcpPort}; vsock port {VsockPort} (ours)\n" +
                          $"load:    {bytes >> 20} MiB each way, {roundTrips} 1-byte round trips (after {WarmupRoundTrips} warm-up), per boot and transport\n" +
                          $"memory:  {MemoryMiB} MiB, 1 vCPU\nqemu:    {BenchSupport.QemuVersion(qemu)} (virtio-net-device, vhost=off)\n");

        var ours = new List<Figures>();
        var oursUnconfined = new List<Figures>();
        var oursVsock = new List<Figures>();
        var theirs = new List<Figures>();
        using (var tap = HostTap.Create())
        {
            for (int i = 0; i < boots; i++)
            {
                if (File.Exists(vsockPath)) File.Delete(vsockPath);
                var oursArgs = new List<string> { "--kernel", kernel, "--initrd", initrd, "--memory", memory, "--cmdline", extra,
                    "--console", "stdout", "--vsock", vsockPath, "--owner-pid", Environment.ProcessId.ToString(CultureInfo.InvariantCulture) };
                if (oursNet) oursArgs.AddRange(["--net", $"tap={Tap},mac={GuestMac}"]);
                if (oursNet)
                {
                    // What confinement costs: the same VMM without its jail, filter and user (one TCP run per boot).
                    using var bare = GuestVm.Start("ours unconfined", vmm, [.. oursArgs, "--jail", "off", "--seccomp", "off"]);
                    if (!bare.HasTcp) throw bare.Failure("the guest has no eth0 (our virtio-net did not appear)");
                    using (var tcp = ConnectTcp(bare))
                    {
                        oursUnconfined.Add(bare.Print(Measure(tcp, bytes, roundTrips), "tcp"));
                        tcp.Shutdown(SocketShutdown.Both);
                    }
                    using var quit = ConnectVsock(bare, vsockPath);
                    bare.Quit(quit, expectExit: true);
                }
                if (File.Exists(vsockPath)) File.Delete(vsockPath);
                // Confined as a pod's VMM is: jailed and filtered (the defaults), as an unprivileged user of its own.
                using (var vm = GuestVm.Start("ours", vmm, [.. oursArgs, "--user", $"{ConfinedUser}:{ConfinedUser}"]))
                {
                    if (oursNet)
                    {
                        if (!vm.HasTcp) throw vm.Failure("the guest has no eth0 (our virtio-net did not appear)");
                        using var tcp = ConnectTcp(vm); // closed before vsock: the guest serves one connection at a time
                        ours.Add(vm.Print(Measure(tcp, bytes, roundTrips), "tcp"));
                        tcp.Shutdown(SocketShutdown.Both);
                        tcp.Close();
                    }
                    if (!vm.HasVsock) throw vm.Failure("the guest has no vsock listener");
                    using var vsock = ConnectVsock(vm, vsockPath);
                    oursVsock.Add(vm.Print(Measure(vsock, bytes, roundTrips), "vsock"));
                    vm.Quit(vsock, expectExit: true);
                }

                var qemuArgs = BenchSupport.MicrovmArgs(kernel, initrd, MemoryMiB, cmdline);
                qemuArgs.AddRange(["-netdev", $"tap,id=n0,ifname={Tap},script=no,downscript=no,vhost=off",
                                   "-device", $"virtio-net-device,netdev=n0,mac={GuestMac}"]);
                using (var vm = GuestVm.Start("qemu", qemu, qemuArgs))
                {
                    if (!vm.HasTcp) throw vm.Failure("the guest has no eth0 (QEMU's virtio-net-device did not appear)");
                    using var tcp = ConnectTcp(vm);
                    theirs.Add(vm.Print(Measure(tcp, bytes, roundTrips), "tcp"));
                    vm.Quit(tcp, expectExit: false); // microvm has no i8042: reboot=k does not end it
                }
            }
        }

        Console.WriteLine();
        double? Ref(List<Figures> f, Func<Figures, double> pick) => f.Count > 0 ? BenchSupport.Median(f.Select(pick)) : null;
        void Line(string name, List<Figures> of, List<Figures> against, Func<Figures, double> pick, string unit, string format)
        {
            if (of.Count > 0) Console.WriteLine(BenchSupport.Result(name, BenchSupport.Median(of.Select(pick)), unit, Ref(against, pick), format));
        }
        Line("net_tcp_host_to_guest", ours, theirs, f => f.HostToGuestMiBs, "MiB/s", "F2");
        Line("net_tcp_guest_to_host", ours, theirs, f => f.GuestToHostMiBs, "MiB/s", "F2");
        Line("net_tcp_rtt_1byte", ours, theirs, f => f.RttMedianUs, "us", "F0");
        Line("net_tcp_rtt_1byte_p99", ours, theirs, f => f.RttP99Us, "us", "F0");
        Line("net_tcp_host_to_guest_confined_vs_not", ours, oursUnconfined, f => f.HostToGuestMiBs, "MiB/s", "F2");
        Line("net_tcp_guest_to_host_confined_vs_not", ours, oursUnconfined, f => f.GuestToHostMiBs, "MiB/s", "F2");
        Line("net_tcp_rtt_1byte_confined_vs_not", ours, oursUnconfined, f => f.RttMedianUs, "us", "F0");
        if (ours.Count == 0) // our virtio-net was skipped: QEMU's figures alone
        {
            Console.WriteLine(BenchSupport.Result("net_qemu_tcp_host_to_guest", BenchSupport.Median(theirs.Select(f => f.HostToGuestMiBs)), "MiB/s", null, "F2"));
            Console.WriteLine(BenchSupport.Result("net_qemu_tcp_guest_to_host", BenchSupport.Median(theirs.Select(f => f.GuestToHostMiBs)), "MiB/s", null, "F2"));
            Console.WriteLine(BenchSupport.Result("net_qemu_tcp_rtt_1byte", BenchSupport.Median(theirs.Select(f => f.RttMedianUs)), "us", null, "F0"));
        }
        // vsock: no QEMU reference here (no vhost-vsock); ref = our own virtio-net in the same boots.
        if (oursVsock.Count > 0) Console.WriteLine("(vsock_*: ours = our virtio-vsock, ref = our virtio-net over TCP in the same boots; no vhost-vsock here for a QEMU reference)");
        Line("vsock_host_to_guest", oursVsock, ours, f => f.HostToGuestMiBs, "MiB/s", "F2");
        Line("vsock_guest_to_host", oursVsock, ours, f => f.GuestToHostMiBs, "MiB/s", "F2");
        Line("vsock_rtt_1byte", oursVsock, ours, f => f.RttMedianUs, "us", "F0");
        Line("vsock_rtt_1byte_p99", oursVsock, ours, f => f.RttP99Us, "us", "F0");
        Console.Out.Flush();
    }

    /// <summary>The three services of netbench.c over one connection: echo, sink, source.</summary>
    private static Figures Measure(Socket s, long bytes, int roundTrips)
    {
        var one = new byte[1];
        var samples = new double[roundTrips];
        SendCommand(s, 'E', WarmupRoundTrips + roundTrips);
        for (int i = 0; i < WarmupRoundTrips + roundTrips; i++)
        {
            one[0] = (byte)i;
            long start = Stopwatch.GetTimestamp();
            SendAll(s, one);
            ReceiveExactly(s, one);
            double us = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
            if (one[0] != (byte)i) throw new InvalidOperationException($"echo {i} came back as {one[0]}");
            if (i >= WarmupRoundTrips) samples[i - WarmupRoundTrips] = us;
        }
        Array.Sort(samples);

        var chunk = new byte[ChunkBytes];
        new Random(1).NextBytes(chunk);
        var watch = Stopwatch.StartNew();
        SendCommand(s, 'S', bytes);
        for (long sent = 0; sent < bytes;)
        {
            int n = (int)Math.Min(chunk.Length, bytes - sent);
            SendAll(s, chunk.AsSpan(0, n));
            sent += n;
        }
        var count = new byte[8];
        ReceiveExactly(s, count);
        double up = bytes / 1048576.0 / watch.Elapsed.TotalSeconds;
        long counted = BinaryPrimitives.ReadInt64LittleEndian(count);
        if (counted != bytes) throw new InvalidOperationException($"the guest counted {counted} bytes, not {bytes}");

        watch.Restart();
        SendCommand(s, 'O', bytes);
        for (long got = 0; got < bytes;)
        {
            int n = s.Receive(chunk, 0, (int)Math.Min(chunk.Length, bytes - got), SocketFlags.None);
            if (n == 0) throw new InvalidOperationException($"the guest closed the connection after {got} of {bytes} bytes");
            got += n;
        }
        double down = bytes / 1048576.0 / watch.Elapsed.TotalSeconds;
        return new Figures(up, down, samples[roundTrips / 2], samples[Math.Min(roundTrips - 1, (int)(roundTrips * 0.99))]);
    }

    private static void SendCommand(Socket s, char op, long arg)
    {
        Span<byte> cmd = stackalloc byte[16];
        cmd.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(cmd, op);
        BinaryPrimitives.WriteInt64LittleEndian(cmd[8..], arg);
        SendAll(s, cmd);
    }

    private static void SendAll(Socket s, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty) data = data[s.Send(data, SocketFlags.None)..];
    }

    private static void ReceiveExactly(Socket s, Span<byte> into)
    {
        while (!into.IsEmpty)
        {
            int n = s.Receive(into, SocketFlags.None);
            if (n == 0) throw new InvalidOperationException("the guest closed the connection");
            into = into[n..];
        }
    }

    private static Socket ConnectTcp(GuestVm vm)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                var connect = s.ConnectAsync(new IPEndPoint(IPAddress.Parse(GuestAddress), TcpPort));
                if (!connect.Wait(TimeSpan.FromSeconds(20))) throw new SocketException((int)SocketError.TimedOut);
                return Configure(s);
            }
            catch (Exception e) when (deadline.Elapsed < TimeSpan.FromMinutes(1) && !vm.Exited)
            {
                s.Dispose();
                Console.WriteLine($"{vm.Label,-5} connect to {GuestAddress}:{TcpPort}: {(e as AggregateException)?.InnerException?.Message ?? e.Message}; retrying");
                Thread.Sleep(500);
            }
            catch (Exception e)
            {
                s.Dispose();
                throw vm.Failure($"could not connect to {GuestAddress}:{TcpPort}: {e.Message}");
            }
        }
    }

    /// <summary>Our hybrid vsock: connect to the VMM's Unix socket, "CONNECT port\n", "OK …\n".</summary>
    private static Socket ConnectVsock(GuestVm vm, string path)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                s.Connect(new UnixDomainSocketEndPoint(path));
                Configure(s);
                SendAll(s, Encoding.ASCII.GetBytes($"CONNECT {VsockPort}\n"));
                var line = new List<byte>();
                var b = new byte[1];
                while (line.Count < 64)
                {
                    ReceiveExactly(s, b); // throws when the VMM closes the connection (guest not listening yet)
                    if (b[0] == '\n') break;
                    line.Add(b[0]);
                }
                string reply = Encoding.ASCII.GetString(line.ToArray());
                if (!reply.StartsWith("OK ", StringComparison.Ordinal)) throw new InvalidOperationException($"the VMM answered \"{reply}\"");
                return s;
            }
            catch (Exception e) when (deadline.Elapsed < TimeSpan.FromMinutes(1) && !vm.Exited)
            {
                s.Dispose();
                Console.WriteLine($"{vm.Label,-5} vsock connect: {e.Message}; retrying");
                Thread.Sleep(500);
            }
            catch (Exception e)
            {
                s.Dispose();
                throw vm.Failure($"could not connect to vsock port {VsockPort} through {path}: {e.Message}");
            }
        }
    }

    private static Socket Configure(Socket s)
    {
        s.ReceiveTimeout = (int)IoTimeout.TotalMilliseconds;
        s.SendTimeout = (int)IoTimeout.TotalMilliseconds;
        return s;
    }

    /// <summary>The tap both VMMs use in turn, in the host's namespace; deleted on every way out
    /// (Dispose, Ctrl-C, SIGTERM). A stale one from an earlier killed run is replaced.</summary>
    private sealed class HostTap : IDisposable
    {
        private int _deleted;
        private readonly PosixSignalRegistration _sigint, _sigterm;

        private HostTap()
        {
            // Ctrl-C or SIGTERM ends this process without running finally blocks: stop the VM first (QEMU would hold the tap).
            void OnSignal(PosixSignalContext c) { GuestVm.KillCurrent(); Dispose(); c.Cancel = false; }
            _sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
            _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        }

        public static HostTap Create()
        {
            Ip(ignoreFailure: true, "tuntap", "del", "dev", Tap, "mode", "tap");
            var tap = new HostTap();
            try
            {
                Ip(ignoreFailure: false, "tuntap", "add", "dev", Tap, "mode", "tap", "vnet_hdr");
                // No IPv6 on it: router solicitations and the like would be guest interrupts mid-measurement.
                try { File.WriteAllText($"/proc/sys/net/ipv6/conf/{Tap}/disable_ipv6", "1"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
                Ip(ignoreFailure: false, "addr", "add", HostCidr, "dev", Tap);
                Ip(ignoreFailure: false, "link", "set", Tap, "up");
                return tap;
            }
            catch
            {
                tap.Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _deleted, 1) != 0) return;
            Ip(ignoreFailure: true, "tuntap", "del", "dev", Tap, "mode", "tap");
            _sigint.Dispose();
            _sigterm.Dispose();
        }

        private static void Ip(bool ignoreFailure, params string[] args)
        {
            var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0 && !ignoreFailure)
                throw new InvalidOperationException($"ip {string.Join(' ', args)} failed ({p.ExitCode}): {err.Trim()} (creating a tap needs root and /dev/net/tun)");
        }
    }

    /// <summary>One booted VMM running netbench.c: its console lines, the ready and done markers.</summary>
    private sealed class GuestVm : IDisposable
    {
        private readonly Process _process;
        private readonly Queue<string> _tail = new();
        private readonly TaskCompletionSource<string> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Stopwatch _clock = Stopwatch.StartNew();

        private static GuestVm? s_current;

        public static void KillCurrent()
        {
            try
            {
                if (s_current?._process is not { HasExited: false } p) return;
                p.Kill(entireProcessTree: true);
                p.WaitForExit(10_000); // until then it holds the tap open and `ip tuntap del` fails (EBUSY)
            }
            catch (InvalidOperationException) { } // exited meanwhile, or already disposed
        }

        public string Label { get; }
        public bool HasTcp { get; private set; }
        public bool HasVsock { get; private set; }
        public bool Exited => _process.HasExited;

        private GuestVm(string label, Process process)
        {
            Label = label;
            _process = process;
        }

        public static GuestVm Start(string label, string program, IReadOnlyList<string> args)
        {
            var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
            foreach (var a in args) psi.ArgumentList.Add(a);
            var vm = new GuestVm(label, Process.Start(psi)!);
            s_current = vm;
            vm._process.OutputDataReceived += (_, e) => vm.OnLine(e.Data);
            vm._process.ErrorDataReceived += (_, e) => vm.OnLine(e.Data);
            vm._process.BeginOutputReadLine();
            vm._process.BeginErrorReadLine();
            try
            {
                int which = Task.WaitAny([vm._ready.Task, vm._process.WaitForExitAsync()], BootTimeout);
                if (which != 0) throw vm.Failure(which < 0 ? $"the guest was not ready within {BootTimeout.TotalMinutes} minutes" : $"exited with status {vm._process.ExitCode} before the guest was ready");
                string ready = vm._ready.Task.Result;
                vm.HasTcp = ready.Contains("tcp=1", StringComparison.Ordinal);
                vm.HasVsock = ready.Contains("vsock=1", StringComparison.Ordinal);
                Console.WriteLine($"{label,-5} boot: start -> NETBENCH ready {vm._clock.Elapsed.TotalSeconds:F1} s (host clock; tcp={(vm.HasTcp ? 1 : 0)} vsock={(vm.HasVsock ? 1 : 0)})");
                return vm;
            }
            catch
            {
                vm.Dispose();
                throw;
            }
        }

        private void OnLine(string? line)
        {
            if (line is null) return;
            lock (_tail) { _tail.Enqueue(line); if (_tail.Count > 40) _tail.Dequeue(); }
            int at = line.IndexOf("NETBENCH ", StringComparison.Ordinal);
            if (at < 0) return;
            string marker = line[at..];
            if (marker.StartsWith("NETBENCH ready", StringComparison.Ordinal)) _ready.TrySetResult(marker);
            else if (marker.StartsWith("NETBENCH done", StringComparison.Ordinal)) _done.TrySetResult();
            else if (marker.StartsWith("NETBENCH error", StringComparison.Ordinal)) _ready.TrySetException(new InvalidOperationException(marker));
            else Console.WriteLine($"{Label,-5} {marker}");
        }

        public Figures Print(Figures f, string transport)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{Label,-5} {transport,-5}: host->guest {f.HostToGuestMiBs:F2} MiB/s, guest->host {f.GuestToHostMiBs:F2} MiB/s, 1-byte round trip median {f.RttMedianUs:F0} us (p99 {f.RttP99Us:F0} us)"));
            return f;
        }

        /// <summary>Sends the final command; waits for the done line and, for our VMM, a clean exit.</summary>
        public void Quit(Socket s, bool expectExit)
        {
            SendCommand(s, 'Q', 0);
            if (!_done.Task.Wait(TimeSpan.FromMinutes(1))) throw Failure("no NETBENCH done line after the quit command");
            if (!expectExit) return;
            if (!_process.WaitForExit(TimeSpan.FromMinutes(1))) throw Failure("did not exit within a minute of the guest's reboot");
            _process.WaitForExit();
            if (_process.ExitCode != 0) throw Failure($"exited with status {_process.ExitCode} after the guest's reboot");
        }

        public InvalidOperationException Failure(string why)
        {
            string log;
            lock (_tail) log = string.Join('\n', _tail);
            return new InvalidOperationException($"{Label}: {why}; the last console lines:\n{log}");
        }

        public void Dispose()
        {
            if (s_current == this) s_current = null;
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
            _process.Dispose();
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Part 2: pod start-up with the default network against --net=none.

    private static void PodStart(string cli, string stage1, string busybox, string work, int runs)
    {
        string data = Path.Join(work, "pod-data");
        if (Directory.Exists(data)) Directory.Delete(data, recursive: true);
        var env = new Dictionary<string, string> { ["RKT_KVM_STAGE1"] = stage1 };
        Console.WriteLine($"\n== pod start-up: rkt-kvm run rkt-kvm.local/busybox --exec=/bin/true, default network against --net=none, {runs} of each, alternating");
        var withNet = new List<double>();
        var without = new List<double>();
        var setup = new List<double>();
        var bootWith = new List<double>();
        var bootWithout = new List<double>();
        try
        {
            Cli(cli, data, env, "image", "import", busybox);
            for (int i = 0; i < runs; i++)
            {
                // Alternate which goes first, so neither always runs on a warmer host.
                foreach (bool net in i % 2 == 0 ? new[] { true, false } : [false, true])
                {
                    string uuidFile = Path.Join(work, $"uuid-{i}-{(net ? "net" : "none")}");
                    if (File.Exists(uuidFile)) File.Delete(uuidFile);
                    var cliArgs = new List<string> { "run", "rkt-kvm.local/busybox", "--exec=/bin/true", $"--uuid-file-save={uuidFile}" };
                    if (!net) cliArgs.Insert(1, "--net=none");
                    var watch = Stopwatch.StartNew();
                    Cli(cli, data, env, [.. cliArgs]);
                    double seconds = watch.Elapsed.TotalSeconds;
                    string uuid = File.ReadAllText(uuidFile).Trim();
                    File.Delete(uuidFile);
                    var t = Timeline(Path.Join(data, "pods", "run", uuid, "stage1-kvm", "timeline"));
                    double vmmToReady = t.TryGetValue("agent-ready", out var ready) && t.TryGetValue("vmm-start", out var vmmStart) ? ready - vmmStart : double.NaN;
                    string detail = $"VMM start -> agent ready {vmmToReady:F0} ms";
                    if (net)
                    {
                        if (!t.TryGetValue("network-setup", out var a) || !t.TryGetValue("network-ready", out var b))
                            throw new InvalidOperationException("the pod's timeline has no network-setup/network-ready marks (a stage1 without networking?)");
                        setup.Add(b - a);
                        detail = $"network set-up {b - a:F0} ms, " + detail;
                        withNet.Add(seconds);
                        bootWith.Add(vmmToReady);
                    }
                    else
                    {
                        if (t.ContainsKey("network-setup")) throw new InvalidOperationException("a --net=none pod set a network up");
                        without.Add(seconds);
                        bootWithout.Add(vmmToReady);
                    }
                    Console.WriteLine($"{(net ? "default" : "none"),-8} run {i + 1}: {seconds:F2} s ({detail})");
                }
            }
        }
        finally
        {
            try { Cli(cli, data, env, "gc", "--grace-period=0s"); }
            catch (Exception e) { Console.WriteLine($"gc failed: {e.Message}"); }
            try { if (Directory.Exists(data)) Directory.Delete(data, recursive: true); }
            catch (Exception e) { Console.WriteLine($"could not remove {data}: {e.Message}"); }
        }
        Console.WriteLine();
        Console.WriteLine(BenchSupport.Result("pod_start_default_net", BenchSupport.Median(withNet), "s", BenchSupport.Median(without), "F2"));
        Console.WriteLine(BenchSupport.Result("pod_network_setup", BenchSupport.Median(setup), "ms", null, "F0"));
        Console.WriteLine(BenchSupport.Result("pod_vmm_start_to_agent_ready_default_net", BenchSupport.Median(bootWith), "ms", BenchSupport.Median(bootWithout), "F0"));
    }

    /// <summary>stage1-kvm/timeline: "name value" lines; a repeated name keeps its last value.</summary>
    private static Dictionary<string, double> Timeline(string path)
    {
        var marks = new Dictionary<string, double>();
        foreach (var line in File.ReadAllLines(path))
        {
            var p = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (p.Length == 2 && double.TryParse(p[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double v)) marks[p[0]] = v;
        }
        return marks;
    }

    private static void Cli(string cli, string data, Dictionary<string, string> env, params string[] args)
    {
        var psi = new ProcessStartInfo(cli) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add($"--dir={data}");
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        var output = new Queue<string>();
        void Keep(string? line) { if (line is null) return; lock (output) { output.Enqueue(line); if (output.Count > 30) output.Dequeue(); } }
        using var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, e) => Keep(e.Data);
        p.ErrorDataReceived += (_, e) => Keep(e.Data);
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(600_000)) { p.Kill(true); throw new TimeoutException($"rkt-kvm {string.Join(' ', args)} timed out"); }
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            string log;
            lock (output) log = string.Join('\n', output);
            throw new InvalidOperationException($"rkt-kvm {string.Join(' ', args)} exited {p.ExitCode}:\n{log}");
        }
    }
}

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// One boot of the busybox guest with a virtio-net NIC on a tap in a network namespace of the
/// test's own (10.123.0.1/24 on the host side, a private address: traffic never leaves this
/// machine). The guest (tests/guest/init.sh, mode net) configures eth0 as 10.123.0.2, pings the
/// host, receives a TCP stream the host sends to its port 8080 and sends `seq 1 40000` to the
/// host's port 8081, then reboots.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class NetDeviceVmFixture : IDisposable
{
    public const string GuestMac = "02:00:00:00:00:a1";
    public const string Tap = "rkvm0";
    public static readonly IPAddress HostIp = IPAddress.Parse("10.123.0.1"), GuestIp = IPAddress.Parse("10.123.0.2");

    public readonly string Netns = $"rkt-kvm-test-{Guid.NewGuid():N}"[..24];
    public readonly byte[] SentToGuest = RandomNumberGenerator.GetBytes(512 * 1024);
    public readonly string? Unavailable;
    public readonly VmmRun? Run;
    public readonly byte[]? ReceivedFromGuest;
    public readonly string? HostFailure;

    public NetDeviceVmFixture()
    {
        Unavailable = !TestEnvironment.HasKvm ? TestEnvironment.NoKvmReason
            : Environment.UserName != "root" ? "the NIC test needs root (a network namespace and a tap); skipped"
            : !File.Exists("/dev/net/tun") ? "/dev/net/tun is absent; skipped"
            : null;
        if (Unavailable is not null) return;
        Ip("netns", "add", Netns);
        Ip("-n", Netns, "link", "set", "lo", "up");
        Ip("-n", Netns, "tuntap", "add", "dev", Tap, "mode", "tap");
        Ip("-n", Netns, "addr", "add", $"{HostIp}/24", "dev", Tap);
        Ip("-n", Netns, "link", "set", Tap, "up");

        using var listener = InNetns(() =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.Bind(new IPEndPoint(HostIp, 8081));
            s.Listen(1);
            return s;
        });
        // The host's side runs on two threads of its own that stay inside the namespace, with blocking
        // sockets: nothing of it depends on the thread pool while the VM boots.
        byte[]? received = null;
        var receiver = InNetnsThread(() => received = ReceiveAll(listener));
        var sender = InNetnsThread(SendToGuest);
        try
        {
            Run = VmmProcess.BootBusybox(initMode: "net", extra: ["--net", $"tap={Tap},netns=/var/run/netns/{Netns},mac={GuestMac}", "--debug"]);
        }
        catch
        {
            _stopAt = DateTime.UtcNow; // the sender stops retrying
            Dispose(); // xunit does not dispose a fixture whose constructor threw: the namespace would stay
            throw;
        }
        _stopAt = DateTime.UtcNow.AddSeconds(5); // the guest has finished by now; whatever is still waiting has failed
        listener.Dispose(); // unblocks an Accept that never got a connection
        receiver.Join();
        sender.Join();
        var failures = string.Join("\n", new[] { receiver.Failure, sender.Failure }.Where(f => f is not null));
        if (failures.Length > 0) HostFailure = failures;
        ReceivedFromGuest = received;
    }

    private DateTime _stopAt = DateTime.MaxValue;

    /// <summary>Connects to the guest's port 8080 until it listens (it boots meanwhile), sends the stream, closes.</summary>
    private void SendToGuest()
    {
        while (DateTime.UtcNow < _stopAt)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            // A blocking connect on this thread, bounded by SO_SNDTIMEO (Linux applies it to connect):
            // an asynchronous one completes through the thread pool, which other tests may have
            // busy, and CI saw it never complete.
            socket.SendTimeout = 15_000;
            try
            {
                socket.Connect(new IPEndPoint(GuestIp, 8080));
            }
            catch (SocketException)
            {
                Thread.Sleep(500); // refused (the guest is not listening yet) or timed out: try again
                continue;
            }
            socket.SendTimeout = 120_000; // the stream itself may take a slow guest a while
            socket.Send(SentToGuest);
            socket.Shutdown(SocketShutdown.Send);
            // Wait for the guest to close its side, so everything was read.
            socket.ReceiveTimeout = 120_000;
            var sink = new byte[256];
            while (socket.Receive(sink) > 0) { }
            return;
        }
        throw new TimeoutException("the guest never accepted the stream on port 8080");
    }

    private static byte[] ReceiveAll(Socket listener)
    {
        using var connection = listener.Accept();
        connection.ReceiveTimeout = 120_000;
        var data = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int n;
        while ((n = connection.Receive(buffer)) > 0) data.Write(buffer, 0, n);
        return data.ToArray();
    }

    private sealed class NetnsThread(Thread thread)
    {
        public Thread Thread { get; } = thread;
        public string? Failure { get; set; }
        /// <summary>Waits a bounded time: a thread still blocked by then has failed (it is a background thread).</summary>
        public void Join()
        {
            if (!Thread.Join(TimeSpan.FromSeconds(30))) Failure ??= "still blocked 30 s after the VM ended";
        }
    }

    /// <summary>Runs <paramref name="work"/> on a new thread that enters the test's namespace first: its sockets live there.</summary>
    private NetnsThread InNetnsThread(Action work)
    {
        NetnsThread? handle = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle($"/var/run/netns/{Netns}");
                if (setns((int)ns.DangerousGetHandle(), CloneNewNet) != 0) throw new InvalidOperationException($"setns into {Netns} failed: errno {Marshal.GetLastPInvokeError()}");
                work();
            }
            catch (Exception e) { handle!.Failure = e.ToString(); }
        }) { IsBackground = true };
        handle = new NetnsThread(thread);
        thread.Start();
        return handle;
    }

    /// <summary>Runs on a throwaway thread inside the test's namespace: a socket made there stays there.</summary>
    private T InNetns<T>(Func<T> make)
    {
        T result = default!;
        ExceptionDispatchInfo? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle($"/var/run/netns/{Netns}");
                if (setns((int)ns.DangerousGetHandle(), CloneNewNet) != 0) throw new InvalidOperationException($"setns into {Netns} failed: errno {Marshal.GetLastPInvokeError()}");
                result = make();
            }
            catch (Exception e) { failure = ExceptionDispatchInfo.Capture(e); }
        });
        thread.Start();
        thread.Join();
        failure?.Throw();
        return result;
    }

    private const int CloneNewNet = 0x4000_0000;
    [DllImport("libc", SetLastError = true)]
    private static extern int setns(int fd, int nstype);

    private static void Ip(params string[] args) => Rkt.Kvm.Stage1.Networking.HostCommand.Check("ip", args);

    public void Dispose()
    {
        if (Unavailable is not null) return;
        try { Ip("netns", "del", Netns); }
        catch (Rkt.Kvm.Stage1.Stage1Exception) { }
    }
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class NetDeviceVmTests(NetDeviceVmFixture vm) : IClassFixture<NetDeviceVmFixture>
{
    private VmmRun Booted()
    {
        Skip.If(vm.Unavailable is not null, vm.Unavailable);
        return vm.Run!;
    }

    [SkippableFact]
    public void The_guest_sees_eth0_with_our_mac_and_the_vm_ends_cleanly()
    {
        var run = Booted();
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"rkt-kvm-guest: net eth0 {NetDeviceVmFixture.GuestMac}", run.Stdout);
        Assert.Contains("rkt-kvm-guest: net ok link-up", run.Stdout);
        Assert.Contains("rkt-kvm-guest: net done", run.Stdout);
        Assert.DoesNotContain("net FAIL", run.Stdout);
    }

    [SkippableFact]
    public void The_driver_negotiated_checksum_and_segmentation_offload_and_merged_buffers()
    {
        var run = Booted();
        var m = Regex.Match(run.Stdout, @"rkt-kvm-guest: net features ([01]{64})");
        Assert.True(m.Success, run.ToString());
        string bits = m.Groups[1].Value; // bit 0 first
        foreach (var (bit, name) in new[] { (0, "CSUM"), (1, "GUEST_CSUM"), (5, "MAC"), (7, "GUEST_TSO4"), (8, "GUEST_TSO6"), (11, "HOST_TSO4"), (12, "HOST_TSO6"), (15, "MRG_RXBUF"), (16, "STATUS"), (32, "VERSION_1") })
            Assert.True(bits[bit] == '1', $"{name} (bit {bit}) was not negotiated: {bits}");
    }

    [SkippableFact]
    public void The_guest_pings_the_host()
    {
        var run = Booted();
        Assert.Contains("rkt-kvm-guest: net ok ping", run.Stdout);
        Assert.Matches(@"rkt-kvm-guest: ping: 3 packets transmitted, 3 packets received", run.Stdout);
    }

    [SkippableFact]
    public void A_tcp_stream_from_the_host_arrives_whole()
    {
        var run = Booted();
        Assert.True(vm.HostFailure is null, $"{vm.HostFailure}\n{run}");
        string md5 = Convert.ToHexString(MD5.HashData(vm.SentToGuest)).ToLowerInvariant();
        Assert.Contains($"rkt-kvm-guest: net received {vm.SentToGuest.Length} bytes md5 {md5}", run.Stdout);
    }

    [SkippableFact]
    public void A_tcp_stream_from_the_guest_arrives_whole()
    {
        var run = Booted();
        Assert.True(vm.HostFailure is null, $"{vm.HostFailure}\n{run}");
        Assert.Contains("rkt-kvm-guest: net ok send", run.Stdout);
        string expected = string.Concat(Enumerable.Range(1, 40000).Select(i => $"{i}\n"));
        Assert.Equal(expected, Encoding.ASCII.GetString(vm.ReceivedFromGuest!));
    }

    [SkippableFact]
    public void The_vmm_saw_no_malformed_chain_and_dropped_nothing_it_should_not()
    {
        var run = Booted();
        var m = Regex.Match(run.Stderr, @"NIC \S+: rx (\d+) packets \((\d+) dropped\), tx (\d+) packets \((\d+) dropped\), (\d+) malformed chains");
        Assert.True(m.Success, run.ToString());
        Assert.Equal("0", m.Groups[5].Value);
        Assert.True(long.Parse(m.Groups[1].Value) > 10 && long.Parse(m.Groups[3].Value) > 10, m.Value);
    }
}

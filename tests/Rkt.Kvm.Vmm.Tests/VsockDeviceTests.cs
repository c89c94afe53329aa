using System.Net.Sockets;
using System.Text;
using Rkt.Kvm.Vmm.Devices.Vsock;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>The vsock device between a real host Unix socket and a scripted guest driver.</summary>
public sealed class VsockDeviceTests : IDisposable
{
    private const uint GuestPort = 1024;
    private readonly VsockGuestDriver _guest = new();

    public VsockDeviceTests() => _guest.Activate();

    public void Dispose() => _guest.Dispose();

    private Socket ConnectHost(string line = "CONNECT 1024\n")
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5000 };
        s.Connect(new UnixDomainSocketEndPoint(_guest.SocketPath));
        s.Send(Encoding.ASCII.GetBytes(line));
        return s;
    }

    private static string ReadLine(Socket s)
    {
        var sb = new StringBuilder();
        var b = new byte[1];
        while (s.Receive(b) == 1) { sb.Append((char)b[0]); if (b[0] == '\n') break; }
        return sb.ToString();
    }

    private static bool ClosedWithoutData(Socket s)
    {
        try { return s.Receive(new byte[16]) == 0; }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset) { return true; }
    }

    /// <summary>Host CONNECT, guest accepts: returns the host socket and the host port the device chose.</summary>
    private (Socket Host, uint HostPort) Establish()
    {
        _guest.PostRxBuffers(8);
        var host = ConnectHost();
        var (request, _) = _guest.WaitForRx(h => h.Op == VsockOp.Request);
        Assert.Equal(GuestPort, request.DstPort);
        Assert.Equal(VsockDriverCid, request.DstCid);
        Assert.InRange(request.SrcPort, HybridVsockMuxer.FirstHostPort, (uint)int.MaxValue);
        _guest.Send(VsockGuestDriver.Packet(GuestPort, request.SrcPort, VsockOp.Response));
        Assert.Equal($"OK {request.SrcPort}\n", ReadLine(host));
        return (host, request.SrcPort);
    }

    private const ulong VsockDriverCid = VsockGuestDriver.GuestCid;

    [Fact]
    public void Host_connect_is_answered_OK_once_the_guest_accepts_and_bytes_flow_both_ways()
    {
        var (host, hostPort) = Establish();
        host.Send("ping from host"u8.ToArray());
        var (rw, payload) = _guest.WaitForRx(h => h.Op == VsockOp.Rw);
        Assert.Equal(hostPort, rw.SrcPort);
        Assert.Equal("ping from host", Encoding.ASCII.GetString(payload));
        Assert.Equal(VsockConnection.BufferSize, rw.BufAlloc);

        _guest.Send(VsockGuestDriver.Packet(GuestPort, hostPort, VsockOp.Rw, 14), "pong from guest"u8[..14]);
        var buffer = new byte[64];
        Assert.Equal("pong from gues", Encoding.ASCII.GetString(buffer, 0, host.Receive(buffer)));
    }

    [Fact]
    public void A_payload_the_driver_split_over_descriptors_reaches_the_host_whole()
    {
        var (host, hostPort) = Establish();
        // Header and the payload's first bytes in one descriptor, the rest in the next one.
        const ulong First = 0x300000, Second = 0x301000;
        var header = new byte[VsockPacketHeader.Size];
        VsockGuestDriver.Packet(GuestPort, hostPort, VsockOp.Rw, 11).Write(header);
        _guest.Memory.Write(First, [.. header, .. "hel"u8]);
        _guest.Memory.Write(Second, "lo world"u8);
        _guest.WriteDescriptor(_guest.TxDescriptorTable, 62, First, VsockPacketHeader.Size + 3, flags: 1, next: 63);
        _guest.WriteDescriptor(_guest.TxDescriptorTable, 63, Second, 8, flags: 0, next: 0);
        _guest.SubmitTx(62);
        var received = new List<byte>();
        var buffer = new byte[64];
        for (int n = 1; received.Count < 11 && n > 0;)
        {
            n = host.Receive(buffer);
            received.AddRange(buffer.AsSpan(0, n).ToArray());
        }
        Assert.Equal("hello world", Encoding.ASCII.GetString(received.ToArray()));
        Assert.Equal(1, _guest.Device.ConnectionCount);
        host.Dispose();
    }

    [Fact]
    public void A_guest_RST_to_the_request_closes_the_host_socket_without_a_reply()
    {
        _guest.PostRxBuffers(4);
        using var host = ConnectHost("connect 9999\n");
        var (request, _) = _guest.WaitForRx(h => h.Op == VsockOp.Request);
        _guest.Send(VsockGuestDriver.Packet(9999, request.SrcPort, VsockOp.Rst));
        Assert.True(ClosedWithoutData(host));
        Assert.Equal(0, _guest.Device.ConnectionCount);
    }

    [Fact]
    public void No_answer_from_the_guest_closes_the_host_socket_after_the_timeout()
    {
        _guest.PostRxBuffers(4);
        using var host = ConnectHost();
        _guest.WaitForRx(h => h.Op == VsockOp.Request);
        var started = Environment.TickCount64;
        Assert.True(ClosedWithoutData(host));
        Assert.InRange(Environment.TickCount64 - started, 1500, 4000);
        // The guest may still answer late: it gets RST, and the device holds nothing.
        _guest.WaitForRx(h => h.Op == VsockOp.Rst);
        Assert.Equal(0, _guest.Device.ConnectionCount);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\n")]
    [InlineData("CONNECT abc\n")]
    [InlineData("CONNECT 1234567890123456789012345678901234567890")]
    public void A_bad_connect_line_closes_the_socket(string line)
    {
        using var host = ConnectHost(line);
        Assert.True(ClosedWithoutData(host));
    }

    [Fact]
    public void Guest_connection_to_a_host_listener_is_answered_and_forwarded()
    {
        string listenPath = $"{_guest.SocketPath}_5000";
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(listenPath));
        listener.Listen();
        _guest.PostRxBuffers(4);
        _guest.Send(VsockGuestDriver.Packet(40000, 5000, VsockOp.Request));
        var (response, _) = _guest.WaitForRx(h => h.Op is VsockOp.Response or VsockOp.Rst);
        Assert.Equal(VsockOp.Response, response.Op);
        Assert.Equal(40000u, response.DstPort);
        using var accepted = listener.Accept();
        _guest.Send(VsockGuestDriver.Packet(40000, 5000, VsockOp.Rw, 6), "READY\n"u8);
        var buffer = new byte[16];
        accepted.ReceiveTimeout = 5000;
        Assert.Equal("READY\n", Encoding.ASCII.GetString(buffer, 0, accepted.Receive(buffer)));
        // The guest closes: SHUTDOWN both ways is answered with RST and the host sees end of stream.
        _guest.Send(VsockGuestDriver.Packet(40000, 5000, VsockOp.Shutdown, flags: 3));
        _guest.WaitForRx(h => h.Op == VsockOp.Rst && h.DstPort == 40000);
        Assert.Equal(0, accepted.Receive(buffer));
    }

    [Fact]
    public void Guest_connection_to_a_missing_listener_gets_RST()
    {
        _guest.PostRxBuffers(4);
        _guest.Send(VsockGuestDriver.Packet(40001, 5001, VsockOp.Request));
        var (rst, _) = _guest.WaitForRx(h => h.Op != VsockOp.CreditUpdate);
        Assert.Equal(VsockOp.Rst, rst.Op);
        Assert.Equal((40001u, 5001u), (rst.DstPort, rst.SrcPort));
        Assert.Equal(0, _guest.Device.ConnectionCount);
    }

    [Fact]
    public void Host_data_waits_for_guest_credit()
    {
        _guest.PostRxBuffers(8);
        using var host = ConnectHost();
        var (request, _) = _guest.WaitForRx(h => h.Op == VsockOp.Request);
        // The guest advertises a 100-byte buffer.
        _guest.Send(VsockGuestDriver.Packet(GuestPort, request.SrcPort, VsockOp.Response, bufAlloc: 100));
        ReadLine(host);
        host.Send(new byte[1000]);
        var (first, _) = _guest.WaitForRx(h => h.Op == VsockOp.Rw);
        Assert.Equal(100u, first.Length);
        Thread.Sleep(200);
        Assert.Empty(_guest.TakeRx());
        // It read the 100 bytes: 100 more may come.
        _guest.Send(VsockGuestDriver.Packet(GuestPort, request.SrcPort, VsockOp.CreditUpdate, bufAlloc: 100, fwdCnt: 100));
        var (second, _) = _guest.WaitForRx(h => h.Op == VsockOp.Rw);
        Assert.Equal(100u, second.Length);
    }

    [Fact]
    public void A_guest_that_sends_beyond_its_credit_is_reset()
    {
        var (host, hostPort) = Establish();
        var chunk = new byte[60 * 1024];
        // The host reads nothing, so its socket buffer fills and the device must hold the rest: at most our buffer.
        for (int i = 0; i < 64; i++)
        {
            _guest.Send(VsockGuestDriver.Packet(GuestPort, hostPort, VsockOp.Rw, (uint)chunk.Length), chunk);
            if (_guest.Device.ConnectionCount == 0) break;
        }
        Assert.Equal(0, _guest.Device.ConnectionCount);
        _guest.WaitForRx(h => h.Op == VsockOp.Rst);
        host.Dispose();
    }

    [Fact]
    public void Host_close_is_sent_to_the_guest_as_shutdown()
    {
        var (host, hostPort) = Establish();
        host.Dispose();
        var (shutdown, _) = _guest.WaitForRx(h => h.Op == VsockOp.Shutdown);
        Assert.Equal(3u, shutdown.Flags);
        _guest.Send(VsockGuestDriver.Packet(GuestPort, hostPort, VsockOp.Rst));
        Assert.Equal(0, _guest.Device.ConnectionCount);
    }

    [Fact]
    public void Two_hundred_fifty_six_connections_at_once()
    {
        var hosts = new List<Socket>();
        var ports = new HashSet<uint>();
        for (int batch = 0; batch < 16; batch++)
        {
            _guest.PostRxBuffers(16);
            for (int i = 0; i < 16; i++) hosts.Add(ConnectHost());
            var seen = new List<(VsockPacketHeader, byte[])>();
            while (ports.Count < (batch + 1) * 16)
            {
                var (request, _) = _guest.WaitForRx(h => h.Op == VsockOp.Request, seen);
                Assert.Empty(seen);
                Assert.True(ports.Add(request.SrcPort));
                _guest.Send(VsockGuestDriver.Packet(GuestPort, request.SrcPort, VsockOp.Response));
            }
        }
        Assert.Equal(256, _guest.Device.ConnectionCount);
        foreach (var h in hosts) Assert.StartsWith("OK ", ReadLine(h));
        foreach (var h in hosts) h.Dispose();
    }
}

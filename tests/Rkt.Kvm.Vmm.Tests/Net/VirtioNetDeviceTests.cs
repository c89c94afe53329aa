using System.Net;
using System.Net.Sockets;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.VirtioNet;

namespace Rkt.Kvm.Vmm.Tests.Net;

/// <summary>One network namespace for a test class; null (tests skip) where taps cannot be made.</summary>
public sealed class NetnsFixture : IDisposable
{
    public TestNetns? Netns { get; } = TestNetns.UnavailableReason is null ? new TestNetns() : null;

    public TestNetns Require()
    {
        Skip.If(TestNetns.UnavailableReason is not null, TestNetns.UnavailableReason);
        return Netns!;
    }

    public void Dispose() => Netns?.Dispose();
}

/// <summary>
/// One NIC for one test: a tap in the fixture's namespace (host side 10.200.N.1/24, the guest
/// 10.200.N.2 with a permanent neighbour entry, so the host kernel sends to it without ARP), the
/// device on it, and a scripted guest driver.
/// </summary>
public sealed class TestNic : IDisposable
{
    public const ulong AllFeatures = VirtioNetDevice.BaseFeatures | MmioTransport.FeatureVersion1;

    public TestNetns Netns { get; }
    public NetGuestDriver Guest { get; }
    public string Tap { get; }
    public IPAddress HostIp { get; }
    public IPAddress GuestIp { get; }

    public TestNic(TestNetns netns, int mtu = 9000, int packetBudget = VirtioNetDevice.MaxPacketsPerWake)
    {
        Netns = netns;
        int subnet = TestNetns.NextSubnet();
        Tap = $"tn{subnet}";
        HostIp = IPAddress.Parse($"10.200.{subnet}.1");
        GuestIp = IPAddress.Parse($"10.200.{subnet}.2");
        Guest = new NetGuestDriver(TapDevice.Open(Tap, netns.Path), packetBudget: packetBudget);
        netns.Ip("addr", "add", $"{HostIp}/24", "dev", Tap);
        netns.Ip("link", "set", Tap, "mtu", mtu.ToString(), "up");
        netns.Ip("neigh", "replace", GuestIp.ToString(), "lladdr", Rkt.Kvm.Vmm.Client.NetDeviceSpec.FormatMac(NetGuestDriver.GuestMac), "dev", Tap, "nud", "permanent");
    }

    /// <summary>A UDP socket of the host side, bound to <see cref="HostIp"/>:<paramref name="port"/> inside the namespace.</summary>
    public Socket HostUdp(int port) => Netns.Inside(() =>
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        s.Bind(new IPEndPoint(HostIp, port));
        s.ReceiveTimeout = 5000;
        return s;
    });

    public byte[] UdpToHost(ushort port, byte[] payload) =>
        Frames.Udp(NetGuestDriver.GuestMac, Frames.Broadcast, GuestIp, HostIp, 40000, port, payload);

    public void Dispose() => Guest.Dispose();
}

public sealed class VirtioNetDeviceTests(NetnsFixture fixture) : IClassFixture<NetnsFixture>
{
    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [SkippableFact]
    public void Arp_request_from_the_guest_is_answered_by_the_host_kernel()
    {
        using var nic = new TestNic(fixture.Require());
        nic.Guest.Activate(TestNic.AllFeatures);
        nic.Guest.PostRxBuffers(16, 2048);
        nic.Guest.Send(default, Frames.ArpRequest(NetGuestDriver.GuestMac, nic.GuestIp, nic.HostIp));

        var (header, frame, buffers) = nic.Guest.WaitForRx(f => Frames.ArpReplyFrom(f, nic.HostIp, NetGuestDriver.GuestMac) is not null);
        Assert.Equal(1, buffers);
        Assert.Equal(1, header.NumBuffers);
        Assert.Equal(6, Frames.ArpReplyFrom(frame, nic.HostIp, NetGuestDriver.GuestMac)!.Length);
        Assert.Equal(1, nic.Guest.Device.TxPackets);
        Assert.True(nic.Guest.Signals > 0, "no used-buffer interrupt for the received frame");
        Assert.Empty(nic.Guest.Log.Errors);
    }

    [SkippableFact]
    public void Udp_from_the_guest_arrives_at_a_host_socket_however_the_chain_is_split()
    {
        using var nic = new TestNic(fixture.Require());
        using var host = nic.HostUdp(7000);
        nic.Guest.Activate(TestNic.AllFeatures);
        var buffer = new byte[2000];
        int[][] layouts = [[], [12], [5], [3, 12, 20, 43], [12, 13, 14, 15, 16]];
        for (int i = 0; i < layouts.Length; i++)
        {
            var payload = Pattern(100 + i, i);
            Assert.True(nic.Guest.Send(default, nic.UdpToHost(7000, payload), layouts[i]));
            int n = host.Receive(buffer);
            Assert.Equal(payload, buffer[..n]);
        }
        Assert.Equal(layouts.Length, nic.Guest.Device.TxPackets);
        Assert.Equal(layouts.Length, nic.Guest.TakeTxUsed().Count);
    }

    [SkippableFact]
    public void A_large_frame_is_spread_over_merged_buffers_with_num_buffers()
    {
        using var nic = new TestNic(fixture.Require());
        using var host = nic.HostUdp(7001);
        nic.Guest.Activate(TestNic.AllFeatures);
        nic.Guest.PostRxBuffers(32, 1024);
        var payload = Pattern(8000, 1);
        host.SendTo(payload, new IPEndPoint(nic.GuestIp, 9000));

        var (header, frame, buffers) = nic.Guest.WaitForRx(f => Frames.UdpPayloadTo(f, 9000) is not null);
        int expected = (VirtioNetHeader.Size + 14 + 20 + 8 + payload.Length + 1023) / 1024;
        Assert.Equal(expected, buffers);
        Assert.Equal(expected, header.NumBuffers);
        Assert.Equal(payload, Frames.UdpPayloadTo(frame, 9000));
    }

    [SkippableFact]
    public void Without_mergeable_buffers_a_frame_larger_than_the_chain_is_dropped_and_the_chain_kept()
    {
        using var nic = new TestNic(fixture.Require());
        using var host = nic.HostUdp(7002);
        nic.Guest.Activate(TestNic.AllFeatures & ~VirtioNetDevice.FeatureMrgRxbuf);
        // Linux's "small" buffers: header + 1518 bytes, as one chain of two descriptors.
        nic.Guest.PostRx(VirtioNetHeader.Size, 1518);
        nic.Guest.NotifyRx();
        host.SendTo(Pattern(4000, 2), new IPEndPoint(nic.GuestIp, 9001));
        NetGuestDriver.WaitUntil(() => nic.Guest.Device.RxDropped == 1, "the oversized frame to be dropped");
        var small = Pattern(300, 3);
        host.SendTo(small, new IPEndPoint(nic.GuestIp, 9001));

        var (header, frame, buffers) = nic.Guest.WaitForRx(f => Frames.UdpPayloadTo(f, 9001) is not null);
        Assert.Equal(small, Frames.UdpPayloadTo(frame, 9001));
        Assert.Equal((1, (ushort)1), (buffers, header.NumBuffers));
        Assert.Equal(1, nic.Guest.Device.RxPackets);
    }

    [Theory]
    [InlineData(0UL, 0u)]
    [InlineData(VirtioNetDevice.FeatureGuestTso4, 0u)] // TSO without checksum offload means nothing
    [InlineData(VirtioNetDevice.FeatureGuestCsum, TapDevice.OffloadCsum)]
    [InlineData(VirtioNetDevice.FeatureGuestCsum | VirtioNetDevice.FeatureGuestTso4, TapDevice.OffloadCsum | TapDevice.OffloadTso4)]
    [InlineData(VirtioNetDevice.FeatureGuestCsum | VirtioNetDevice.FeatureGuestTso6, TapDevice.OffloadCsum | TapDevice.OffloadTso6)]
    [InlineData(VirtioNetDevice.FeatureGuestCsum | VirtioNetDevice.FeatureGuestEcn, TapDevice.OffloadCsum)] // ECN only goes with TSO
    [InlineData(VirtioNetDevice.FeatureGuestCsum | VirtioNetDevice.FeatureGuestTso4 | VirtioNetDevice.FeatureGuestTso6 | VirtioNetDevice.FeatureGuestEcn,
        TapDevice.OffloadCsum | TapDevice.OffloadTso4 | TapDevice.OffloadTso6 | TapDevice.OffloadTsoEcn)]
    [InlineData(VirtioNetDevice.FeatureCsum | VirtioNetDevice.FeatureHostTso4 | VirtioNetDevice.FeatureHostTso6, 0u)] // host-side (tx) offloads do not matter for rx
    public void Tap_offloads_are_what_the_guest_accepted_for_receive(ulong accepted, uint expected) =>
        Assert.Equal(expected, VirtioNetDevice.TapOffloadsFor(accepted));

    [SkippableFact]
    public void Activation_sets_the_tap_offloads_and_reset_clears_them()
    {
        using var nic = new TestNic(fixture.Require());
        Assert.Equal(0u, nic.Guest.Device.TapOffloads);
        nic.Guest.Activate(TestNic.AllFeatures);
        Assert.Equal(TapDevice.OffloadCsum | TapDevice.OffloadTso4 | TapDevice.OffloadTso6 | TapDevice.OffloadTsoEcn, nic.Guest.Device.TapOffloads);
        nic.Guest.ResetAndReactivate(MmioTransport.FeatureVersion1 | VirtioNetDevice.FeatureGuestCsum);
        Assert.Equal(TapDevice.OffloadCsum, nic.Guest.Device.TapOffloads);
        nic.Guest.Loop.Invoke(nic.Guest.Device.Reset);
        Assert.Equal(0u, nic.Guest.Device.TapOffloads);
    }

    [Fact]
    public void Offered_features_are_the_fast_set_and_the_config_space_holds_mac_status_and_mtu()
    {
        ulong f = VirtioNetDevice.BaseFeatures;
        foreach (var bit in new[] { VirtioNetDevice.FeatureCsum, VirtioNetDevice.FeatureGuestCsum, VirtioNetDevice.FeatureHostTso4, VirtioNetDevice.FeatureHostTso6,
                     VirtioNetDevice.FeatureGuestTso4, VirtioNetDevice.FeatureGuestTso6, VirtioNetDevice.FeatureMrgRxbuf, VirtioNetDevice.FeatureMac, VirtioNetDevice.FeatureStatus })
            Assert.True((f & bit) != 0, $"feature 0x{bit:X} is not offered");
        Assert.Equal(0UL, f & (1UL << 17)); // no control queue
        Assert.Equal(0UL, f & VirtioNetDevice.FeatureMtu);
    }

    [SkippableFact]
    public void Config_space_is_mac_link_up_one_queue_pair_and_the_mtu()
    {
        using var nic = new TestNic(fixture.Require());
        using var withMtu = new NetGuestDriver(TapDevice.Open(nic.Tap + "m", nic.Netns.Path), mtu: 1400);
        byte[] config = nic.Guest.Device.Config.ToArray();
        Assert.Equal(NetGuestDriver.GuestMac, config[..6]);
        Assert.Equal(new byte[] { 1, 0, 1, 0 }, config[6..10]);
        Assert.Equal(0UL, nic.Guest.Device.Features & VirtioNetDevice.FeatureMtu);
        Assert.Equal(1400, BitConverter.ToUInt16(withMtu.Device.Config[10..12]));
        Assert.NotEqual(0UL, withMtu.Device.Features & VirtioNetDevice.FeatureMtu);
    }

    [SkippableFact]
    public void Without_rx_buffers_the_tap_is_not_watched_until_the_guest_posts_some()
    {
        using var nic = new TestNic(fixture.Require());
        using var host = nic.HostUdp(7003);
        nic.Guest.Activate(TestNic.AllFeatures);
        for (int i = 0; i < 3; i++) host.SendTo(new byte[] { (byte)i }, new IPEndPoint(nic.GuestIp, 9003));
        Thread.Sleep(300);
        long events = nic.Guest.Device.TapEvents;
        Assert.InRange(events, 0, 2); // one wake-up finds no buffer and stops watching
        Thread.Sleep(200);
        Assert.Equal(events, nic.Guest.Device.TapEvents);
        Assert.Equal(0, nic.Guest.Device.RxPackets);

        nic.Guest.PostRxBuffers(8, 2048);
        var got = new List<byte>();
        NetGuestDriver.WaitUntil(() =>
        {
            got.AddRange(nic.Guest.TakeRxPackets().Select(p => Frames.UdpPayloadTo(p.Frame, 9003)).Where(p => p is not null).Select(p => p![0]));
            return got.Count == 3;
        }, "the three waiting datagrams");
        Assert.Equal(new byte[] { 0, 1, 2 }, got);
    }

    [SkippableFact]
    public void Malformed_tx_chains_are_completed_and_the_device_keeps_working()
    {
        using var nic = new TestNic(fixture.Require());
        nic.Guest.Activate(TestNic.AllFeatures);
        nic.Guest.PostRxBuffers(8, 2048);
        var g = nic.Guest;
        ulong buf = NetGuestDriver.TxArea;
        // Shorter than the header.
        g.SubmitRaw(VirtioNetDevice.TxQueue, 10, (10, buf, 8, 0, 0));
        // A device-writable descriptor in a tx chain.
        g.SubmitRaw(VirtioNetDevice.TxQueue, 11, (11, buf, 60, 1, 12), (12, buf + 100, 60, 2, 0));
        // Only device-writable.
        g.SubmitRaw(VirtioNetDevice.TxQueue, 13, (13, buf, 60, 2, 0));
        // Outside guest RAM, and wrapping around the address space.
        g.SubmitRaw(VirtioNetDevice.TxQueue, 14, (14, 0xFFFF_FFFF_0000, 100, 0, 0));
        g.SubmitRaw(VirtioNetDevice.TxQueue, 15, (15, ulong.MaxValue - 10, 100, 0, 0));
        // Longer than header + 64 KiB + 14.
        g.SubmitRaw(VirtioNetDevice.TxQueue, 16, (16, buf, 70_000, 0, 0));
        // A loop.
        g.SubmitRaw(VirtioNetDevice.TxQueue, 17, (17, buf, 100, 1, 18), (18, buf, 100, 1, 17));
        // A header-only packet (no Ethernet header).
        g.SubmitRaw(VirtioNetDevice.TxQueue, 19, (19, buf, 12, 0, 0));

        Assert.Equal(8, g.TxCompleted);
        Assert.Equal(8, g.Device.MalformedChains);
        Assert.All(g.TakeTxUsed(), u => Assert.Equal(0u, u.Length));
        Assert.Equal(0, g.Device.TxPackets);

        g.Send(default, Frames.ArpRequest(NetGuestDriver.GuestMac, nic.GuestIp, nic.HostIp));
        g.WaitForRx(f => Frames.ArpReplyFrom(f, nic.HostIp, NetGuestDriver.GuestMac) is not null);
        Assert.Empty(g.Log.Errors);
    }

    [SkippableFact]
    public void Malformed_rx_chains_are_completed_empty_and_the_next_good_chain_gets_the_frame()
    {
        using var nic = new TestNic(fixture.Require());
        using var host = nic.HostUdp(7004);
        var g = nic.Guest;
        g.Activate(TestNic.AllFeatures);
        g.PostRxChain([(2048, false)]);                  // device-readable only
        g.PostRxChain([(100, false), (2048, true)]);      // a readable part first
        g.PostRx(4);                                      // too small for the header
        g.SubmitRaw(VirtioNetDevice.RxQueue, 200, (200, 0xFFFF_FFFF_0000, 2048, 2, 0)); // outside RAM
        g.PostRx(2048);
        g.PostRx(2048); // a spare, should the host kernel send something else first
        g.NotifyRx();
        var payload = Pattern(500, 4);
        host.SendTo(payload, new IPEndPoint(nic.GuestIp, 9004));

        var (_, frame, _) = g.WaitForRx(f => Frames.UdpPayloadTo(f, 9004) is not null);
        Assert.Equal(payload, Frames.UdpPayloadTo(frame, 9004));
        Assert.Equal(4, g.Device.MalformedChains);
        Assert.InRange(g.Device.RxPackets, 1, 2);
        Assert.Empty(g.Log.Errors);
    }

    [SkippableFact]
    public void A_tx_burst_over_the_budget_continues_on_a_later_turn_of_the_loop()
    {
        using var nic = new TestNic(fixture.Require(), packetBudget: 16);
        using var host = nic.HostUdp(7005);
        var g = nic.Guest;
        g.Activate(TestNic.AllFeatures);
        // Queue 40 packets without notifying, then notify once.
        for (int i = 0; i < 40; i++)
        {
            var frame = nic.UdpToHost(7005, [(byte)i]);
            var packet = new byte[VirtioNetHeader.Size + frame.Length];
            frame.CopyTo(packet, VirtioNetHeader.Size);
            ushort index = (ushort)i;
            g.Loop.Invoke(() =>
            {
                g.Memory.Write(NetGuestDriver.TxArea + index * NetGuestDriver.SlotSize, packet);
                g.WriteDescriptor(NetGuestDriver.TxDesc, index, NetGuestDriver.TxArea + index * NetGuestDriver.SlotSize, (uint)packet.Length, 0, 0);
                g.Memory.WriteU16(NetGuestDriver.TxAvail + 4 + 2UL * index, index);
                g.Memory.WriteU16(NetGuestDriver.TxAvail + 2, (ushort)(index + 1));
            });
        }
        int firstPass = g.Invoke(() =>
        {
            g.Device.OnNotify(VirtioNetDevice.TxQueue);
            return (int)g.Device.TxPackets;
        });
        Assert.Equal(16, firstPass);
        NetGuestDriver.WaitUntil(() => g.Device.TxPackets == 40, "the rest of the burst");
        var buffer = new byte[16];
        var order = Enumerable.Range(0, 40).Select(_ => buffer[host.Receive(buffer) - 1]).ToList();
        Assert.Equal(Enumerable.Range(0, 40).Select(i => (byte)i), order);
    }

    [SkippableFact]
    public void A_tap_deleted_under_the_device_stops_rx_and_tx_is_drained_not_stuck()
    {
        using var nic = new TestNic(fixture.Require());
        var g = nic.Guest;
        g.Activate(TestNic.AllFeatures);
        g.PostRxBuffers(8, 2048);
        nic.Netns.Ip("link", "del", nic.Tap);
        NetGuestDriver.WaitUntil(() => g.Log.Errors.Count > 0 || g.Invoke(() => g.Device.TapEvents) > 0, "the device to notice");
        Thread.Sleep(100);
        long events = g.Device.TapEvents;
        Thread.Sleep(200);
        Assert.Equal(events, g.Device.TapEvents); // no busy loop on a dead fd
        g.Send(default, Frames.ArpRequest(NetGuestDriver.GuestMac, nic.GuestIp, nic.HostIp));
        Assert.Equal(1, g.TxCompleted);
        Assert.Empty(g.Log.Errors);
    }

    [SkippableFact]
    public void The_data_path_allocates_nothing_per_packet()
    {
        using var nic = new TestNic(fixture.Require());
        using var host = nic.HostUdp(7006);
        var g = nic.Guest;
        g.Activate(TestNic.AllFeatures);
        const int Packets = 200;
        // Warm up (JIT), then measure one notify that sends 200 packets ...
        g.Send(default, nic.UdpToHost(7006, [0]));
        host.Receive(new byte[64]);
        var frame = nic.UdpToHost(7006, new byte[100]);
        var packet = new byte[VirtioNetHeader.Size + frame.Length];
        frame.CopyTo(packet, VirtioNetHeader.Size);
        g.Loop.Invoke(() =>
        {
            for (ushort i = 0; i < Packets; i++)
            {
                ulong address = NetGuestDriver.TxArea + i * NetGuestDriver.SlotSize;
                g.Memory.Write(address, packet);
                g.WriteDescriptor(NetGuestDriver.TxDesc, i, address, (uint)packet.Length, 0, 0);
                g.Memory.WriteU16(NetGuestDriver.TxAvail + 4 + 2UL * (ushort)(1 + i), i);
            }
            g.Memory.WriteU16(NetGuestDriver.TxAvail + 2, 1 + Packets);
        });
        long txBytes = g.Invoke(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            g.Device.OnNotify(VirtioNetDevice.TxQueue);
            return GC.GetAllocatedBytesForCurrentThread() - before;
        });
        Assert.Equal(1 + Packets, g.Device.TxPackets);

        // ... and one that receives 120 (mergeable buffers, two per frame), waiting in the tap.
        const int Frames = 120;
        g.PostRxBuffers(1, 2048);
        host.SendTo(new byte[1], new IPEndPoint(nic.GuestIp, 9006));
        NetGuestDriver.WaitUntil(() => g.Device.RxPackets == 1, "the warm-up frame");
        g.ResetAndReactivate(TestNic.AllFeatures);
        for (int i = 0; i < Frames; i++) host.SendTo(new byte[1000], new IPEndPoint(nic.GuestIp, 9006));
        Thread.Sleep(100);
        for (int i = 0; i < 2 * Frames; i++) g.PostRx(600);
        long rxBytes = g.Invoke(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            g.Device.OnNotify(VirtioNetDevice.RxQueue);
            return GC.GetAllocatedBytesForCurrentThread() - before;
        });
        Assert.Equal(1 + Frames, g.Device.RxPackets);
        Assert.True(txBytes < 1024 && rxBytes < 1024, $"the device allocated {txBytes} bytes sending {Packets} packets and {rxBytes} receiving {Frames}");
    }
}

using System.Diagnostics;
using System.Net;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.VirtioNet;

namespace Rkt.Kvm.Vmm.Tests.Net;

/// <summary>
/// A hostile guest against virtio-net over a real tap: 100,000 inputs (random descriptor tables
/// and avail entries on both queues, tx packets with random headers and layouts, rx buffers of
/// any size, ring scribbles, resets with random features) while the host side sends datagrams of
/// random sizes. No handler may fail (the loop would log an error), the loop must stay
/// responsive, the NIC must still work at the end, and no descriptor may leak. The descriptor
/// check looks at the whole process, so this runs alone (see <see cref="SoloCollection"/>).
/// </summary>
[Collection(SoloCollection.Name)]
public sealed class VirtioNetFuzzTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int Inputs = 100_000;

    private static HashSet<string> OpenFds() =>
        Directory.GetFiles("/proc/self/fd").Select(f => $"{Path.GetFileName(f)} -> {new FileInfo(f).LinkTarget}").ToHashSet();

    [SkippableFact]
    public void Hundred_thousand_hostile_inputs_leave_no_failure_no_stall_and_no_leak()
    {
        Skip.If(TestNetns.UnavailableReason is not null, TestNetns.UnavailableReason);
        using var netns = new TestNetns();
        var fdsBefore = OpenFds();
        var random = new Random(20261201);
        var slowest = TimeSpan.Zero;
        using (var nic = new TestNic(netns))
        using (var host = nic.HostUdp(7100))
        {
            var g = nic.Guest;
            g.Activate(RandomFeatures(random));
            var payload = new byte[9000];
            random.NextBytes(payload);
            var guestEndpoint = new IPEndPoint(nic.GuestIp, 9100);
            var watch = new Stopwatch();
            for (int i = 0; i < Inputs; i++)
            {
                watch.Restart();
                switch (random.Next(100))
                {
                    case < 30: TxPacket(nic, random, payload); break;
                    case < 48: HostileChain(g, random, VirtioNetDevice.TxQueue); break;
                    case < 63: HostileChain(g, random, VirtioNetDevice.RxQueue); break;
                    case < 78: RxBuffer(g, random); break;
                    case < 90: host.SendTo(payload.AsSpan(0, random.Next(4) == 0 ? random.Next(payload.Length - 100) : random.Next(1, 200)), guestEndpoint); break;
                    case < 99: Scribble(g, random); break;
                    default: g.ResetAndReactivate(RandomFeatures(random)); break;
                }
                if (watch.Elapsed > slowest) slowest = watch.Elapsed;
            }
            output.WriteLine($"{Inputs} inputs: {g.Device.MalformedChains} malformed chains, tx {g.Device.TxPackets} sent / {g.Device.TxDropped} refused by the tap, " +
                $"rx {g.Device.RxPackets} delivered / {g.Device.RxDropped} dropped; slowest input {slowest.TotalMilliseconds:F1} ms");
            Assert.True(g.Device.MalformedChains > 10_000, $"only {g.Device.MalformedChains} chains were refused: the fuzzer is not reaching validation");
            Assert.True(g.Device.RxPackets > 100 && g.Device.TxPackets > 1000, $"rx {g.Device.RxPackets}, tx {g.Device.TxPackets}: the fuzzer is not reaching the data path");
            Assert.True(slowest < TimeSpan.FromSeconds(2), $"one input took {slowest.TotalMilliseconds:F0} ms: the loop stalled");

            // Still a working NIC after a reset.
            g.ResetAndReactivate(TestNic.AllFeatures);
            g.PostRxBuffers(32, 2048);
            g.Send(default, Frames.ArpRequest(NetGuestDriver.GuestMac, nic.GuestIp, nic.HostIp));
            g.WaitForRx(f => Frames.ArpReplyFrom(f, nic.HostIp, NetGuestDriver.GuestMac) is not null);
            Assert.Empty(g.Log.Errors);
        }
        var leaked = OpenFds().Except(fdsBefore).Where(f => f.Contains("tun") || f.Contains("anon_inode") || f.Contains("socket:")).ToList();
        Assert.True(leaked.Count == 0, $"file descriptors left open: {string.Join(", ", leaked)}");
    }

    private static ulong RandomFeatures(Random r) =>
        MmioTransport.FeatureVersion1 | (VirtioNetDevice.BaseFeatures & (ulong)r.NextInt64());

    /// <summary>A packet with a header that is zero or random, a real or random frame, split into 1-4 descriptors at random.</summary>
    private static void TxPacket(TestNic nic, Random r, byte[] payload)
    {
        byte[] frame = r.Next(3) == 0 ? nic.UdpToHost(7100, payload.AsSpan(0, r.Next(1, 1400)).ToArray()) : payload.AsSpan(0, r.Next(0, 2000)).ToArray();
        var packet = new byte[VirtioNetHeader.Size + frame.Length];
        if (r.Next(4) == 0) r.NextBytes(packet.AsSpan(0, VirtioNetHeader.Size));
        frame.CopyTo(packet, VirtioNetHeader.Size);
        ushort head = (ushort)r.Next(NetGuestDriver.QueueSize);
        int pieces = r.Next(1, 5);
        var cuts = Enumerable.Range(0, pieces - 1).Select(_ => r.Next(packet.Length + 1)).Append(0).Append(packet.Length).Distinct().Order().ToArray();
        var descriptors = new List<(ushort, ulong, uint, ushort, ushort)>();
        for (int k = 0; k + 1 < cuts.Length; k++)
        {
            ushort index = (ushort)((head + k) % NetGuestDriver.QueueSize);
            ulong address = NetGuestDriver.TxArea + index * NetGuestDriver.SlotSize;
            nic.Guest.Memory.Write(address, packet.AsSpan(cuts[k], cuts[k + 1] - cuts[k]));
            bool last = k + 2 == cuts.Length;
            descriptors.Add((index, address, (uint)(cuts[k + 1] - cuts[k]), (ushort)(last ? 0 : 1), (ushort)((index + 1) % NetGuestDriver.QueueSize)));
        }
        nic.Guest.SubmitRaw(VirtioNetDevice.TxQueue, head, [.. descriptors]);
    }

    /// <summary>A plausible rx buffer of a random size (tiny ones included), 1-3 descriptors, always writable.</summary>
    private static void RxBuffer(NetGuestDriver g, Random r)
    {
        ushort head = (ushort)r.Next(NetGuestDriver.QueueSize);
        int count = r.Next(1, 4);
        var descriptors = Enumerable.Range(0, count).Select(k =>
        {
            ushort index = (ushort)((head + k) % NetGuestDriver.QueueSize);
            uint size = r.Next(5) == 0 ? (uint)r.Next(0, 16) : (uint)r.Next(64, (int)NetGuestDriver.SlotSize);
            return (index, NetGuestDriver.RxArea + index * NetGuestDriver.SlotSize, size, (ushort)(2 | (k + 1 < count ? 1 : 0)), (ushort)((index + 1) % NetGuestDriver.QueueSize));
        }).ToArray();
        g.SubmitRaw(VirtioNetDevice.RxQueue, head, descriptors);
    }

    /// <summary>Raw descriptors: random addresses (some outside RAM), lengths, flags (NEXT, WRITE, INDIRECT) and links, loops included.</summary>
    private static void HostileChain(NetGuestDriver g, Random r, int queue)
    {
        ushort head = (ushort)r.Next(NetGuestDriver.QueueSize);
        int count = r.Next(1, 5);
        var descriptors = new List<(ushort, ulong, uint, ushort, ushort)>();
        for (int k = 0; k < count; k++)
        {
            ushort index = k == 0 ? head : (ushort)r.Next(NetGuestDriver.QueueSize);
            ulong address = r.Next(4) == 0 ? (ulong)r.NextInt64() : (ulong)r.Next(0, (int)NetGuestDriver.MemorySize);
            uint length = r.Next(3) == 0 ? (uint)r.Next() : (uint)r.Next(0, 70_000);
            descriptors.Add((index, address, length, (ushort)r.Next(0, 8), (ushort)r.Next(NetGuestDriver.QueueSize + 4)));
        }
        g.SubmitRaw(queue, head, [.. descriptors]);
    }

    /// <summary>Random bytes over the rings and tables, then a notify of a random queue.</summary>
    private static void Scribble(NetGuestDriver g, Random r)
    {
        var bytes = new byte[r.Next(1, 16)];
        r.NextBytes(bytes);
        ulong at = (ulong)r.Next((int)NetGuestDriver.RxDesc, (int)NetGuestDriver.TxUsed + 0x800 - bytes.Length);
        int queue = r.Next(2);
        g.Loop.Invoke(() =>
        {
            g.Memory.Write(at, bytes);
            g.Device.OnNotify(queue);
        });
    }
}

using System.Net.Sockets;
using Rkt.Kvm.Vmm.Devices.Vsock;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>
/// A hostile guest against the vsock device: 100,000 packets and chains, valid ones mutated and
/// pure garbage, with ring scribbles and driver resets mixed in. No exception may escape the
/// device (the event loop rethrows into the test), state stays bounded, and after a reset the
/// device holds no connection and no file descriptor more than before. The descriptor check looks
/// at the whole process, so this class runs alone (see <see cref="SoloCollection"/>).
/// </summary>
[Collection(SoloCollection.Name)]
public sealed class VsockFuzzTests
{
    private static HashSet<string> OpenFds() => Directory.GetFiles("/proc/self/fd").Select(f => $"{Path.GetFileName(f)} -> {new FileInfo(f).LinkTarget}").ToHashSet();

    [Fact]
    public void Hundred_thousand_hostile_inputs_leave_no_exception_and_no_leak()
    {
        var fdsBefore = OpenFds();
        var random = new Random(20261130);
        using (var guest = new VsockGuestDriver())
        {
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint($"{guest.SocketPath}_5000"));
            listener.Listen(4096);
            guest.Activate();
            var payload = new byte[60 * 1024]; // a tx slot of the scripted driver holds 64 KiB
            random.NextBytes(payload);
            for (int i = 0; i < 100_000; i++)
            {
                if (i % 16 == 0) guest.RefillRx();
                switch (random.Next(100))
                {
                    case < 55: guest.Send(MutatedPacket(random), payload.AsSpan(0, random.Next(4) == 0 ? random.Next(payload.Length) : random.Next(64))); break;
                    case < 90: HostileChain(guest, random); break;
                    case < 99: Scribble(guest, random); break;
                    default: guest.ResetAndReactivate(); break;
                }
                Assert.InRange(guest.Device.ConnectionCount, 0, HybridVsockMuxer.MaxConnections);
                if (i % 1000 == 0) DrainListener(listener);
            }
            Assert.True(guest.Device.MalformedPackets > 10_000, $"only {guest.Device.MalformedPackets} packets were refused: the fuzzer is not reaching validation");
            guest.ResetAndReactivate();
            Assert.Equal(0, guest.Device.ConnectionCount);
            DrainListener(listener);
        }
        var leaked = OpenFds().Except(fdsBefore).Where(f => f.Contains("socket:") || f.Contains("anon_inode")).ToList();
        Assert.True(leaked.Count == 0, $"file descriptors left open: {string.Join(", ", leaked)}");
    }

    private static void DrainListener(Socket listener)
    {
        listener.Blocking = false;
        try { while (true) listener.Accept().Dispose(); }
        catch (SocketException) { }
    }

    /// <summary>A plausible packet with one or two fields bent: ops, ports from a small set (so connections form), lengths, CIDs, flags, credit.</summary>
    private static VsockPacketHeader MutatedPacket(Random r)
    {
        uint[] ports = [5000, 5001, 1024, 1u << 30, uint.MaxValue];
        var h = VsockGuestDriver.Packet((uint)r.Next(40000, 40008), ports[r.Next(ports.Length)], (VsockOp)r.Next(1, 8),
            bufAlloc: (uint)r.Next(), fwdCnt: (uint)r.Next());
        h = h with { Length = h.Op == VsockOp.Rw ? (uint)r.Next(0, 100) : 0 };
        return r.Next(8) switch
        {
            0 => h with { Op = (VsockOp)r.Next(0, 12) },
            1 => h with { Length = (uint)r.Next() },
            2 => h with { SrcCid = (ulong)r.NextInt64() },
            3 => h with { DstCid = (ulong)r.Next(0, 5) },
            4 => h with { Type = (ushort)r.Next(0, 4) },
            5 => h with { Flags = (uint)r.Next() },
            _ => h,
        };
    }

    /// <summary>Raw descriptors: random addresses (some outside RAM), lengths, flags (NEXT, WRITE, INDIRECT) and links, including loops.</summary>
    private static void HostileChain(VsockGuestDriver guest, Random r)
    {
        ushort head = (ushort)r.Next(VsockGuestDriver.QueueSize);
        int count = r.Next(1, 5);
        for (int k = 0; k < count; k++)
        {
            ushort index = k == 0 ? head : (ushort)r.Next(VsockGuestDriver.QueueSize + 2);
            if (index >= VsockGuestDriver.QueueSize) continue;
            ulong address = r.Next(4) == 0 ? (ulong)r.NextInt64() : (ulong)r.Next(0, 4 << 20);
            uint length = r.Next(3) == 0 ? (uint)r.Next() : (uint)r.Next(0, 200);
            guest.WriteDescriptor(guest.TxDescriptorTable, index, address, length, (ushort)r.Next(0, 8), (ushort)r.Next(VsockGuestDriver.QueueSize + 4));
        }
        guest.SubmitTx(head);
    }

    /// <summary>Random bytes over the rings and tables, then a notify of a random queue.</summary>
    private static void Scribble(VsockGuestDriver guest, Random r)
    {
        var bytes = new byte[r.Next(1, 16)];
        r.NextBytes(bytes);
        guest.Memory.Write((ulong)r.Next(0x1000, 0xC000 - bytes.Length), bytes);
        int queue = r.Next(3);
        guest.Loop.Invoke(() => guest.Device.OnNotify(queue));
    }
}

/// <summary>Tests that measure process-wide state (open descriptors) run after the parallel ones, alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SoloCollection
{
    public const string Name = "runs alone";
}

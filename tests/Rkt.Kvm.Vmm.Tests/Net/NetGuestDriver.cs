using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.VirtioNet;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.Memory;
using Serilog;
using Serilog.Events;

namespace Rkt.Kvm.Vmm.Tests.Net;

/// <summary>
/// Plays the guest's virtio-net driver against a real <see cref="VirtioNetDevice"/> on a running
/// event loop, through split queues in a byte-array guest memory: posts rx chains (any layout),
/// sends packets on tx, reads the used rings and reassembles merged rx buffers as Linux does. All
/// ring accesses go through the loop, so they never race the device. Descriptor i of either table
/// always points at slot i of that queue's buffer area (0x11000 bytes: room for a 64 KiB frame).
/// </summary>
public sealed class NetGuestDriver : IDisposable
{
    public const ushort QueueSize = 256;
    public const ulong RxDesc = 0x1000, RxAvail = 0x2000, RxUsed = 0x3000;
    public const ulong TxDesc = 0x5000, TxAvail = 0x6000, TxUsed = 0x7000;
    public const ulong RxArea = 0x10_0000, TxArea = 0x140_0000, SlotSize = 0x11000;
    public const ulong MemorySize = 0x280_0000;
    public static readonly byte[] GuestMac = [0x02, 0x00, 0x00, 0x12, 0x34, 0x56];

    private readonly Stack<ushort> _freeRx = new(), _freeTx = new();
    private readonly Dictionary<ushort, List<(ushort Index, uint Length)>> _rxChains = [], _txChains = [];
    private ushort _rxAvailIdx, _rxUsedSeen, _txAvailIdx, _txUsedSeen;
    private int _signals;
    private readonly List<(ushort Head, uint Length, byte[] Data)> _rxBacklog = [];

    public GuestMemory Memory { get; } = GuestMemory.Allocate([(0, MemorySize)]);
    public CollectingSink Log { get; } = new();
    public EventLoop Loop { get; }
    public VirtioNetDevice Device { get; }
    public int Signals => Volatile.Read(ref _signals);

    public NetGuestDriver(TapDevice tap, int? mtu = null, int packetBudget = VirtioNetDevice.MaxPacketsPerWake)
    {
        var logger = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(Log).CreateLogger();
        Loop = new EventLoop(logger);
        Device = new VirtioNetDevice(Memory, tap, GuestMac, mtu, Loop, logger) { PacketBudget = packetBudget };
        Loop.Start();
        ResetRings();
    }

    private void ResetRings()
    {
        _freeRx.Clear();
        _freeTx.Clear();
        for (int i = QueueSize - 1; i >= 0; i--) { _freeRx.Push((ushort)i); _freeTx.Push((ushort)i); }
        _rxChains.Clear();
        _txChains.Clear();
        _rxBacklog.Clear();
        _rxAvailIdx = _rxUsedSeen = _txAvailIdx = _txUsedSeen = 0;
    }

    public void Activate(ulong features) => Activate(features, QueueSize);

    public void Activate(ulong features, ushort size)
    {
        var queues = new[]
        {
            new SplitQueue(Memory, size, RxDesc, RxAvail, RxUsed, indirectAllowed: (features & MmioTransport.FeatureIndirectDesc) != 0),
            new SplitQueue(Memory, size, TxDesc, TxAvail, TxUsed, indirectAllowed: (features & MmioTransport.FeatureIndirectDesc) != 0),
        };
        Loop.Invoke(() => Device.Activate(features, queues, _ => Interlocked.Increment(ref _signals)));
    }

    /// <summary>What Linux does on a device reset: the device forgets everything and the rings start over.</summary>
    public void ResetAndReactivate(ulong features)
    {
        Loop.Invoke(Device.Reset);
        foreach (var area in new[] { RxDesc, TxDesc }) Memory.GetSpan(area, 0x3000).Clear();
        ResetRings();
        Activate(features);
    }

    // ---------------------------------------------------------------- rx

    /// <summary>Posts one rx chain of device-writable descriptors of the given sizes (no notify).</summary>
    public ushort PostRx(params uint[] sizes) => PostRxChain(sizes.Select(s => (s, true)).ToArray());

    /// <summary>Posts one rx chain with the given descriptor sizes and directions (true: device-writable).</summary>
    public ushort PostRxChain((uint Size, bool Writable)[] parts)
    {
        var chain = parts.Select(p => (Index: _freeRx.Pop(), p.Size, p.Writable)).ToList();
        Loop.Invoke(() =>
        {
            for (int i = 0; i < chain.Count; i++)
            {
                ushort flags = (ushort)((chain[i].Writable ? 2 : 0) | (i + 1 < chain.Count ? 1 : 0));
                WriteDescriptor(RxDesc, chain[i].Index, RxArea + chain[i].Index * SlotSize, chain[i].Size, flags, i + 1 < chain.Count ? chain[i + 1].Index : (ushort)0);
            }
            PublishAvail(RxAvail, ref _rxAvailIdx, chain[0].Index);
        });
        _rxChains[chain[0].Index] = chain.Select(c => (c.Index, c.Size)).ToList();
        return chain[0].Index;
    }

    /// <summary>Posts <paramref name="count"/> single-buffer chains of <paramref name="size"/> bytes, then notifies.</summary>
    public void PostRxBuffers(int count, uint size)
    {
        for (int i = 0; i < count; i++) PostRx(size);
        NotifyRx();
    }

    public bool NotifyRx() => Invoke(() => Device.OnNotify(VirtioNetDevice.RxQueue));

    /// <summary>Used rx entries since the last call, with the bytes the device wrote (the descriptors go back to the free list).</summary>
    public List<(ushort Head, uint Length, byte[] Data)> TakeRxUsed()
    {
        var used = new List<(ushort, uint)>();
        Loop.Invoke(() => ReadUsed(RxUsed, ref _rxUsedSeen, used));
        var result = new List<(ushort, uint, byte[])>();
        foreach (var (head, length) in used)
        {
            if (!_rxChains.Remove(head, out var chain)) { result.Add((head, length, [])); continue; }
            var bytes = new List<byte>();
            foreach (var (index, size) in chain)
            {
                int n = (int)Math.Min(size, length - (uint)bytes.Count);
                if (n <= 0) break;
                bytes.AddRange(Memory.GetSpan(RxArea + index * SlotSize, n).ToArray());
            }
            foreach (var d in chain) _freeRx.Push(d.Index);
            result.Add((head, length, bytes.ToArray()));
        }
        return result;
    }

    /// <summary>
    /// Waits for a received packet whose frame matches <paramref name="match"/>; merged buffers are
    /// joined by num_buffers, as Linux does. Returns its header, the frame and how many buffers it used.
    /// </summary>
    public (VirtioNetHeader Header, byte[] Frame, int Buffers) WaitForRx(Func<byte[], bool> match, int timeoutMs = 5000)
    {
        long deadline = Environment.TickCount64 + timeoutMs;
        while (true)
        {
            foreach (var packet in TakeRxPackets())
                if (match(packet.Frame)) return packet;
            if (Environment.TickCount64 > deadline) throw new TimeoutException("The device delivered no matching frame.");
            Thread.Sleep(5);
        }
    }

    /// <summary>All whole packets delivered so far (entries shorter than the header are skipped, like Linux's "short packet").</summary>
    public List<(VirtioNetHeader Header, byte[] Frame, int Buffers)> TakeRxPackets()
    {
        _rxBacklog.AddRange(TakeRxUsed());
        var packets = new List<(VirtioNetHeader, byte[], int)>();
        while (_rxBacklog.Count > 0)
        {
            var first = _rxBacklog[0].Data;
            if (first.Length < VirtioNetHeader.Size) { _rxBacklog.RemoveAt(0); continue; }
            var header = VirtioNetHeader.Read(first);
            int buffers = Math.Max((int)header.NumBuffers, 1);
            if (_rxBacklog.Count < buffers) break; // the rest is not in the used ring yet
            var frame = _rxBacklog.Take(buffers).SelectMany(e => e.Data).Skip(VirtioNetHeader.Size).ToArray();
            _rxBacklog.RemoveRange(0, buffers);
            packets.Add((header, frame, buffers));
        }
        return packets;
    }

    // ---------------------------------------------------------------- tx

    /// <summary>Sends header + frame on tx, split into descriptors at <paramref name="splits"/> (byte offsets), then notifies.</summary>
    public bool Send(VirtioNetHeader header, byte[] frame, params int[] splits)
    {
        var packet = new byte[VirtioNetHeader.Size + frame.Length];
        header.Write(packet);
        frame.CopyTo(packet, VirtioNetHeader.Size);
        return SendRaw(packet, splits);
    }

    public bool SendRaw(byte[] packet, params int[] splits)
    {
        var bounds = splits.Where(s => s > 0 && s < packet.Length).Distinct().Order().Prepend(0).Append(packet.Length).ToArray();
        var parts = Enumerable.Range(0, bounds.Length - 1).Select(i => packet.AsSpan(bounds[i], bounds[i + 1] - bounds[i]).ToArray()).ToArray();
        ReclaimTx();
        var chain = parts.Select(p => (Index: _freeTx.Pop(), Data: p)).ToList();
        _txChains[chain[0].Index] = chain.Select(c => (c.Index, (uint)c.Data.Length)).ToList();
        return Invoke(() =>
        {
            for (int i = 0; i < chain.Count; i++)
            {
                ulong address = TxArea + chain[i].Index * SlotSize;
                Memory.Write(address, chain[i].Data);
                WriteDescriptor(TxDesc, chain[i].Index, address, (uint)chain[i].Data.Length, (ushort)(i + 1 < chain.Count ? 1 : 0), i + 1 < chain.Count ? chain[i + 1].Index : (ushort)0);
            }
            PublishAvail(TxAvail, ref _txAvailIdx, chain[0].Index);
            return Device.OnNotify(VirtioNetDevice.TxQueue);
        });
    }

    /// <summary>Writes descriptors as given and publishes <paramref name="head"/> on the queue, then notifies it (for hostile inputs).</summary>
    public bool SubmitRaw(int queue, ushort head, params (ushort Index, ulong Address, uint Length, ushort Flags, ushort Next)[] descriptors) => Invoke(() =>
    {
        ulong table = queue == VirtioNetDevice.RxQueue ? RxDesc : TxDesc;
        foreach (var d in descriptors) WriteDescriptor(table, d.Index, d.Address, d.Length, d.Flags, d.Next);
        if (queue == VirtioNetDevice.RxQueue) PublishAvail(RxAvail, ref _rxAvailIdx, head);
        else PublishAvail(TxAvail, ref _txAvailIdx, head);
        return Device.OnNotify(queue);
    });

    /// <summary>How many tx chains the device has completed so far.</summary>
    public int TxCompleted => Invoke(() => (int)BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(TxUsed + 2, 2)));

    /// <summary>Used tx entries since the last call.</summary>
    public List<(ushort Head, uint Length)> TakeTxUsed()
    {
        var used = new List<(ushort, uint)>();
        Loop.Invoke(() => ReadUsed(TxUsed, ref _txUsedSeen, used));
        foreach (var (head, _) in used)
            if (_txChains.Remove(head, out var chain)) foreach (var d in chain) _freeTx.Push(d.Index);
        return used;
    }

    private void ReclaimTx()
    {
        if (_freeTx.Count < 32) TakeTxUsed();
    }

    public static void WaitUntil(Func<bool> condition, string what, int timeoutMs = 5000)
    {
        long deadline = Environment.TickCount64 + timeoutMs;
        while (!condition())
        {
            if (Environment.TickCount64 > deadline) throw new TimeoutException($"Timed out waiting for {what}.");
            Thread.Sleep(5);
        }
    }

    // ---------------------------------------------------------------- ring plumbing

    public T Invoke<T>(Func<T> action)
    {
        T result = default!;
        Loop.Invoke(() => result = action());
        return result;
    }

    private void PublishAvail(ulong avail, ref ushort availIdx, ushort head)
    {
        Memory.WriteU16(avail + 4 + 2UL * (ushort)(availIdx % QueueSize), head);
        availIdx++;
        Memory.WriteU16(avail + 2, availIdx);
    }

    private void ReadUsed(ulong usedRing, ref ushort seen, List<(ushort, uint)> into)
    {
        ushort usedIdx = BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(usedRing + 2, 2));
        while (seen != usedIdx)
        {
            var element = Memory.GetSpan(usedRing + 4 + 8UL * (ushort)(seen % QueueSize), 8);
            into.Add(((ushort)BinaryPrimitives.ReadUInt32LittleEndian(element), BinaryPrimitives.ReadUInt32LittleEndian(element[4..])));
            seen++;
        }
    }

    public void WriteDescriptor(ulong table, int index, ulong address, uint length, ushort flags, ushort next) =>
        Tests.VsockGuestDriver.WriteDescriptor(Memory, table, index, address, length, flags, next);

    public void Dispose()
    {
        Loop.Stop();
        Device.Dispose();
        Loop.Dispose();
        Memory.Dispose();
    }
}

/// <summary>Keeps every log event, so a test can assert that no handler failed (the loop logs and goes on).</summary>
public sealed class CollectingSink : Serilog.Core.ILogEventSink
{
    private readonly List<LogEvent> _events = [];
    public void Emit(LogEvent e) { lock (_events) _events.Add(e); }
    public List<string> Errors
    {
        get { lock (_events) return _events.Where(e => e.Level >= LogEventLevel.Error).Select(e => $"{e.RenderMessage()} {e.Exception}").ToList(); }
    }
}

using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Vsock;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.Memory;
using Serilog;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>
/// Plays the guest's virtio-vsock driver against a real <see cref="VsockDevice"/> on a running
/// event loop, through split queues in a byte-array guest memory: posts receive buffers the way
/// Linux 6.1 does (a 44-byte header buffer plus a 4 KiB data buffer), sends packets on the tx
/// queue, and reads what the device put in the used rings. All device calls go through the loop.
/// </summary>
public sealed class VsockGuestDriver : IDisposable
{
    public const ulong GuestCid = 3;
    public const ushort QueueSize = 64;
    private const ulong RxDesc = 0x1000, RxAvail = 0x2000, RxUsed = 0x3000;
    private const ulong TxDesc = 0x5000, TxAvail = 0x6000, TxUsed = 0x7000;
    private const ulong EvDesc = 0x9000, EvAvail = 0xA000, EvUsed = 0xB000;
    private const ulong RxBuffers = 0x100000, TxBuffers = 0x200000;
    public const int RxDataSize = 4096;

    private readonly string _dir;
    private ushort _rxAvailIdx, _rxUsedSeen, _txAvailIdx;
    private int _signals;

    public GuestMemory Memory { get; } = GuestMemory.Allocate([(0, 4 << 20)]);
    public EventLoop Loop { get; } = new(new LoggerConfiguration().WriteTo.Sink(new StderrSink()).CreateLogger());
    public VsockDevice Device { get; }
    public string SocketPath { get; }
    public int Signals => Volatile.Read(ref _signals);

    public VsockGuestDriver()
    {
        _dir = Directory.CreateTempSubdirectory("rkt-kvm-vsock-").FullName;
        SocketPath = Path.Combine(_dir, "vm.sock");
        Device = new VsockDevice(Memory, GuestCid, SocketPath, Loop, new LoggerConfiguration().WriteTo.Sink(new StderrSink()).CreateLogger());
        Loop.Start();
    }

    public void Activate()
    {
        var queues = new[]
        {
            new SplitQueue(Memory, QueueSize, RxDesc, RxAvail, RxUsed),
            new SplitQueue(Memory, QueueSize, TxDesc, TxAvail, TxUsed),
            new SplitQueue(Memory, QueueSize, EvDesc, EvAvail, EvUsed),
        };
        Loop.Invoke(() => Device.Activate(0, queues, _ => Interlocked.Increment(ref _signals)));
    }

    /// <summary>Makes <paramref name="count"/> receive buffers available (descriptor pairs 2i, 2i+1), then notifies.</summary>
    public void PostRxBuffers(int count)
    {
        for (int i = 0; i < count; i++)
        {
            ushort slot = (ushort)(_rxAvailIdx % (QueueSize / 2));
            ushort head = (ushort)(slot * 2);
            ulong buffer = RxBuffers + slot * (ulong)(RxDataSize + 64);
            WriteDescriptor(RxDesc, head, buffer, VsockPacketHeader.Size, flags: 2 | 1, next: (ushort)(head + 1));
            WriteDescriptor(RxDesc, (ushort)(head + 1), buffer + 64, RxDataSize, flags: 2, next: 0);
            Memory.WriteU16(RxAvail + 4 + 2UL * (ushort)(_rxAvailIdx % QueueSize), head);
            _rxAvailIdx++;
        }
        Memory.WriteU16(RxAvail + 2, _rxAvailIdx);
        Loop.Invoke(() => Device.OnNotify(VsockDevice.RxQueue));
    }

    /// <summary>Tops the receive queue up to its 32 buffer pairs (what the device used is free again).</summary>
    public void RefillRx()
    {
        ushort used = BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(RxUsed + 2, 2));
        int outstanding = (ushort)(_rxAvailIdx - used);
        if (outstanding < QueueSize / 2) PostRxBuffers(QueueSize / 2 - outstanding);
    }

    /// <summary>What the Linux driver does on a device reset: the device forgets everything, rings start over.</summary>
    public void ResetAndReactivate()
    {
        Loop.Invoke(Device.Reset);
        foreach (var area in new[] { RxDesc, TxDesc, EvDesc }) Memory.GetSpan(area, 0x3000).Clear();
        _rxAvailIdx = _rxUsedSeen = _txAvailIdx = 0;
        _backlog.Clear();
        Activate();
    }

    /// <summary>Sends one packet on the tx queue: header descriptor plus an optional payload descriptor.</summary>
    public void Send(VsockPacketHeader header, ReadOnlySpan<byte> payload = default)
    {
        ushort head = (ushort)((_txAvailIdx % (QueueSize / 2)) * 2);
        ulong buffer = TxBuffers + (ulong)(_txAvailIdx % (QueueSize / 2)) * 0x10000;
        var bytes = new byte[VsockPacketHeader.Size];
        header.Write(bytes);
        Memory.Write(buffer, bytes);
        if (payload.IsEmpty) WriteDescriptor(TxDesc, head, buffer, VsockPacketHeader.Size, flags: 0, next: 0);
        else
        {
            WriteDescriptor(TxDesc, head, buffer, VsockPacketHeader.Size, flags: 1, next: (ushort)(head + 1));
            Memory.Write(buffer + 64, payload.ToArray());
            WriteDescriptor(TxDesc, (ushort)(head + 1), buffer + 64, (uint)payload.Length, flags: 0, next: 0);
        }
        SubmitTx(head);
    }

    /// <summary>Puts a raw chain head on the tx ring and notifies (for hostile inputs).</summary>
    public void SubmitTx(ushort head)
    {
        Memory.WriteU16(TxAvail + 4 + 2UL * (ushort)(_txAvailIdx % QueueSize), head);
        _txAvailIdx++;
        Memory.WriteU16(TxAvail + 2, _txAvailIdx);
        Loop.Invoke(() => Device.OnNotify(VsockDevice.TxQueue));
    }

    public void WriteDescriptor(ulong table, ushort index, ulong address, uint length, ushort flags, ushort next) =>
        WriteDescriptor(Memory, table, index, address, length, flags, next);

    /// <summary>One split-queue descriptor, as a driver writes it (shared by the scripted drivers).</summary>
    public static void WriteDescriptor(GuestMemory memory, ulong table, int index, ulong address, uint length, ushort flags, ushort next)
    {
        var d = memory.GetSpan(table + (ulong)index * 16UL, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    public ulong TxDescriptorTable => TxDesc;

    public static VsockPacketHeader Packet(uint guestPort, uint hostPort, VsockOp op, uint length = 0, uint flags = 0, uint bufAlloc = 256 * 1024, uint fwdCnt = 0) =>
        new(GuestCid, VsockPacketHeader.HostCid, guestPort, hostPort, length, VsockPacketHeader.TypeStream, op, flags, bufAlloc, fwdCnt);

    /// <summary>Packets the device has written to the rx queue since the last call.</summary>
    public List<(VsockPacketHeader Header, byte[] Payload)> TakeRx()
    {
        var packets = new List<(VsockPacketHeader, byte[])>();
        Loop.Invoke(() =>
        {
            ushort usedIdx = BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(RxUsed + 2, 2));
            while (_rxUsedSeen != usedIdx)
            {
                var element = Memory.GetSpan(RxUsed + 4 + 8UL * (ushort)(_rxUsedSeen % QueueSize), 8);
                ushort head = (ushort)BinaryPrimitives.ReadUInt32LittleEndian(element);
                uint length = BinaryPrimitives.ReadUInt32LittleEndian(element[4..]);
                _rxUsedSeen++;
                if (length < VsockPacketHeader.Size) continue;
                ulong buffer = RxBuffers + (ulong)(head / 2) * (RxDataSize + 64);
                var header = VsockPacketHeader.Read(Memory.GetSpan(buffer, VsockPacketHeader.Size));
                packets.Add((header, Memory.GetSpan(buffer + 64, (int)header.Length).ToArray()));
            }
        });
        return packets;
    }

    private readonly List<(VsockPacketHeader Header, byte[] Payload)> _backlog = [];

    /// <summary>
    /// Waits until the device has written a packet matching <paramref name="match"/> and returns
    /// the first such one; packets before it go to <paramref name="skipped"/> (when given), packets
    /// after it stay for the next call.
    /// </summary>
    public (VsockPacketHeader Header, byte[] Payload) WaitForRx(Func<VsockPacketHeader, bool> match, List<(VsockPacketHeader, byte[])>? skipped = null, int timeoutMs = 5000)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (true)
        {
            _backlog.AddRange(TakeRx());
            int i = _backlog.FindIndex(p => match(p.Header));
            if (i >= 0)
            {
                var found = _backlog[i];
                skipped?.AddRange(_backlog.Take(i));
                _backlog.RemoveRange(0, i + 1);
                return found;
            }
            if (Environment.TickCount64 > deadline) throw new TimeoutException($"The device wrote no matching packet to the rx queue ({_backlog.Count} others).");
            Thread.Sleep(5);
        }
    }

    public void Dispose()
    {
        Loop.Stop();
        Device.Dispose();
        Loop.Dispose();
        Memory.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

internal sealed class StderrSink : Serilog.Core.ILogEventSink
{
    public void Emit(Serilog.Events.LogEvent e) => Console.Error.WriteLine($"LOG {e.Level} {e.RenderMessage()} {e.Exception}");
}

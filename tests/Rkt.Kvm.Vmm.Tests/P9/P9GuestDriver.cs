using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Virtio9p;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.Memory;
using Serilog;
using Serilog.Events;

namespace Rkt.Kvm.Vmm.Tests.NineP;

/// <summary>
/// Plays Linux's virtio-9p driver against a real <see cref="Virtio9pDevice"/> on a running event
/// loop: puts descriptor chains (one request, or zero-copy style with the data in separate
/// page-sized buffers, direct or through an indirect table) on the request queue, notifies, and
/// waits for the used ring. Counts every error the device logs, so a test can insist on none.
/// </summary>
public sealed class P9GuestDriver : IDisposable
{
    public const ushort QueueSize = 128;
    public const ulong Desc = 0x1000, Avail = 0x2000, Used = 0x3000;
    /// <summary>Each slot of 16 descriptors has its own 256 KiB of buffer space from here.</summary>
    public const ulong Buffers = 0x100000;
    private const int SlotDescriptors = 16;
    private ushort _availIdx, _usedSeen;
    private int _errors;

    public GuestMemory Memory { get; } = GuestMemory.Allocate([(0, 4 << 20)]);
    public EventLoop Loop { get; }
    public Virtio9pDevice Device { get; }
    public int Errors => Volatile.Read(ref _errors);
    public int Signals;

    public P9GuestDriver(P9Server server)
    {
        var log = new LoggerConfiguration().WriteTo.Sink(new CountingSink(this)).CreateLogger();
        Loop = new EventLoop(log);
        Device = new Virtio9pDevice(Memory, server, Loop, log);
        Loop.Start();
        Activate();
    }

    public void Activate()
    {
        var queue = new SplitQueue(Memory, QueueSize, Desc, Avail, Used, indirectAllowed: true);
        Loop.Invoke(() => Device.Activate(Virtio9pDevice.FeatureMountTag, [queue], _ => Interlocked.Increment(ref Signals)));
    }

    public void ResetAndReactivate()
    {
        Loop.Invoke(Device.Reset);
        Memory.GetSpan(Desc, 0x3000).Clear();
        _availIdx = _usedSeen = 0;
        Activate();
    }

    public ushort NextHead => (ushort)((_availIdx % (QueueSize / SlotDescriptors)) * SlotDescriptors);
    public ulong SlotBuffer(ushort head) => Buffers + (ulong)(head / SlotDescriptors) * 0x40000;

    public void WriteDescriptor(ulong table, int index, ulong address, uint length, ushort flags, ushort next) =>
        VsockGuestDriver.WriteDescriptor(Memory, table, index, address, length, flags, next);

    /// <summary>Puts <paramref name="head"/> on the ring and notifies.</summary>
    public void Submit(ushort head)
    {
        Put(head);
        Notify();
    }

    /// <summary>Puts <paramref name="head"/> on the available ring without notifying.</summary>
    public void Put(ushort head)
    {
        Memory.WriteU16(Avail + 4 + 2UL * (ushort)(_availIdx % QueueSize), head);
        _availIdx++;
        Memory.WriteU16(Avail + 2, _availIdx);
    }

    /// <summary>Notifies the device of queue 0, on its event loop as the transport does.</summary>
    public void Notify() => Loop.Invoke(() => Device.OnNotify(0));

    /// <summary>Waits for the device to have used everything submitted; returns every used element since the last wait, in ring order.</summary>
    public List<(ushort Head, uint Length)> WaitAllUsedInOrder(int timeoutMs = 10000)
    {
        ushort from = _usedSeen;
        WaitAllUsed(timeoutMs);
        var used = new List<(ushort, uint)>();
        for (ushort i = from; i != _usedSeen; i++)
        {
            var e = Memory.GetSpan(Used + 4 + 8UL * (ushort)(i % QueueSize), 8);
            used.Add(((ushort)BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..])));
        }
        return used;
    }

    /// <summary>Waits for the device to have used everything submitted; returns the last (head, length).</summary>
    public (ushort Head, uint Length) WaitAllUsed(int timeoutMs = 10000)
    {
        long deadline = Environment.TickCount64 + timeoutMs;
        while (BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(Used + 2, 2)) != _availIdx)
        {
            if (Environment.TickCount64 > deadline) throw new TimeoutException($"the device used {BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(Used + 2, 2))} of {_availIdx} chains");
            Thread.SpinWait(50);
        }
        _usedSeen = _availIdx;
        var e = Memory.GetSpan(Used + 4 + 8UL * (ushort)((_usedSeen - 1) % QueueSize), 8);
        return ((ushort)BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
    }

    /// <summary>
    /// One request: the request bytes split into readable buffers at <paramref name="requestSplits"/>,
    /// the reply space in writable buffers of <paramref name="replySizes"/>, each buffer at its own
    /// (non-adjacent) address; with <paramref name="indirect"/>, through an indirect table. Returns the reply stream.
    /// </summary>
    public byte[] Call(byte[] request, int[]? requestSplits = null, int[]? replySizes = null, bool indirect = false)
    {
        var chain = Prepare(request, requestSplits, replySizes, indirect);
        Submit(chain.Head);
        var (usedHead, length) = WaitAllUsed();
        Assert.Equal(chain.Head, usedHead);
        return chain.Reply(Memory, length);
    }

    /// <summary>A chain written into the descriptor table (not yet on the available ring) and where its reply goes.</summary>
    public sealed record PreparedChain(ushort Head, IReadOnlyList<(ulong Address, uint Length, bool Writable)> Parts)
    {
        /// <summary>The reply stream: the first <paramref name="length"/> bytes of the writable buffers.</summary>
        public byte[] Reply(GuestMemory memory, uint length)
        {
            var reply = new byte[length];
            int copied = 0;
            foreach (var p in Parts.Where(p => p.Writable))
            {
                int n = (int)Math.Min(p.Length, length - copied);
                memory.GetSpan(p.Address, n).CopyTo(reply.AsSpan(copied));
                copied += n;
            }
            return reply;
        }
    }

    /// <summary>
    /// Writes one request chain into the next free slot (see <see cref="Call"/>) without putting it on
    /// the ring; <see cref="Put"/> it next (before preparing another: the slot follows the ring index).
    /// </summary>
    public PreparedChain Prepare(byte[] request, int[]? requestSplits = null, int[]? replySizes = null, bool indirect = false)
    {
        ushort head = NextHead;
        ulong buffer = SlotBuffer(head);
        var parts = new List<(ulong Address, uint Length, bool Writable)>();
        int at = 0;
        foreach (int cut in (requestSplits ?? []).Where(c => c < request.Length).Append(request.Length))
        {
            Memory.Write(buffer, request.AsSpan(at, cut - at));
            parts.Add((buffer, (uint)(cut - at), false));
            buffer += (ulong)(cut - at) + 64 + 4096 & ~4095UL; // a gap: the buffers are not contiguous
            at = cut;
        }
        foreach (int size in replySizes ?? [8192])
        {
            Memory.GetSpan(buffer, size).Fill(0xEE);
            parts.Add((buffer, (uint)size, true));
            buffer += (ulong)size + 64 + 4096 & ~4095UL;
        }
        if (indirect)
        {
            ulong table = buffer;
            for (int i = 0; i < parts.Count; i++)
                WriteDescriptor(table, i, parts[i].Address, parts[i].Length, (ushort)((parts[i].Writable ? 2 : 0) | (i + 1 < parts.Count ? 1 : 0)), (ushort)(i + 1));
            WriteDescriptor(Desc, head, table, (uint)parts.Count * 16, 4, 0);
        }
        else
        {
            for (int i = 0; i < parts.Count; i++)
                WriteDescriptor(Desc, head + i, parts[i].Address, parts[i].Length, (ushort)((parts[i].Writable ? 2 : 0) | (i + 1 < parts.Count ? 1 : 0)), (ushort)(head + i + 1));
        }
        return new PreparedChain(head, parts);
    }

    public void Dispose()
    {
        Loop.Stop();
        Device.Dispose();
        Loop.Dispose();
        Memory.Dispose();
    }

    private sealed class CountingSink(P9GuestDriver driver) : Serilog.Core.ILogEventSink
    {
        public void Emit(LogEvent e)
        {
            if (e.Level >= LogEventLevel.Error)
            {
                Interlocked.Increment(ref driver._errors);
                Console.Error.WriteLine($"LOG {e.Level} {e.RenderMessage()} {e.Exception}");
            }
        }
    }
}

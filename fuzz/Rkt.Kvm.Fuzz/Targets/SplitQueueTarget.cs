using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// The split virtqueue as a hostile driver fills it. Input: a 4-byte header, then the bytes of
/// guest RAM from the queue's base (descriptor table, available ring, used ring, buffers), copied
/// into both RAM regions so buffers may point into either (or into the hole between them).
/// Header: [0] bits 0-2 log2 of the queue size (1..128), bit 3 VIRTIO_F_INDIRECT_DESC, bit 4 the
/// device loop (<see cref="SplitQueue.PopValid(Action{string})"/>) instead of <see cref="SplitQueue.TryPop()"/>,
/// bit 5 the rings in the second region; [1..2] the available position a snapshot restored; [3] a
/// stream offset for the chain copies. Every chain taken must lie in RAM, readable before writable,
/// and the copy helpers must move exactly what the chain holds; only <see cref="VirtqueueException"/> may escape TryPop.
/// </summary>
public sealed class SplitQueueTarget : IFuzzTarget
{
    private const ulong RegionSize = 0x10000, SecondRegion = 0x20000;
    private const int HeaderSize = 4;
    // Made on first use: constructors run before SharpFuzz points the instrumented code at its map.
    private readonly Lazy<GuestMemory> _memory = new(() => GuestMemory.Allocate([(0, RegionSize), (SecondRegion, RegionSize)]));
    private readonly byte[] _scratch = new byte[512];
    private readonly List<DescriptorBuffer> _buffers = [];

    public string Name => "split-queue";
    public string Covers => "SplitQueue (descriptor table, rings, indirect tables, snapshot positions) and DescriptorChainIo";

    public void Run(ReadOnlySpan<byte> input)
    {
        var memory = _memory.Value;
        var r = new InputReader(input);
        byte flags = r.U8();
        ushort nextAvailable = r.U16();
        int skip = r.U8();
        var ram = input.Length > HeaderSize ? input[HeaderSize..] : [];
        ram = ram[..Math.Min(ram.Length, (int)RegionSize)];
        foreach (var region in memory.Regions)
        {
            var span = memory.GetSpan(region.GuestAddress, (int)region.Size);
            span.Clear();
            ram.CopyTo(span);
        }

        ushort size = (ushort)(1 << (flags & 7));
        bool indirect = (flags & 8) != 0, deviceLoop = (flags & 16) != 0;
        ulong base_ = (flags & 32) != 0 ? SecondRegion : 0;
        ulong desc = base_, avail = desc + 16UL * size, used = (avail + 6 + 2UL * size + 3) & ~3UL;
        var queue = new SplitQueue(memory, size, desc, avail, used, indirect);
        queue.RestorePositions(nextAvailable, nextAvailable);

        int budget = 4 * size + 8; // the driver may keep adding chains (a buffer can overlap the ring): stop somewhere
        if (deviceLoop)
        {
            int malformed = 0;
            while (budget-- > 0 && queue.PopValid(_buffers, out ushort head, _ => malformed++))
            {
                var chain = new DescriptorChain(head, [.. _buffers]);
                Check(memory, chain, size, skip);
                queue.PushUsed(head, (uint)Math.Min(chain.WritableLength, uint.MaxValue));
            }
            if (budget >= 0 && !queue.Broken && Pending(queue) != 0)
                throw new FuzzFindingException($"PopValid stopped with {Pending(queue)} chains pending on a healthy queue");
            return;
        }

        while (budget-- > 0)
        {
            DescriptorChain? chain;
            try
            {
                chain = queue.TryPop();
            }
            catch (VirtqueueException e)
            {
                if (e.QueueBroken) return;
                if (e.Head is not { } bad || bad >= size) throw new FuzzFindingException($"a malformed chain named head {e.Head} of a {size}-entry queue", e);
                queue.PushUsed(bad, 0);
                continue;
            }
            if (chain is null) return;
            Check(memory, chain, size, skip);
            queue.PushUsed(chain.Head, (uint)Math.Min(chain.WritableLength, uint.MaxValue));
        }
    }

    private static int Pending(SplitQueue queue)
    {
        try { return queue.Pending; }
        catch (VirtqueueException) { return 0; } // the driver moved its index since: broken now, not before
    }

    private void Check(GuestMemory memory, DescriptorChain chain, ushort size, int skip)
    {
        if (chain.Head >= size) throw new FuzzFindingException($"chain head {chain.Head} outside a {size}-entry table");
        if (chain.Buffers.Count == 0 || chain.Buffers.Count > size + SplitQueue.MaxSize)
            throw new FuzzFindingException($"a chain of {chain.Buffers.Count} buffers");
        bool sawWritable = false;
        foreach (var b in chain.Buffers)
        {
            if (b.Length > 0 && !memory.IsValidRange(b.Address, b.Length))
                throw new FuzzFindingException($"buffer 0x{b.Address:X}+0x{b.Length:X} is outside guest RAM");
            if (!b.DeviceWritable && sawWritable) throw new FuzzFindingException("a readable buffer after a writable one");
            sawWritable |= b.DeviceWritable;
        }

        long readable = chain.ReadableLength, writable = chain.WritableLength;
        var dest = _scratch.AsSpan();
        int read = chain.ReadFrom(memory, skip, dest);
        if (read != (int)Math.Clamp(readable - skip, 0, dest.Length))
            throw new FuzzFindingException($"ReadFrom copied {read} of {readable} readable bytes after {skip}");

        long segments = 0;
        foreach (var (address, length) in chain.ReadableSegments(skip, 300))
        {
            if (length <= 0 || !memory.IsValidRange(address, (ulong)length))
                throw new FuzzFindingException($"a readable segment 0x{address:X}+{length} outside RAM or empty");
            segments += length;
        }
        if (segments != Math.Clamp(readable - skip, 0, 300))
            throw new FuzzFindingException($"ReadableSegments gave {segments} of {readable} readable bytes after {skip}");

        var (first, firstLength) = chain.FirstWritableSegment(skip);
        if (firstLength > 0 && !memory.IsValidRange(first, (ulong)firstLength))
            throw new FuzzFindingException($"the first writable segment 0x{first:X}+{firstLength} is outside RAM");
        if ((firstLength > 0) != (writable > skip))
            throw new FuzzFindingException($"FirstWritableSegment gave {firstLength} bytes of {writable} writable after {skip}");

        // Written last: the bytes may land on the rings themselves, as a careless driver allows.
        int written = chain.WriteTo(memory, skip, dest[..read]);
        if (written != (int)Math.Clamp(writable - skip, 0, read))
            throw new FuzzFindingException($"WriteTo stored {written} of {read} bytes into {writable} writable after {skip}");
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        // One readable + two writable descriptors, and a single writable one at descriptor 4.
        yield return ("chain-8", Build(3, indirect: false, loop: false, ram =>
        {
            ram.Descriptor(ram.Desc, 0, ram.Data, 44, 1, 3);
            ram.Descriptor(ram.Desc, 3, ram.Data + 64, 10, 3, 5);
            ram.Descriptor(ram.Desc, 5, ram.Data + 128, 20, 2, 0);
            ram.Descriptor(ram.Desc, 4, ram.Data + 256, 16, 2, 0);
            ram.Offer(0, 4);
        }));
        // An indirect table with a readable and a writable buffer, through the device loop.
        yield return ("indirect-4", Build(2, indirect: true, loop: true, ram =>
        {
            ulong table = ram.Data + 512;
            ram.Descriptor(table, 0, ram.Data, 8, 1, 1);
            ram.Descriptor(table, 1, ram.Data + 8, 8, 2, 0);
            ram.Descriptor(ram.Desc, 1, table, 32, 4, 0);
            ram.Descriptor(ram.Desc, 2, ram.Data + 32, 4, 0, 0);
            ram.Offer(1, 2);
        }));
        // A loop, refused; then a good chain.
        yield return ("malformed-8", Build(3, indirect: false, loop: false, ram =>
        {
            ram.Descriptor(ram.Desc, 0, ram.Data, 1, 1, 1);
            ram.Descriptor(ram.Desc, 1, ram.Data, 1, 1, 0);
            ram.Descriptor(ram.Desc, 2, ram.Data + 16, 8, 0, 0);
            ram.Offer(0, 2);
        }));
    }

    /// <summary>A seed: the header, then RAM from the queue base with the rings where <see cref="Run"/> puts them for this size.</summary>
    private static byte[] Build(int log2Size, bool indirect, bool loop, Action<SeedRam> fill)
    {
        var ram = new SeedRam(1 << log2Size);
        fill(ram);
        var seed = new byte[HeaderSize + ram.Bytes.Length];
        seed[0] = (byte)(log2Size | (indirect ? 8 : 0) | (loop ? 16 : 0));
        ram.Bytes.CopyTo(seed, HeaderSize);
        return seed;
    }

    private sealed class SeedRam(int size)
    {
        public byte[] Bytes { get; } = new byte[0x700];
        public ulong Desc => 0;
        public ulong Avail => 16UL * (ulong)size;
        public ulong Data => 0x400;

        public void Descriptor(ulong table, int index, ulong address, uint length, ushort flags, ushort next)
        {
            var d = Bytes.AsSpan((int)table + index * 16, 16);
            BinaryPrimitives.WriteUInt64LittleEndian(d, address);
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
        }

        public void Offer(params ushort[] heads)
        {
            var ring = Bytes.AsSpan((int)Avail);
            for (int i = 0; i < heads.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(ring[(4 + 2 * i)..], heads[i]);
            BinaryPrimitives.WriteUInt16LittleEndian(ring[2..], (ushort)heads.Length);
        }
    }
}

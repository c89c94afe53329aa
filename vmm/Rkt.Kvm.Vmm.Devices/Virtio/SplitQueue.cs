using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Devices.Virtio;

/// <summary>One guest buffer of a descriptor chain: where it is and which way data flows.</summary>
public readonly record struct DescriptorBuffer(ulong Address, uint Length, bool DeviceWritable);

/// <summary>A validated descriptor chain taken from the available ring.</summary>
public sealed record DescriptorChain(ushort Head, IReadOnlyList<DescriptorBuffer> Buffers)
{
    public IEnumerable<DescriptorBuffer> Readable => Buffers.Where(b => !b.DeviceWritable);
    public IEnumerable<DescriptorBuffer> Writable => Buffers.Where(b => b.DeviceWritable);
    public long ReadableLength => Readable.Sum(b => (long)b.Length);
    public long WritableLength => Writable.Sum(b => (long)b.Length);
}

/// <summary>
/// Why the driver's data was refused. <see cref="Head"/> is set when a malformed chain was taken
/// off the ring: the device completes it with length 0 so the driver gets its descriptors back.
/// <see cref="QueueBroken"/> means the rings themselves are inconsistent: the device needs a reset.
/// </summary>
public sealed class VirtqueueException(string message, ushort? head = null, bool queueBroken = false) : Exception(message)
{
    public ushort? Head { get; } = head;
    public bool QueueBroken { get; } = queueBroken;
}

/// <summary>
/// A virtio 1.x split virtqueue (descriptor table, available ring, used ring) read from guest
/// memory. Everything the guest wrote is treated as hostile: ring and table addresses must lie in
/// RAM, indexes in range, every buffer inside RAM without overflow, chains no longer than the
/// queue (so loops end), device-writable buffers only after the readable ones, indirect tables
/// well formed and not nested. A bad chain throws <see cref="VirtqueueException"/>; nothing here
/// can read or write outside guest RAM.
/// </summary>
public sealed class SplitQueue
{
    public const int DescriptorSize = 16;
    public const ushort MaxSize = 32768;
    private const ushort FlagNext = 1, FlagWrite = 2, FlagIndirect = 4;

    private readonly GuestMemory _memory;
    private ushort _nextAvail;
    private ushort _nextUsed;

    public ushort Size { get; }
    public ulong DescriptorTable { get; }
    public ulong AvailableRing { get; }
    public ulong UsedRing { get; }
    /// <summary>Whether VIRTIO_F_INDIRECT_DESC was negotiated.</summary>
    public bool IndirectAllowed { get; }

    /// <summary>The next available-ring position to take and used-ring position to fill (a snapshot keeps both).</summary>
    public ushort NextAvailable => _nextAvail;
    public ushort NextUsed => _nextUsed;

    /// <summary>Continues a queue from a snapshot: the same rings, at the positions it had reached.</summary>
    public void RestorePositions(ushort nextAvailable, ushort nextUsed)
    {
        _nextAvail = nextAvailable;
        _nextUsed = nextUsed;
    }

    public SplitQueue(GuestMemory memory, ushort size, ulong descriptorTable, ulong availableRing, ulong usedRing, bool indirectAllowed = false)
    {
        if (size == 0 || size > MaxSize || (size & (size - 1)) != 0)
            throw new VirtqueueException($"Queue size {size} is not a power of two between 1 and {MaxSize}.");
        CheckArea(memory, descriptorTable, (ulong)size * DescriptorSize, 16, "descriptor table");
        CheckArea(memory, availableRing, 6 + 2UL * size, 2, "available ring");
        CheckArea(memory, usedRing, 6 + 8UL * size, 4, "used ring");
        _memory = memory;
        Size = size;
        DescriptorTable = descriptorTable;
        AvailableRing = availableRing;
        UsedRing = usedRing;
        IndirectAllowed = indirectAllowed;
    }

    private static void CheckArea(GuestMemory memory, ulong address, ulong length, ulong alignment, string what)
    {
        if (address % alignment != 0) throw new VirtqueueException($"The {what} at 0x{address:X} is not {alignment}-byte aligned.");
        if (!memory.IsValidRange(address, length)) throw new VirtqueueException($"The {what} at 0x{address:X}+0x{length:X} is outside guest RAM.");
    }

    /// <summary>How many chains the driver has made available that we have not taken yet.</summary>
    public int Pending
    {
        get
        {
            ushort availIdx = BinaryPrimitives.ReadUInt16LittleEndian(_memory.GetSpan(AvailableRing + 2, 2));
            int pending = (ushort)(availIdx - _nextAvail);
            // A driver can never have more than Size chains outstanding; more means a corrupt index.
            if (pending > Size) throw new VirtqueueException($"The available index moved {pending} entries ahead of a {Size}-entry queue.", queueBroken: true);
            return pending;
        }
    }

    /// <summary>Takes the next available chain, or null when there is none. Throws on a malformed chain (after consuming it).</summary>
    public DescriptorChain? TryPop()
    {
        var buffers = new List<DescriptorBuffer>();
        return TryPop(buffers, out ushort head) ? new DescriptorChain(head, buffers) : null;
    }

    /// <summary><see cref="TryPop()"/> into a caller's list (cleared first): false when there is none.</summary>
    private bool TryPop(List<DescriptorBuffer> buffers, out ushort head)
    {
        head = 0;
        if (Pending == 0) return false;
        ushort slot = (ushort)(_nextAvail % Size);
        head = BinaryPrimitives.ReadUInt16LittleEndian(_memory.GetSpan(AvailableRing + 4 + 2UL * slot, 2));
        _nextAvail++;
        if (head >= Size) throw new VirtqueueException($"The available ring names descriptor {head} of a {Size}-entry table.", queueBroken: true);
        buffers.Clear();
        Walk(head, buffers);
        return true;
    }

    /// <summary>
    /// <see cref="PopValid"/> without allocating, for per-packet paths: the next well-formed chain's
    /// buffers go into <paramref name="buffers"/> (cleared first) and its head into <paramref name="head"/>.
    /// False when nothing is left or the rings are broken. Never throws for guest data.
    /// </summary>
    public bool PopValid(List<DescriptorBuffer> buffers, out ushort head, Action<string> onMalformed)
    {
        head = 0;
        while (!Broken)
        {
            try
            {
                return TryPop(buffers, out head);
            }
            catch (VirtqueueException e) when (e.Head is { } bad)
            {
                onMalformed(e.Message);
                PushUsed(bad, 0);
            }
            catch (VirtqueueException e)
            {
                Broken = true;
                onMalformed(e.Message);
            }
        }
        return false;
    }

    /// <summary>Set once the rings were found inconsistent: the device must ignore the queue until the driver resets it.</summary>
    public bool Broken { get; private set; }

    /// <summary>
    /// The device-side loop every virtio device needs: takes the next well-formed chain, completing
    /// malformed ones with length 0 (so the driver gets its descriptors back) and reporting each
    /// through <paramref name="onMalformed"/>. Returns null when nothing is left or the rings are
    /// broken (<see cref="Broken"/>, reason in <paramref name="onMalformed"/> too). Never throws for guest data.
    /// </summary>
    public DescriptorChain? PopValid(Action<string> onMalformed)
    {
        var buffers = new List<DescriptorBuffer>();
        return PopValid(buffers, out ushort head, onMalformed) ? new DescriptorChain(head, buffers) : null;
    }

    /// <summary>Puts the chain last taken by <see cref="TryPop"/> back (the device found nothing to put in it after all).</summary>
    public void UndoPop() => _nextAvail--;

    /// <summary>Follows a chain; every table read is inside a table validated to lie in RAM, every buffer is checked.</summary>
    private void Walk(ushort head, List<DescriptorBuffer> buffers)
    {
        // The chain is already off the ring: name its head so the device can hand it back empty.
        VirtqueueException Malformed(string why) => new(why, head);

        ulong table = DescriptorTable;
        uint tableSize = Size;
        bool inIndirect = false;
        uint index = head;
        int budget = Size; // every descriptor visited at most once: longer means a loop
        while (true)
        {
            if (--budget < 0) throw Malformed($"The chain starting at descriptor {head} is longer than the queue (a loop?).");
            var d = _memory.GetSpan(table + (ulong)index * DescriptorSize, DescriptorSize);
            ulong address = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            ushort next = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);

            if ((flags & FlagIndirect) != 0)
            {
                if (!IndirectAllowed) throw Malformed("The driver used an indirect descriptor without negotiating VIRTIO_F_INDIRECT_DESC.");
                if (inIndirect) throw Malformed("An indirect table may not contain another indirect descriptor.");
                if ((flags & FlagNext) != 0) throw Malformed("An indirect descriptor may not also have NEXT set.");
                if (length == 0 || length % DescriptorSize != 0 || length / DescriptorSize > MaxSize)
                    throw Malformed($"An indirect table of {length} bytes is not a whole number of descriptors (at most {MaxSize}).");
                if (!_memory.IsValidRange(address, length))
                    throw Malformed($"The indirect table at 0x{address:X}+0x{length:X} is outside guest RAM.");
                table = address;
                tableSize = length / DescriptorSize;
                inIndirect = true;
                index = 0;
                budget = (int)tableSize;
                continue;
            }

            bool writable = (flags & FlagWrite) != 0;
            if (!writable && buffers.Count > 0 && buffers[^1].DeviceWritable)
                throw Malformed("A device-readable buffer follows a device-writable one.");
            if (length > 0 && !_memory.IsValidRange(address, length))
                throw Malformed($"Buffer 0x{address:X}+0x{length:X} is outside guest RAM.");
            buffers.Add(new DescriptorBuffer(address, length, writable));

            if ((flags & FlagNext) == 0) return;
            if (next >= tableSize) throw Malformed($"Descriptor {index} points to descriptor {next} of a {tableSize}-entry table.");
            index = next;
        }
    }

    /// <summary>Returns a chain to the driver with the number of bytes the device wrote into it.</summary>
    public void PushUsed(ushort head, uint writtenLength)
    {
        ushort slot = (ushort)(_nextUsed % Size);
        var element = _memory.GetSpan(UsedRing + 4 + 8UL * slot, 8);
        BinaryPrimitives.WriteUInt32LittleEndian(element, head);
        BinaryPrimitives.WriteUInt32LittleEndian(element[4..], writtenLength);
        _nextUsed++;
        // The element must be visible before the index that publishes it.
        Thread.MemoryBarrier();
        BinaryPrimitives.WriteUInt16LittleEndian(_memory.GetSpan(UsedRing + 2, 2), _nextUsed);
    }
}

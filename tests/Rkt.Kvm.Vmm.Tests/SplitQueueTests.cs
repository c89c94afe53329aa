using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>The split virtqueue against hostile drivers: every malformed chain is refused, nothing escapes guest RAM.</summary>
public sealed class SplitQueueTests : IDisposable
{
    private const ulong Ram = 1 << 20;
    private const ulong Desc = 0x1000, Avail = 0x2000, Used = 0x3000, Data = 0x10000;
    private const ushort Next = 1, Write = 2, Indirect = 4;
    private readonly GuestMemory _memory = GuestMemory.Allocate([(0, Ram)]);
    private ushort _availIdx;

    public void Dispose() => _memory.Dispose();

    private SplitQueue Queue(ushort size = 8, bool indirect = false) => new(_memory, size, Desc, Avail, Used, indirect);

    private void Descriptor(int index, ulong address, uint length, ushort flags = 0, ushort next = 0, ulong table = Desc)
    {
        var d = _memory.GetSpan(table + (ulong)index * 16, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    private void Offer(ushort head, ushort size = 8)
    {
        _memory.WriteU16(Avail + 4 + 2UL * (ushort)(_availIdx % size), head);
        _availIdx++;
        _memory.WriteU16(Avail + 2, _availIdx);
    }

    [Fact]
    public void Readable_then_writable_chain_is_returned_in_order()
    {
        var q = Queue();
        Descriptor(0, Data, 44, Next, 3);
        Descriptor(3, Data + 100, 10, Next | Write, 5);
        Descriptor(5, Data + 200, 20, Write);
        Offer(0);
        Assert.Equal(1, q.Pending);
        var chain = q.TryPop()!;
        Assert.Equal(0, chain.Head);
        Assert.Equal([new(Data, 44, false), new(Data + 100, 10, true), new(Data + 200, 20, true)], chain.Buffers);
        Assert.Equal(44, chain.ReadableLength);
        Assert.Equal(30, chain.WritableLength);
        Assert.Null(q.TryPop());
    }

    [Fact]
    public void Used_ring_gets_the_element_before_the_index()
    {
        var q = Queue();
        q.PushUsed(5, 123);
        q.PushUsed(6, 7);
        Assert.Equal(5u, BinaryPrimitives.ReadUInt32LittleEndian(_memory.GetSpan(Used + 4, 4)));
        Assert.Equal(123u, BinaryPrimitives.ReadUInt32LittleEndian(_memory.GetSpan(Used + 8, 4)));
        Assert.Equal(6u, BinaryPrimitives.ReadUInt32LittleEndian(_memory.GetSpan(Used + 12, 4)));
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(_memory.GetSpan(Used + 2, 2)));
    }

    [Fact]
    public void Head_outside_the_table_is_refused()
    {
        var q = Queue();
        Offer(8);
        Assert.Throws<VirtqueueException>(() => q.TryPop());
    }

    [Fact]
    public void Next_outside_the_table_is_refused()
    {
        var q = Queue();
        Descriptor(0, Data, 1, Next, 9);
        Offer(0);
        Assert.Throws<VirtqueueException>(() => q.TryPop());
    }

    [Fact]
    public void A_loop_ends_at_the_queue_size()
    {
        var q = Queue();
        Descriptor(0, Data, 1, Next, 1);
        Descriptor(1, Data, 1, Next, 0);
        Offer(0);
        Assert.Contains("loop", Assert.Throws<VirtqueueException>(() => q.TryPop()).Message);
    }

    [Theory]
    [InlineData(Ram, 1u)]                    // just past RAM
    [InlineData(Ram - 4, 8u)]                // straddles the end
    [InlineData(ulong.MaxValue - 3, 16u)]    // address + length overflows
    public void Buffers_outside_ram_are_refused(ulong address, uint length)
    {
        var q = Queue();
        Descriptor(0, address, length);
        Offer(0);
        Assert.Contains("outside guest RAM", Assert.Throws<VirtqueueException>(() => q.TryPop()).Message);
    }

    [Fact]
    public void Readable_after_writable_is_refused()
    {
        var q = Queue();
        Descriptor(0, Data, 4, Next | Write, 1);
        Descriptor(1, Data, 4);
        Offer(0);
        Assert.Contains("follows", Assert.Throws<VirtqueueException>(() => q.TryPop()).Message);
    }

    [Fact]
    public void Indirect_tables_work_when_negotiated_and_are_validated()
    {
        const ulong table = 0x8000;
        Descriptor(0, Data, 8, Next, 1, table);
        Descriptor(1, Data + 8, 8, Write, 0, table);
        Descriptor(0, table, 32, Indirect);
        Offer(0);
        var chain = Queue(indirect: true).TryPop()!;
        Assert.Equal([new(Data, 8, false), new(Data + 8, 8, true)], chain.Buffers);

        _availIdx = 0;
        Offer(0);
        Assert.Contains("without negotiating", Assert.Throws<VirtqueueException>(() => Queue(indirect: false).TryPop()).Message);

        _availIdx = 0;
        Descriptor(0, table, 24, Indirect); // not a whole number of descriptors
        Offer(0);
        Assert.Throws<VirtqueueException>(() => Queue(indirect: true).TryPop());

        _availIdx = 0;
        Descriptor(0, table, 16, Indirect);
        Descriptor(0, table, 16, Indirect, 0, table); // nested
        Offer(0);
        Assert.Contains("another indirect", Assert.Throws<VirtqueueException>(() => Queue(indirect: true).TryPop()).Message);
    }

    [Fact]
    public void Available_index_running_ahead_of_the_queue_is_refused()
    {
        var q = Queue();
        _memory.WriteU16(Avail + 2, 9);
        Assert.Throws<VirtqueueException>(() => q.Pending);
    }

    [Theory]
    [InlineData(0, Desc, Avail, Used)]
    [InlineData(6, Desc, Avail, Used)]          // not a power of two
    [InlineData(8, Ram - 16, Avail, Used)]      // table outside RAM
    [InlineData(8, Desc + 8, Avail, Used)]      // misaligned table
    [InlineData(8, Desc, Avail + 1, Used)]      // misaligned ring
    [InlineData(8, Desc, Avail, Ram - 8)]       // used ring outside RAM
    public void Bad_queue_layouts_are_refused(int size, ulong desc, ulong avail, ulong used) =>
        Assert.Throws<VirtqueueException>(() => new SplitQueue(_memory, (ushort)size, desc, avail, used));

    /// <summary>100,000 random tables and rings: the only failure allowed is a VirtqueueException, and reads never leave RAM.</summary>
    [Fact]
    public void Random_rings_never_escape_validation()
    {
        var random = new Random(20261129);
        var table = _memory.GetSpan(Desc, 8 * 16);
        var ring = _memory.GetSpan(Avail, 6 + 2 * 8);
        int refused = 0, accepted = 0;
        for (int i = 0; i < 100_000; i++)
        {
            random.NextBytes(table);
            random.NextBytes(ring);
            // Keep most addresses plausible so deep chains get exercised, not only the first bounds check.
            for (int d = 0; d < 8; d++)
            {
                if (random.Next(4) != 0) BinaryPrimitives.WriteUInt64LittleEndian(table[(d * 16)..], (ulong)random.Next(0, (int)Ram));
                if (random.Next(4) != 0) BinaryPrimitives.WriteUInt16LittleEndian(table[(d * 16 + 14)..], (ushort)random.Next(0, 9));
                if (random.Next(2) != 0) BinaryPrimitives.WriteUInt32LittleEndian(table[(d * 16 + 8)..], (uint)random.Next(0, 4096));
                if (random.Next(4) != 0) BinaryPrimitives.WriteUInt16LittleEndian(table[(d * 16 + 12)..], (ushort)random.Next(0, random.Next(2) == 0 ? 4 : 8));
            }
            for (int slot = 0; slot < 8; slot++)
                if (random.Next(4) != 0) BinaryPrimitives.WriteUInt16LittleEndian(ring[(4 + 2 * slot)..], (ushort)random.Next(0, 9));
            BinaryPrimitives.WriteUInt16LittleEndian(ring[2..], (ushort)random.Next(0, 3));
            var q = new SplitQueue(_memory, 8, Desc, Avail, Used, indirectAllowed: random.Next(2) == 0);
            try
            {
                while (q.TryPop() is { } chain)
                {
                    accepted++;
                    Assert.All(chain.Buffers, b => Assert.True(b.Length == 0 || _memory.IsValidRange(b.Address, b.Length)));
                }
            }
            catch (VirtqueueException)
            {
                refused++;
            }
        }
        Assert.True(accepted > 1000 && refused > 1000, $"accepted {accepted}, refused {refused}: the generator is not exercising both paths");
    }
}

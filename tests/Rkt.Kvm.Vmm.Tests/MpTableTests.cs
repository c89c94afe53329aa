using System.Buffers.Binary;
using System.Text;
using Rkt.Kvm.Vmm.Boot;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>The MP tables against the Intel MultiProcessor Specification 1.4, chapter 4.</summary>
public class MpTableTests
{
    private static int Sum(ReadOnlySpan<byte> bytes) { int s = 0; foreach (var b in bytes) s += b; return s & 0xFF; }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(8)]
    public void Floating_pointer_is_valid_and_points_at_the_table(int cpus)
    {
        var table = MpTable.Build(cpus, 0x9FC00);
        Assert.Equal("_MP_", Encoding.ASCII.GetString(table, 0, 4));
        Assert.Equal(0x9FC10u, BinaryPrimitives.ReadUInt32LittleEndian(table.AsSpan(4)));
        Assert.Equal(1, table[8]);
        Assert.Equal(4, table[9]);
        Assert.Equal(0, Sum(table.AsSpan(0, 16)));
        Assert.Equal(0, table[11]); // a configuration table follows, no default configuration
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(8)]
    public void Configuration_table_header_is_consistent(int cpus)
    {
        var table = MpTable.Build(cpus);
        var config = table.AsSpan(16);
        Assert.Equal("PCMP", Encoding.ASCII.GetString(config[..4]));
        int length = BinaryPrimitives.ReadUInt16LittleEndian(config[4..]);
        Assert.Equal(table.Length - 16, length);
        Assert.Equal(MpTable.SizeFor(cpus), table.Length);
        Assert.Equal(4, config[6]);
        Assert.Equal(0, Sum(config[..length]));
        Assert.Equal(cpus + 1 + 1 + 24 + 2, BinaryPrimitives.ReadUInt16LittleEndian(config[34..]));
        Assert.Equal(0xFEE00000u, BinaryPrimitives.ReadUInt32LittleEndian(config[36..]));
    }

    [Fact]
    public void Processor_entries_number_cpus_and_mark_only_the_first_as_boot_processor()
    {
        var config = MpTable.Build(3).AsSpan(16);
        for (int cpu = 0; cpu < 3; cpu++)
        {
            var e = config.Slice(44 + cpu * 20, 20);
            Assert.Equal(0, e[0]);
            Assert.Equal(cpu, e[1]);
            Assert.Equal(0x14, e[2]);
            Assert.Equal(cpu == 0 ? 3 : 1, e[3]);
        }
    }

    [Fact]
    public void Bus_ioapic_and_interrupt_entries_follow_the_processors()
    {
        const int cpus = 2;
        var config = MpTable.Build(cpus).AsSpan(16);
        int offset = 44 + cpus * 20;
        Assert.Equal(1, config[offset]);
        Assert.Equal("ISA   ", Encoding.ASCII.GetString(config.Slice(offset + 2, 6)));
        offset += 8;
        Assert.Equal(2, config[offset]);
        Assert.Equal(cpus, config[offset + 1]); // IOAPIC ID follows the CPUs' APIC IDs
        Assert.Equal(1, config[offset + 3]);
        Assert.Equal(0xFEC00000u, BinaryPrimitives.ReadUInt32LittleEndian(config[(offset + 4)..]));
        offset += 8;
        for (int irq = 0; irq < 24; irq++, offset += 8)
        {
            Assert.Equal(3, config[offset]);
            Assert.Equal(irq, config[offset + 5]);
            Assert.Equal(cpus, config[offset + 6]);
            Assert.Equal(irq, config[offset + 7]);
        }
        Assert.Equal([4, 3, 0, 0, 0, 0, 0, 0], config.Slice(offset, 8).ToArray()); // ExtINT -> BSP LINT0
        Assert.Equal([4, 1, 0, 0, 0, 0, 0xFF, 1], config.Slice(offset + 8, 8).ToArray()); // NMI -> all LINT1
    }

    [Theory]
    [InlineData(0)]
    [InlineData(255)]
    public void Impossible_cpu_counts_are_refused(int cpus) => Assert.Throws<BootException>(() => MpTable.Build(cpus));
}

using System.Buffers.Binary;
using System.Text;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>
/// The Intel MultiProcessor Specification 1.4 tables (floating pointer + configuration table).
/// Without ACPI this is how Linux learns how many CPUs exist, their APIC IDs, the IOAPIC and how
/// ISA interrupts are wired. Layout: floating pointer at the base, configuration table right after.
/// </summary>
public static class MpTable
{
    public const int FloatingPointerSize = 16;
    public const int HeaderSize = 44;
    public const int ProcessorEntrySize = 20;
    public const int SmallEntrySize = 8;
    /// <summary>IOAPIC pins; KVM's in-kernel IOAPIC has 24 and routes GSI n to pin n.</summary>
    public const int IoApicPins = 24;
    public const byte LocalApicVersion = 0x14;
    public const byte IoApicVersion = 0x11;
    public const int MaxCpus = 254;

    private const byte ProcessorEntry = 0, BusEntry = 1, IoApicEntry = 2, IoInterruptEntry = 3, LocalInterruptEntry = 4;
    private const byte InterruptTypeInt = 0, InterruptTypeNmi = 1, InterruptTypeExtInt = 3;
    private const byte CpuEnabled = 0x01, CpuBootProcessor = 0x02;
    /// <summary>A "stepping 0, model 0, family 6" signature with FPU and APIC features, as the spec's examples use.</summary>
    private const uint CpuSignature = 0x600, CpuFeatureFlags = 0x201;

    public static int SizeFor(int cpus) =>
        FloatingPointerSize + HeaderSize + cpus * ProcessorEntrySize + SmallEntrySize * (2 + IoApicPins + 2);

    /// <summary>Builds both structures for <paramref name="cpus"/> CPUs with APIC IDs 0..cpus-1, to live at <paramref name="baseAddress"/>.</summary>
    public static byte[] Build(int cpus, ulong baseAddress = MemoryLayout.EbdaStart)
    {
        if (cpus < 1 || cpus > MaxCpus) throw new BootException($"The MP table describes 1 to {MaxCpus} CPUs, not {cpus}.");
        var table = new byte[SizeFor(cpus)];
        var span = table.AsSpan();
        byte ioApicId = (byte)cpus;

        // Floating pointer structure.
        var fp = span[..FloatingPointerSize];
        Encoding.ASCII.GetBytes("_MP_", fp);
        BinaryPrimitives.WriteUInt32LittleEndian(fp[4..], (uint)(baseAddress + FloatingPointerSize));
        fp[8] = 1; // length in 16-byte paragraphs
        fp[9] = 4; // specification revision 1.4
        // Feature bytes stay 0: a configuration table is present, virtual-wire interrupt mode.
        fp[10] = Checksum(fp);

        // Configuration table: header, then entries.
        var config = span[FloatingPointerSize..];
        int offset = HeaderSize;
        int entries = 0;
        for (int cpu = 0; cpu < cpus; cpu++, entries++)
        {
            var e = config.Slice(offset, ProcessorEntrySize);
            e[0] = ProcessorEntry;
            e[1] = (byte)cpu; // local APIC ID
            e[2] = LocalApicVersion;
            e[3] = (byte)(CpuEnabled | (cpu == 0 ? CpuBootProcessor : 0));
            BinaryPrimitives.WriteUInt32LittleEndian(e[4..], CpuSignature);
            BinaryPrimitives.WriteUInt32LittleEndian(e[8..], CpuFeatureFlags);
            offset += ProcessorEntrySize;
        }

        var bus = config.Slice(offset, SmallEntrySize);
        bus[0] = BusEntry;
        bus[1] = 0; // bus ID
        Encoding.ASCII.GetBytes("ISA   ", bus[2..]);
        offset += SmallEntrySize; entries++;

        var ioApic = config.Slice(offset, SmallEntrySize);
        ioApic[0] = IoApicEntry;
        ioApic[1] = ioApicId;
        ioApic[2] = IoApicVersion;
        ioApic[3] = 1; // enabled
        BinaryPrimitives.WriteUInt32LittleEndian(ioApic[4..], (uint)MemoryLayout.IoApicAddress);
        offset += SmallEntrySize; entries++;

        // ISA IRQ n -> IOAPIC pin n, matching KVM's default GSI routing. Flags 0 = "conforms to the bus" (edge, active high).
        for (int irq = 0; irq < IoApicPins; irq++, entries++)
        {
            var e = config.Slice(offset, SmallEntrySize);
            e[0] = IoInterruptEntry;
            e[1] = InterruptTypeInt;
            e[4] = 0; // source bus
            e[5] = (byte)irq;
            e[6] = ioApicId;
            e[7] = (byte)irq;
            offset += SmallEntrySize;
        }

        // The 8259 PIC reaches the BSP through LINT0 (ExtINT); NMIs reach every CPU on LINT1.
        var extInt = config.Slice(offset, SmallEntrySize);
        extInt[0] = LocalInterruptEntry;
        extInt[1] = InterruptTypeExtInt;
        extInt[6] = 0; // BSP
        extInt[7] = 0; // LINT0
        offset += SmallEntrySize; entries++;
        var nmi = config.Slice(offset, SmallEntrySize);
        nmi[0] = LocalInterruptEntry;
        nmi[1] = InterruptTypeNmi;
        nmi[6] = 0xFF; // all local APICs
        nmi[7] = 1; // LINT1
        offset += SmallEntrySize; entries++;

        var header = config[..HeaderSize];
        Encoding.ASCII.GetBytes("PCMP", header);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], (ushort)offset);
        header[6] = 4;
        Encoding.ASCII.GetBytes("RKTKVM  ", header[8..]);
        Encoding.ASCII.GetBytes("MICROVM     ", header[16..]);
        BinaryPrimitives.WriteUInt16LittleEndian(header[34..], (ushort)entries);
        BinaryPrimitives.WriteUInt32LittleEndian(header[36..], (uint)MemoryLayout.LocalApicAddress);
        header[7] = Checksum(config[..offset]);
        return table;
    }

    /// <summary>The byte that makes the sum of <paramref name="bytes"/> zero modulo 256 (its own slot must hold 0).</summary>
    internal static byte Checksum(ReadOnlySpan<byte> bytes)
    {
        byte sum = 0;
        foreach (var b in bytes) sum += b;
        return (byte)(0 - sum);
    }
}

using Rkt.Kvm.Vmm.Kvm;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>
/// The boot GDT (null, 64-bit code, data, TSS) written to guest memory, and the matching
/// segment registers: the kernel's 64-bit entry expects flat segments with these selectors.
/// </summary>
public static class Gdt
{
    public const ushort CodeSelector = 0x08, DataSelector = 0x10, TssSelector = 0x18;

    // (flags, base, limit) in the packed descriptor format: flags hold type/S/DPL/P in the low byte, AVL/L/D/G in bits 12-15.
    private static readonly ulong[] Entries =
    [
        0,
        Descriptor(0xA09B, 0, 0xFFFFF), // code: present, exec/read, accessed, L=1, G=1
        Descriptor(0xC093, 0, 0xFFFFF), // data: present, read/write, accessed, D/B=1, G=1
        Descriptor(0x808B, 0, 0xFFFFF), // TSS: present, busy 64-bit TSS, G=1
    ];

    internal static ulong Descriptor(ushort flags, uint baseAddress, uint limit) =>
        ((ulong)(baseAddress & 0xFF000000) << 32) | ((ulong)(flags & 0xF0FF) << 40) | ((ulong)(limit & 0xF0000) << 32)
        | ((ulong)(baseAddress & 0x00FFFFFF) << 16) | (limit & 0xFFFF);

    public static void Write(GuestMemory memory)
    {
        for (int i = 0; i < Entries.Length; i++) memory.WriteU64(MemoryLayout.GdtStart + (ulong)i * 8, Entries[i]);
        memory.WriteU64(MemoryLayout.IdtStart, 0);
    }

    public static ushort GdtLimit => (ushort)(Entries.Length * 8 - 1);

    internal static KvmSegment Segment(int index)
    {
        ulong d = Entries[index];
        uint limit = (uint)((d & 0xFFFF) | ((d >> 32) & 0xF0000));
        bool granular = ((d >> 55) & 1) == 1;
        return new KvmSegment
        {
            Base = ((d >> 16) & 0xFFFFFF) | ((d >> 32) & 0xFF000000),
            Limit = granular ? (limit << 12) | 0xFFF : limit,
            Selector = (ushort)(index * 8),
            Type = (byte)((d >> 40) & 0xF),
            S = (byte)((d >> 44) & 1),
            Dpl = (byte)((d >> 45) & 3),
            Present = (byte)((d >> 47) & 1),
            Avl = (byte)((d >> 52) & 1),
            L = (byte)((d >> 53) & 1),
            Db = (byte)((d >> 54) & 1),
            G = (byte)(granular ? 1 : 0),
        };
    }

    public static KvmSegment Code => Segment(1);
    public static KvmSegment Data => Segment(2);
    public static KvmSegment Tss => Segment(3);
}

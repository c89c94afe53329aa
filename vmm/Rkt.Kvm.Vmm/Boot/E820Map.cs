using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>One BIOS e820 memory-map entry as the kernel reads it from the zero page (20 bytes).</summary>
public readonly record struct E820Entry(ulong Address, ulong Size, E820Type Type)
{
    public const int EncodedSize = 20;
}

public enum E820Type : uint
{
    Ram = 1,
    Reserved = 2,
}

/// <summary>Builds the e820 map: usable low RAM up to the EBDA, then RAM from 1 MiB (split around the MMIO hole).</summary>
public static class E820Map
{
    /// <summary>The zero page has room for 128 entries.</summary>
    public const int MaxEntries = 128;

    public static IReadOnlyList<E820Entry> For(GuestMemory memory) => For(memory.Regions.Select(r => (r.GuestAddress, r.Size)));

    public static IReadOnlyList<E820Entry> For(IEnumerable<(ulong GuestAddress, ulong Size)> ramRanges)
    {
        var entries = new List<E820Entry>();
        foreach (var (start, size) in ramRanges)
        {
            ulong end = start + size;
            if (start < MemoryLayout.EbdaStart)
            {
                // [0, EBDA) is conventional memory; [EBDA, 1 MiB) stays out of the map (MP table, legacy holes).
                entries.Add(new E820Entry(start, Math.Min(end, MemoryLayout.EbdaStart) - start, E820Type.Ram));
                if (end > MemoryLayout.HighMemoryStart)
                    entries.Add(new E820Entry(MemoryLayout.HighMemoryStart, end - MemoryLayout.HighMemoryStart, E820Type.Ram));
            }
            else
            {
                entries.Add(new E820Entry(start, size, E820Type.Ram));
            }
        }
        return entries;
    }
}

using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>
/// The initial identity map for the 64-bit entry: PML4 -> one PDPT -> one page directory of
/// 512 x 2 MiB pages = the first 1 GiB. The kernel replaces these within its first instructions.
/// </summary>
public static class PageTables
{
    private const ulong Present = 1, Writable = 2, HugePage = 0x80;
    public const ulong IdentityMappedBytes = 1UL << 30;

    public static void Write(GuestMemory memory)
    {
        memory.Clear(MemoryLayout.Pml4Start, 0x1000);
        memory.Clear(MemoryLayout.PdpteStart, 0x1000);
        memory.WriteU64(MemoryLayout.Pml4Start, MemoryLayout.PdpteStart | Present | Writable);
        memory.WriteU64(MemoryLayout.PdpteStart, MemoryLayout.PdeStart | Present | Writable);
        for (ulong i = 0; i < 512; i++)
            memory.WriteU64(MemoryLayout.PdeStart + i * 8, (i << 21) | Present | Writable | HugePage);
    }
}

namespace Rkt.Kvm.Vmm.Memory;

/// <summary>
/// Where things live in guest-physical memory. The low addresses follow the x86 boot facts
/// Firecracker has proven (zero page 0x7000, page tables 0x9000-0xB000, command line 0x20000,
/// GDT 0x500, MP table at the EBDA); devices sit in a hole below 4 GiB, and RAM that does not
/// fit below the hole continues at 4 GiB.
/// </summary>
public static class MemoryLayout
{
    public const ulong GdtStart = 0x500;
    public const ulong IdtStart = 0x520;
    public const ulong SetupDataStart = 0x6000;
    public const ulong ZeroPageStart = 0x7000;
    public const ulong BootStackPointer = 0x8FF0;
    public const ulong Pml4Start = 0x9000;
    public const ulong PdpteStart = 0xA000;
    public const ulong PdeStart = 0xB000;
    public const ulong CmdlineStart = 0x20000;
    /// <summary>Start of the Extended BIOS Data Area; low RAM ends here and the MP table lives here.</summary>
    public const ulong EbdaStart = 0x9FC00;
    public const ulong HighMemoryStart = 0x10_0000;

    /// <summary>Device window: [3 GiB, 4 GiB) is never RAM.</summary>
    public const ulong MmioHoleStart = 0xC000_0000;
    public const ulong MmioHoleEnd = 0x1_0000_0000;
    /// <summary>The boot-timer pseudo-device: the guest writes 123 here to mark "init reached".</summary>
    public const ulong BootTimerAddress = MmioHoleStart;
    /// <summary>virtio-mmio devices from here, one 4 KiB window each.</summary>
    public const ulong VirtioMmioStart = MmioHoleStart + 0x1000;
    public const ulong IoApicAddress = 0xFEC0_0000;
    public const ulong LocalApicAddress = 0xFEE0_0000;
    /// <summary>KVM's three TSS pages for real-mode emulation, out of the way of everything else.</summary>
    public const ulong KvmTssAddress = 0xFFFB_D000;

    public const ulong MinimumMemory = 16UL << 20;
    public const ulong MaximumMemory = 64UL << 30;

    /// <summary>The RAM ranges for a machine of <paramref name="memorySize"/> bytes.</summary>
    public static IReadOnlyList<(ulong GuestAddress, ulong Size)> RamRanges(ulong memorySize)
    {
        if (memorySize <= MmioHoleStart) return [(0, memorySize)];
        return [(0, MmioHoleStart), (MmioHoleEnd, memorySize - MmioHoleStart)];
    }
}

using Rkt.Kvm.Vmm.Kvm;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>
/// Per-vCPU architectural set-up: CPUID with the vCPU's APIC ID and topology, boot MSRs, FPU,
/// local APIC wiring, and for the boot CPU the 64-bit register state of the Linux entry.
/// Application processors stay in wait-for-SIPI; Linux starts them through the LAPIC.
/// </summary>
public static class CpuSetup
{
    private const uint LeafFeatures = 0x1, LeafTopology = 0xB, LeafTopologyV2 = 0x1F;
    private const uint HypervisorBit = 1u << 31;
    private const uint LeafKvmFeatures = 0x4000_0001;
    /// <summary>
    /// KVM paravirt features we let the guest use: kvm-clock (old and new MSRs, stable bit) and
    /// "no I/O delay". The others (PV IPIs, PV EOI, async page faults, steal time, PV TLB flush,
    /// ...) are not offered: on a PVM host a second vCPU never came online with them enabled.
    /// </summary>
    public const uint AllowedKvmFeatures = (1u << 0) | (1u << 1) | (1u << 3) | (1u << 24);

    /// <summary>CPUID for one vCPU: its APIC ID, the hypervisor bit, and a flat topology (one package, one core per vCPU).</summary>
    public static KvmCpuidEntry2[] CpuidFor(ReadOnlySpan<KvmCpuidEntry2> supported, int apicId, int cpuCount)
    {
        var entries = supported.ToArray();
        int coreShift = 0;
        while ((1 << coreShift) < cpuCount) coreShift++;
        for (int i = 0; i < entries.Length; i++)
        {
            ref var e = ref entries[i];
            switch (e.Function)
            {
                case LeafFeatures:
                    e.Ebx = (e.Ebx & 0x0000FFFF) | ((uint)apicId << 24) | ((uint)Math.Min(cpuCount, 255) << 16);
                    e.Ecx |= HypervisorBit;
                    break;
                case LeafKvmFeatures:
                    e.Eax &= AllowedKvmFeatures;
                    break;
                case LeafTopology or LeafTopologyV2:
                    // Subleaf 0: SMT level (1 thread per core); subleaf 1: core level (cpuCount cores); then end of list.
                    e.Edx = (uint)apicId;
                    (e.Eax, e.Ebx, e.Ecx) = e.Index switch
                    {
                        0 => (0u, 1u, 0u | (1u << 8)),
                        1 => ((uint)coreShift, (uint)cpuCount, 1u | (2u << 8)),
                        _ => (0u, 0u, e.Index),
                    };
                    break;
            }
        }
        return entries;
    }

    // MSR indices.
    private const uint MsrSysenterCs = 0x174, MsrSysenterEsp = 0x175, MsrSysenterEip = 0x176;
    private const uint MsrStar = 0xC0000081, MsrLstar = 0xC0000082, MsrCstar = 0xC0000083, MsrSyscallMask = 0xC0000084;
    private const uint MsrKernelGsBase = 0xC0000102, MsrTsc = 0x10, MsrMiscEnable = 0x1A0, MsrMtrrDefType = 0x2FF;

    /// <summary>The MSRs a freshly reset CPU would have, plus fast strings and write-back MTRR default.</summary>
    public static KvmMsrEntry[] BootMsrs() =>
    [
        new() { Index = MsrSysenterCs }, new() { Index = MsrSysenterEsp }, new() { Index = MsrSysenterEip },
        new() { Index = MsrStar }, new() { Index = MsrCstar }, new() { Index = MsrKernelGsBase },
        new() { Index = MsrSyscallMask }, new() { Index = MsrLstar }, new() { Index = MsrTsc },
        new() { Index = MsrMiscEnable, Data = 1 }, // fast string operations
        new() { Index = MsrMtrrDefType, Data = (1 << 11) | 6 }, // MTRRs enabled, default type write-back
    ];

    public static KvmFpu BootFpu() => new() { Fcw = 0x37F, Mxcsr = 0x1F80 };

    // Local APIC LVT registers inside kvm_lapic_state.regs.
    private const int ApicLvtLint0 = 0x350, ApicLvtLint1 = 0x360;
    private const uint DeliveryModeExtInt = 7, DeliveryModeNmi = 4;

    /// <summary>LINT0 receives the 8259's ExtINT, LINT1 NMIs: what the MP table promises the guest.</summary>
    public static unsafe void WireLocalInterrupts(ref KvmLapicState lapic)
    {
        fixed (byte* regs = lapic.Regs)
        {
            SetDeliveryMode((uint*)(regs + ApicLvtLint0), DeliveryModeExtInt);
            SetDeliveryMode((uint*)(regs + ApicLvtLint1), DeliveryModeNmi);
        }
    }

    private static unsafe void SetDeliveryMode(uint* lvt, uint mode) => *lvt = (*lvt & ~0x700u) | (mode << 8);

    // Control register bits.
    private const ulong Cr0ProtectionEnable = 1, Cr0Paging = 1UL << 31, Cr4Pae = 1 << 5;
    private const ulong EferLongModeEnable = 1 << 8, EferLongModeActive = 1 << 10;

    /// <summary>Long mode with the boot GDT and identity page tables, as the 64-bit boot protocol requires.</summary>
    public static KvmSregs LongModeSregs(KvmSregs sregs)
    {
        sregs.Gdt = new KvmDtable { Base = MemoryLayout.GdtStart, Limit = Gdt.GdtLimit };
        sregs.Idt = new KvmDtable { Base = MemoryLayout.IdtStart, Limit = 7 };
        sregs.Cs = Gdt.Code;
        sregs.Ds = sregs.Es = sregs.Fs = sregs.Gs = sregs.Ss = Gdt.Data;
        sregs.Tr = Gdt.Tss;
        sregs.Cr0 |= Cr0ProtectionEnable | Cr0Paging;
        sregs.Cr3 = MemoryLayout.Pml4Start;
        sregs.Cr4 |= Cr4Pae;
        sregs.Efer |= EferLongModeEnable | EferLongModeActive;
        return sregs;
    }

    /// <summary>RIP at the kernel entry, RSI at the zero page, interrupts off, a small boot stack.</summary>
    public static KvmRegs BootRegs(ulong entry) => new()
    {
        Rflags = 0x2,
        Rip = entry,
        Rsp = MemoryLayout.BootStackPointer,
        Rbp = MemoryLayout.BootStackPointer,
        Rsi = MemoryLayout.ZeroPageStart,
    };
}

using System.Runtime.CompilerServices;
using Rkt.Kvm.Vmm.Boot;
using Rkt.Kvm.Vmm.Kvm;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>Our struct mirrors must match linux/kvm.h exactly; the ioctl numbers encode the sizes.</summary>
public class KvmAbiTests
{
    private static int SizeInIoctl(uint request) => (int)((request >> 16) & 0x3FFF);

    [Fact]
    public void Struct_sizes_match_the_kernel_abi()
    {
        Assert.Equal(SizeInIoctl(KvmIoctl.GetRegs), Unsafe.SizeOf<KvmRegs>());
        Assert.Equal(SizeInIoctl(KvmIoctl.GetSregs), Unsafe.SizeOf<KvmSregs>());
        Assert.Equal(SizeInIoctl(KvmIoctl.SetFpu), Unsafe.SizeOf<KvmFpu>());
        Assert.Equal(SizeInIoctl(KvmIoctl.SetUserMemoryRegion), Unsafe.SizeOf<KvmUserspaceMemoryRegion>());
        Assert.Equal(SizeInIoctl(KvmIoctl.IrqLine), Unsafe.SizeOf<KvmIrqLevel>());
        Assert.Equal(SizeInIoctl(KvmIoctl.GetLapic), Unsafe.SizeOf<KvmLapicState>());
        Assert.Equal(SizeInIoctl(KvmIoctl.GetVcpuEvents), Unsafe.SizeOf<KvmVcpuEvents>());
        Assert.Equal(40, Unsafe.SizeOf<KvmCpuidEntry2>());
        Assert.Equal(16, Unsafe.SizeOf<KvmMsrEntry>());
    }

    [Fact]
    public void Ioctl_numbers_match_linux_kvm_h()
    {
        Assert.Equal(0xAE80u, KvmIoctl.Run);
        Assert.Equal(0x4020AE46u, KvmIoctl.SetUserMemoryRegion);
        Assert.Equal(0x8090AE81u, KvmIoctl.GetRegs);
        Assert.Equal(0x4138AE84u, KvmIoctl.SetSregs);
        Assert.Equal(0xC008AE05u, KvmIoctl.GetSupportedCpuid);
        Assert.Equal(0x4040AE77u, KvmIoctl.CreatePit2);
        Assert.Equal("KVM_RUN", KvmIoctl.NameOf(KvmIoctl.Run));
    }

    [Fact]
    public void Boot_gdt_descriptors_decode_to_flat_long_mode_segments()
    {
        Assert.Equal(0x00AF9B000000FFFFul, Gdt.Descriptor(0xA09B, 0, 0xFFFFF));
        Assert.Equal(0x00CF93000000FFFFul, Gdt.Descriptor(0xC093, 0, 0xFFFFF));
        var cs = Gdt.Code;
        Assert.Equal((ushort)0x8, cs.Selector);
        Assert.Equal(1, cs.L);
        Assert.Equal(0, cs.Db);
        Assert.Equal(0xFFFFFFFFu, cs.Limit);
        Assert.Equal(0xB, cs.Type);
        var ds = Gdt.Data;
        Assert.Equal((ushort)0x10, ds.Selector);
        Assert.Equal(1, ds.Db);
        Assert.Equal(3, ds.Type);
        Assert.Equal((ushort)0x18, Gdt.Tss.Selector);
    }

    [Fact]
    public void Long_mode_sregs_enable_paging_pae_and_lme()
    {
        var s = CpuSetup.LongModeSregs(new KvmSregs { Cr0 = 0x60000010 });
        Assert.Equal(0x80000001ul, s.Cr0 & 0x80000001);
        Assert.Equal(0x9000ul, s.Cr3);
        Assert.Equal(0x20ul, s.Cr4 & 0x20);
        Assert.Equal(0x500ul, s.Efer & 0x500);
        var r = CpuSetup.BootRegs(0x1000000);
        Assert.Equal(0x7000ul, r.Rsi);
        Assert.Equal(0x1000000ul, r.Rip);
        Assert.Equal(2ul, r.Rflags);
    }

    [Fact]
    public void Cpuid_carries_each_vcpus_apic_id_and_the_hypervisor_bit()
    {
        KvmCpuidEntry2[] supported = [new() { Function = 1, Ebx = 0xFF00_0800, Ecx = 0 }, new() { Function = 0xB, Index = 1 }, new() { Function = 0xB, Index = 0 }];
        var cpuid = CpuSetup.CpuidFor(supported, apicId: 3, cpuCount: 4);
        Assert.Equal(3u, cpuid[0].Ebx >> 24);
        Assert.Equal(4u, (cpuid[0].Ebx >> 16) & 0xFF);
        Assert.Equal(0x0800u, cpuid[0].Ebx & 0xFFFF);
        Assert.NotEqual(0u, cpuid[0].Ecx & (1u << 31));
        Assert.Equal(3u, cpuid[1].Edx);
        Assert.Equal((2u, 4u), (cpuid[1].Eax, cpuid[1].Ebx));
        Assert.Equal(1u, cpuid[2].Ebx);
    }
}

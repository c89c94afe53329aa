using Rkt.Kvm.Vmm.Boot;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Tests;

public class E820MapTests
{
    [Fact]
    public void Small_vm_has_low_ram_up_to_the_ebda_and_ram_from_1_MiB()
    {
        var map = E820Map.For(MemoryLayout.RamRanges(128UL << 20));
        Assert.Equal([new E820Entry(0, 0x9FC00, E820Type.Ram), new E820Entry(0x100000, (128UL << 20) - 0x100000, E820Type.Ram)], map);
    }

    [Fact]
    public void Large_vm_is_split_around_the_mmio_hole()
    {
        var ranges = MemoryLayout.RamRanges(4UL << 30);
        Assert.Equal([(0UL, 0xC000_0000UL), (0x1_0000_0000UL, 1UL << 30)], ranges);
        var map = E820Map.For(ranges);
        Assert.Equal(3, map.Count);
        Assert.Equal(new E820Entry(0x1_0000_0000, 1UL << 30, E820Type.Ram), map[2]);
        Assert.Equal(0xC000_0000UL, map[1].Address + map[1].Size);
    }

    [Fact]
    public void Ram_never_covers_the_mp_table_or_the_device_window()
    {
        foreach (ulong mib in new ulong[] { 16, 128, 3072, 8192 })
        {
            foreach (var e in E820Map.For(MemoryLayout.RamRanges(mib << 20)))
            {
                Assert.False(e.Address < MemoryLayout.EbdaStart + 0x400 && e.Address + e.Size > MemoryLayout.EbdaStart);
                Assert.False(e.Address < MemoryLayout.MmioHoleEnd && e.Address + e.Size > MemoryLayout.MmioHoleStart);
            }
        }
    }
}

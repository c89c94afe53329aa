using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Tests;

public sealed class GuestMemoryTests : IDisposable
{
    private readonly GuestMemory _memory = GuestMemory.Allocate([(0, 1 << 20), (0x1_0000_0000, 1 << 20)]);

    public void Dispose() => _memory.Dispose();

    [Fact]
    public void Reads_and_writes_stay_inside_regions()
    {
        _memory.WriteU64(0xFFFF8, 0x1122334455667788);
        Assert.Equal(0x1122334455667788ul, _memory.ReadU64(0xFFFF8));
        _memory.WriteU32(0x1_0000_0000, 7);
        Assert.Equal(2ul << 20, _memory.Size);
    }

    [Theory]
    [InlineData(0xFFFFCul, 8)]        // straddles the end of region 0
    [InlineData(0x100000ul, 1)]       // in the gap
    [InlineData(0x1_0010_0000ul, 1)]  // past region 1
    [InlineData(ulong.MaxValue, 2)]   // wraps
    public void Accesses_outside_ram_throw(ulong address, int length)
    {
        Assert.False(_memory.IsValidRange(address, (ulong)length));
        Assert.Throws<GuestMemoryException>(() => _memory.GetSpan(address, length));
    }

    [Fact]
    public void Negative_length_throws() => Assert.Throws<GuestMemoryException>(() => _memory.GetSpan(0, -1));
}

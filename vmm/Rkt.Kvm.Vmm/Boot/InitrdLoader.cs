using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>
/// Places the initrd as high in low RAM as the kernel allows (page aligned), which keeps it out
/// of the way of the kernel's early allocations, and checks it cannot overlap the kernel.
/// </summary>
public static class InitrdLoader
{
    private const ulong PageSize = 0x1000;

    /// <summary>Where an initrd of <paramref name="size"/> bytes goes, or a clear error when RAM is too small.</summary>
    public static ulong Place(ulong size, LoadedKernel kernel, GuestMemory memory)
    {
        var low = memory.Regions[0];
        ulong top = Math.Min(low.End, kernel.InitrdAddressMax + 1);
        if (size > top || ((top - size) & ~(PageSize - 1)) < AlignUp(kernel.End))
            throw new BootException(
                $"Guest memory is too small for the kernel ({kernel.End >> 20} MiB) and the initrd ({size >> 20} MiB): " +
                $"{memory.Size >> 20} MiB of RAM.");
        return (top - size) & ~(PageSize - 1);
    }

    public static (ulong Address, ulong Size) Load(string path, LoadedKernel kernel, GuestMemory memory)
    {
        using (var file = BootFile.Open(path, "initrd"))
        {
            ulong size = (ulong)RandomAccess.GetLength(file);
            if (size == 0) throw new BootException($"Initrd {path} is empty.");
            ulong address = Place(size, kernel, memory);
            memory.ReadFromFile(file, 0, address, size);
            return (address, size);
        }
    }

    private static ulong AlignUp(ulong value) => (value + PageSize - 1) & ~(PageSize - 1);
}

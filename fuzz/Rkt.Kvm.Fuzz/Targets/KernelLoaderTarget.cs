using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Boot;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// The kernel loader as a hostile kernel file drives it: the input is the file (ELF vmlinux or
/// bzImage, told apart by content), loaded into a 64 MiB guest; then what boot does next with the
/// result: the initrd placed, the command line checked against the kernel's limit, the zero page
/// built from its setup header. Only <see cref="BootException"/> may escape, and a kernel that
/// loads must fit in RAM: its entry inside what it occupies, its end (where it decompresses to,
/// for a bzImage) inside RAM, and the initrd above that end.
/// </summary>
public sealed class KernelLoaderTarget : IFuzzTarget
{
    private readonly Lazy<(GuestMemory Memory, string Path)> _state = new(() =>
        (GuestMemory.Allocate(MemoryLayout.RamRanges(64UL << 20)), Path.Join(FuzzTargets.ScratchDirectory("kernel-loader"), "kernel")));

    public string Name => "kernel-loader";
    public string Covers => "KernelLoader (format detection), ElfLoader, BzImageLoader, then InitrdLoader.Place, KernelCommandLine.ToBytes, ZeroPage.Build";

    public void Run(ReadOnlySpan<byte> input)
    {
        var (memory, path) = _state.Value;
        File.WriteAllBytes(path, input.ToArray());
        LoadedKernel kernel;
        try
        {
            kernel = KernelLoader.Load(path, memory);
        }
        catch (BootException e)
        {
            FuzzLog.Note($"kernel-loader: refused: {e.Message}");
            return;
        }
        FuzzLog.Note($"kernel-loader: {kernel.Format} entry 0x{kernel.Entry:X} end 0x{kernel.End:X}");

        ulong ramEnd = memory.Regions[^1].End;
        if (kernel.End <= MemoryLayout.HighMemoryStart || kernel.End > ramEnd)
            throw new FuzzFindingException($"a {kernel.Format} kernel loaded with its end at 0x{kernel.End:X}, outside RAM (0x{MemoryLayout.HighMemoryStart:X}-0x{ramEnd:X})");
        if (kernel.Entry < MemoryLayout.HighMemoryStart || kernel.Entry >= kernel.End)
            throw new FuzzFindingException($"a {kernel.Format} kernel's entry 0x{kernel.Entry:X} is outside 0x{MemoryLayout.HighMemoryStart:X}-0x{kernel.End:X}");
        if (kernel.Format == KernelFormat.BzImage)
        {
            // The kernel decompresses itself to pref_address, init_size bytes: all of it must be in RAM.
            ulong pref = BinaryPrimitives.ReadUInt64LittleEndian(input[ZeroPage.PrefAddress..]);
            uint init = BinaryPrimitives.ReadUInt32LittleEndian(input[ZeroPage.InitSize..]);
            if ((UInt128)kernel.End < (UInt128)pref + init)
                throw new FuzzFindingException($"a bzImage that decompresses to 0x{pref:X}+0x{init:X} loaded with its end at 0x{kernel.End:X}");
        }

        try
        {
            const ulong initrdSize = 4096;
            ulong initrd = InitrdLoader.Place(initrdSize, kernel, memory);
            if (initrd < kernel.End || !memory.IsValidRange(initrd, initrdSize) || initrd + initrdSize - 1 > kernel.InitrdAddressMax)
                throw new FuzzFindingException($"the initrd placed at 0x{initrd:X} for a kernel ending at 0x{kernel.End:X} (initrd max 0x{kernel.InitrdAddressMax:X})");
        }
        catch (BootException) { }

        byte[] cmdline;
        try
        {
            cmdline = new KernelCommandLine().Add("console=ttyS0 reboot=k panic=1").ToBytes(kernel.CmdlineMax);
        }
        catch (BootException)
        {
            return;
        }
        var page = ZeroPage.Build(new ZeroPageParameters
        {
            SetupHeader = kernel.SetupHeader,
            CmdlineAddress = MemoryLayout.CmdlineStart,
            CmdlineSize = (uint)cmdline.Length - 1,
            E820 = [],
        });
        if (page.Length != ZeroPage.Size) throw new FuzzFindingException($"a zero page of {page.Length} bytes");
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        yield return ("elf-one-segment", Elf(segments: 1));
        yield return ("elf-two-segments", Elf(segments: 2));
        yield return ("bzimage", BzImage());
    }

    /// <summary>A minimal x86-64 ELF executable: PT_LOAD segments right after the headers, at 16 MiB.</summary>
    private static byte[] Elf(int segments)
    {
        int headers = 64 + 56 * segments;
        var file = new byte[headers + 16 * segments];
        file[0] = 0x7F; "ELF"u8.CopyTo(file.AsSpan(1));
        file[4] = 2; file[5] = 1; file[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(16), 2);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(18), 62);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(24), 0x1000000);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(32), 64);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(54), 56);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(56), (ushort)segments);
        for (int i = 0; i < segments; i++)
        {
            var ph = file.AsSpan(64 + 56 * i);
            BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], (ulong)(headers + 16 * i));
            BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], 0x1000000 + 0x200000UL * (ulong)i);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], 16);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], 0x1000);
        }
        for (int i = headers; i < file.Length; i++) file[i] = 0x90;
        return file;
    }

    /// <summary>A bzImage header (boot protocol 2.15, 64-bit entry) with one setup sector and a payload just past the entry.</summary>
    private static byte[] BzImage()
    {
        var file = new byte[2 * 512 + 0x240];
        file[ZeroPage.SetupSects] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(ZeroPage.BootFlag), ZeroPage.BootFlagMagic);
        file[0x201] = 0x6A; // the setup header's length, as the jump at 0x200 gives it
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(ZeroPage.Header), ZeroPage.HeaderMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(ZeroPage.Version), 0x020F);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(ZeroPage.InitrdAddrMax), 0x7FFFFFFF);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(ZeroPage.KernelAlignment), 0x200000);
        file[ZeroPage.RelocatableKernel] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(ZeroPage.XLoadFlags), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(ZeroPage.CmdlineSizeField), 2047);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(ZeroPage.PrefAddress), 0x1000000);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(ZeroPage.InitSize), 0x100000);
        return file;
    }
}

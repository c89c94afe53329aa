using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>
/// Loads a bzImage for the 64-bit boot protocol: the protected-mode part goes to 1 MiB and we
/// enter its startup_64 at load address + 0x200; it decompresses itself to pref_address.
/// Works, but the decompressor is slow on an interpreting host (PLATFORM.md): vmlinux is the default.
/// </summary>
public static class BzImageLoader
{
    private const ushort MinimumProtocol = 0x020C; // xloadflags and the 64-bit entry
    private const ushort XlfKernel64 = 0x1;
    private const ulong LoadAddress = MemoryLayout.HighMemoryStart;
    private const ulong Entry64Offset = 0x200;

    public static bool LooksLikeBzImage(ReadOnlySpan<byte> head) =>
        head.Length >= 0x210
        && BinaryPrimitives.ReadUInt16LittleEndian(head[ZeroPage.BootFlag..]) == ZeroPage.BootFlagMagic
        && BinaryPrimitives.ReadUInt32LittleEndian(head[ZeroPage.Header..]) == ZeroPage.HeaderMagic;

    public static LoadedKernel Load(SafeFileHandle file, long fileLength, ReadOnlySpan<byte> head, string path, GuestMemory memory)
    {
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(head[ZeroPage.Version..]);
        if (version < MinimumProtocol)
            throw new BootException($"Kernel {path} uses boot protocol {version >> 8}.{version & 0xFF}; 2.12 or newer is required.");
        if (head.Length < ZeroPage.InitSize + 4) throw new BootException($"Kernel {path} is a truncated bzImage.");
        if ((BinaryPrimitives.ReadUInt16LittleEndian(head[ZeroPage.XLoadFlags..]) & XlfKernel64) == 0)
            throw new BootException($"Kernel {path} has no 64-bit entry point.");

        int setupSectors = head[ZeroPage.SetupSects] == 0 ? 4 : head[ZeroPage.SetupSects];
        long setupBytes = (setupSectors + 1) * 512L;
        if (setupBytes + (long)Entry64Offset >= fileLength) throw new BootException($"Kernel {path} is a truncated bzImage (its protected-mode code ends before the 64-bit entry point).");
        ulong payloadSize = (ulong)(fileLength - setupBytes);

        // The setup header runs from 0x1F1 to 0x202 + the byte at 0x201 (its own length field).
        int headerEnd = Math.Min(0x202 + head[0x201], head.Length);
        byte[] setupHeader = head[ZeroPage.SetupHeaderStart..headerEnd].ToArray();

        ulong prefAddress = BinaryPrimitives.ReadUInt64LittleEndian(head[ZeroPage.PrefAddress..]);
        uint initSize = BinaryPrimitives.ReadUInt32LittleEndian(head[ZeroPage.InitSize..]);
        uint cmdlineMax = BinaryPrimitives.ReadUInt32LittleEndian(head[ZeroPage.CmdlineSizeField..]);
        uint initrdMax = BinaryPrimitives.ReadUInt32LittleEndian(head[ZeroPage.InitrdAddrMax..]);
        ulong end = Math.Max(LoadAddress + payloadSize, prefAddress + initSize);
        if (!memory.IsValidRange(LoadAddress, end - LoadAddress))
            throw new BootException($"Kernel {path} needs guest RAM up to 0x{end:X}; the VM has {memory.Size >> 20} MiB.");

        memory.ReadFromFile(file, setupBytes, LoadAddress, payloadSize);
        return new LoadedKernel
        {
            Format = KernelFormat.BzImage,
            Entry = LoadAddress + Entry64Offset,
            End = end,
            SetupHeader = setupHeader,
            CmdlineMax = cmdlineMax == 0 ? 255 : cmdlineMax,
            InitrdAddressMax = initrdMax == 0 ? 0x37FF_FFFF : initrdMax,
        };
    }
}

using System.Buffers.Binary;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>What the loader has decided and the zero page must tell the kernel.</summary>
public sealed record ZeroPageParameters
{
    /// <summary>The bzImage's own setup header bytes (offset 0x1F1 onward), or null for an ELF vmlinux.</summary>
    public byte[]? SetupHeader { get; init; }
    public required ulong CmdlineAddress { get; init; }
    /// <summary>Command line length without the terminating NUL.</summary>
    public required uint CmdlineSize { get; init; }
    public ulong InitrdAddress { get; init; }
    public ulong InitrdSize { get; init; }
    public required IReadOnlyList<E820Entry> E820 { get; init; }
    /// <summary>Guest address of the first setup_data node (0 = none).</summary>
    public ulong SetupData { get; init; }
}

/// <summary>
/// The Linux x86 "zero page" (struct boot_params), laid out per Documentation/arch/x86/boot.rst
/// and zero-page.rst. Only the fields a 64-bit direct boot needs are written; the rest stay zero.
/// </summary>
public static class ZeroPage
{
    public const int Size = 4096;

    // struct boot_params offsets.
    public const int ExtRamdiskImage = 0x0C0;
    public const int ExtRamdiskSize = 0x0C4;
    public const int ExtCmdLinePtr = 0x0C8;
    public const int E820Entries = 0x1E8;
    public const int SetupHeaderStart = 0x1F1;
    public const int E820Table = 0x2D0;

    // struct setup_header offsets (absolute, within boot_params).
    public const int SetupSects = 0x1F1;
    public const int BootFlag = 0x1FE;
    public const int Jump = 0x200;
    public const int Header = 0x202;
    public const int Version = 0x206;
    public const int TypeOfLoader = 0x210;
    public const int LoadFlags = 0x211;
    public const int Code32Start = 0x214;
    public const int RamdiskImage = 0x218;
    public const int RamdiskSize = 0x21C;
    public const int HeapEndPtr = 0x224;
    public const int CmdLinePtr = 0x228;
    public const int InitrdAddrMax = 0x22C;
    public const int KernelAlignment = 0x230;
    public const int RelocatableKernel = 0x234;
    public const int XLoadFlags = 0x236;
    public const int CmdlineSizeField = 0x238;
    public const int SetupDataField = 0x250;
    public const int PrefAddress = 0x258;
    public const int InitSize = 0x260;

    public const ushort BootFlagMagic = 0xAA55;
    public const uint HeaderMagic = 0x53726448; // "HdrS"
    /// <summary>Boot protocol 2.15: the newest whose fields we fill.</summary>
    public const ushort ProtocolVersion = 0x020F;
    /// <summary>"Undefined" boot loader ID, as the protocol asks of loaders without an assigned one.</summary>
    public const byte UndefinedLoader = 0xFF;
    public const byte LoadedHigh = 0x01, KeepSegments = 0x40, CanUseHeap = 0x80;
    public const uint DefaultKernelAlignment = 0x100_0000;

    /// <summary>Builds the 4 KiB zero page.</summary>
    public static byte[] Build(ZeroPageParameters p)
    {
        if (p.E820.Count > E820Map.MaxEntries)
            throw new BootException($"The memory map has {p.E820.Count} entries; the zero page holds at most {E820Map.MaxEntries}.");
        var page = new byte[Size];
        var span = page.AsSpan();

        if (p.SetupHeader is { } header)
        {
            // Keep the kernel's own header (version, alignment, limits) and override what the loader owns.
            header.AsSpan(0, Math.Min(header.Length, Size - SetupHeaderStart)).CopyTo(span[SetupHeaderStart..]);
        }
        else
        {
            BinaryPrimitives.WriteUInt16LittleEndian(span[BootFlag..], BootFlagMagic);
            BinaryPrimitives.WriteUInt32LittleEndian(span[Header..], HeaderMagic);
            BinaryPrimitives.WriteUInt16LittleEndian(span[Version..], ProtocolVersion);
            BinaryPrimitives.WriteUInt32LittleEndian(span[KernelAlignment..], DefaultKernelAlignment);
        }

        span[TypeOfLoader] = UndefinedLoader;
        span[LoadFlags] |= LoadedHigh | CanUseHeap | KeepSegments;
        // With CAN_USE_HEAP the setup code may use memory up to heap_end_ptr; 0xFE00 is the conventional value.
        BinaryPrimitives.WriteUInt16LittleEndian(span[HeapEndPtr..], 0xFE00);

        BinaryPrimitives.WriteUInt32LittleEndian(span[CmdLinePtr..], (uint)p.CmdlineAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(span[ExtCmdLinePtr..], (uint)(p.CmdlineAddress >> 32));
        BinaryPrimitives.WriteUInt32LittleEndian(span[CmdlineSizeField..], p.CmdlineSize);

        BinaryPrimitives.WriteUInt32LittleEndian(span[RamdiskImage..], (uint)p.InitrdAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(span[ExtRamdiskImage..], (uint)(p.InitrdAddress >> 32));
        BinaryPrimitives.WriteUInt32LittleEndian(span[RamdiskSize..], (uint)p.InitrdSize);
        BinaryPrimitives.WriteUInt32LittleEndian(span[ExtRamdiskSize..], (uint)(p.InitrdSize >> 32));

        BinaryPrimitives.WriteUInt64LittleEndian(span[SetupDataField..], p.SetupData);

        span[E820Entries] = (byte)p.E820.Count;
        for (int i = 0; i < p.E820.Count; i++)
        {
            var entry = span.Slice(E820Table + i * E820Entry.EncodedSize, E820Entry.EncodedSize);
            BinaryPrimitives.WriteUInt64LittleEndian(entry, p.E820[i].Address);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[8..], p.E820[i].Size);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[16..], (uint)p.E820[i].Type);
        }
        return page;
    }
}

using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>One PT_LOAD program header, as much of it as loading needs.</summary>
public readonly record struct ElfSegment(ulong FileOffset, ulong PhysicalAddress, ulong FileSize, ulong MemorySize);

/// <summary>
/// Loads an uncompressed x86-64 ELF vmlinux: each PT_LOAD segment at its physical address,
/// entry at e_entry (the kernel's 64-bit startup_64, a physical address in vmlinux).
/// Every header field is validated against the file size and guest RAM before a byte is copied.
/// </summary>
public static class ElfLoader
{
    private const int HeaderSize = 64;
    private const int ProgramHeaderSize = 56;
    private const uint PtLoad = 1;
    private const ushort MachineX8664 = 62;
    private const ushort TypeExec = 2;
    private const int MaxProgramHeaders = 64;

    /// <summary>Parses and validates the ELF header and program headers from the file's first bytes.</summary>
    public static (ulong Entry, IReadOnlyList<ElfSegment> Segments) Parse(ReadOnlySpan<byte> head, long fileLength, string path)
    {
        if (head.Length < HeaderSize) throw new BootException($"Kernel {path} is a truncated ELF file (no complete ELF header).");
        if (head[4] != 2 || head[5] != 1)
            throw new BootException($"Kernel {path} is not a 64-bit little-endian ELF file.");
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(head[16..]);
        ushort machine = BinaryPrimitives.ReadUInt16LittleEndian(head[18..]);
        if (machine != MachineX8664) throw new BootException($"Kernel {path} is an ELF file for machine {machine}, not x86-64.");
        if (type != TypeExec) throw new BootException($"Kernel {path} is not an executable ELF file (e_type {type}).");
        ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(head[24..]);
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(head[32..]);
        ushort phentsize = BinaryPrimitives.ReadUInt16LittleEndian(head[54..]);
        ushort phnum = BinaryPrimitives.ReadUInt16LittleEndian(head[56..]);
        if (phentsize != ProgramHeaderSize || phnum == 0 || phnum > MaxProgramHeaders)
            throw new BootException($"Kernel {path} has an invalid program header table ({phnum} entries of {phentsize} bytes).");
        ulong tableEnd = phoff + (ulong)phnum * ProgramHeaderSize;
        if (phoff > (ulong)fileLength || tableEnd > (ulong)fileLength)
            throw new BootException($"Kernel {path} is a truncated ELF file (program headers past the end of the file).");
        if (tableEnd > (ulong)head.Length)
            throw new BootException($"Kernel {path} has its program headers too far into the file (offset {phoff}).");

        var segments = new List<ElfSegment>();
        for (int i = 0; i < phnum; i++)
        {
            var ph = head.Slice((int)phoff + i * ProgramHeaderSize, ProgramHeaderSize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(ph) != PtLoad) continue;
            var segment = new ElfSegment(
                FileOffset: BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]),
                PhysicalAddress: BinaryPrimitives.ReadUInt64LittleEndian(ph[24..]),
                FileSize: BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]),
                MemorySize: BinaryPrimitives.ReadUInt64LittleEndian(ph[40..]));
            if (segment.FileSize > segment.MemorySize)
                throw new BootException($"Kernel {path} has a segment whose file size exceeds its memory size.");
            if (segment.FileOffset > (ulong)fileLength || segment.FileSize > (ulong)fileLength - segment.FileOffset)
                throw new BootException($"Kernel {path} is a truncated ELF file (segment {i} extends past the end of the file).");
            if (segment.PhysicalAddress > ulong.MaxValue - segment.MemorySize)
                throw new BootException($"Kernel {path} has a segment whose address range overflows.");
            segments.Add(segment);
        }
        if (segments.Count == 0) throw new BootException($"Kernel {path} has no loadable segments.");
        return (entry, segments);
    }

    public static LoadedKernel Load(SafeFileHandle file, long fileLength, ReadOnlySpan<byte> head, string path, GuestMemory memory)
    {
        var (entry, segments) = Parse(head, fileLength, path);
        ulong end = 0;
        foreach (var s in segments)
        {
            // Below 1 MiB live the zero page, page tables, command line and MP table: a kernel may not overwrite them.
            if (s.PhysicalAddress < MemoryLayout.HighMemoryStart || !memory.IsValidRange(s.PhysicalAddress, s.MemorySize))
                throw new BootException(
                    $"Kernel {path} has a segment at 0x{s.PhysicalAddress:X}-0x{s.PhysicalAddress + s.MemorySize:X} outside guest RAM " +
                    $"({memory.Size >> 20} MiB from 1 MiB up).");
            end = Math.Max(end, s.PhysicalAddress + s.MemorySize);
        }
        if (!segments.Any(s => entry >= s.PhysicalAddress && entry < s.PhysicalAddress + s.MemorySize))
            throw new BootException($"Kernel {path} has its entry point 0x{entry:X} outside its loaded segments.");
        foreach (var s in segments)
        {
            memory.ReadFromFile(file, (long)s.FileOffset, s.PhysicalAddress, s.FileSize);
            memory.Clear(s.PhysicalAddress + s.FileSize, s.MemorySize - s.FileSize);
        }
        return new LoadedKernel
        {
            Format = KernelFormat.ElfVmlinux,
            Entry = entry,
            End = end,
            CmdlineMax = KernelLoader.DefaultCmdlineMax,
            InitrdAddressMax = KernelLoader.DefaultInitrdAddressMax,
        };
    }
}

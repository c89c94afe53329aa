using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Memory;

/// <summary>An access outside guest RAM (a bad guest address, or a loader bug).</summary>
public sealed class GuestMemoryException(string message) : Exception(message);

/// <summary>One contiguous piece of guest-physical RAM backed by an anonymous host mapping.</summary>
public readonly record struct GuestRegion(ulong GuestAddress, ulong Size, IntPtr HostAddress)
{
    public ulong End => GuestAddress + Size;
    public bool Contains(ulong address, ulong length) =>
        address >= GuestAddress && length <= Size && address - GuestAddress <= Size - length;
}

/// <summary>
/// Guest RAM. Every access is bounds-checked against the regions, so a hostile or buggy guest
/// address can never reach host memory outside the mapping. Memory is mapped MAP_NORESERVE and
/// only costs host RAM once the guest touches it.
/// </summary>
public sealed unsafe class GuestMemory : IDisposable
{
    private readonly GuestRegion[] _regions;
    private bool _disposed;

    public IReadOnlyList<GuestRegion> Regions => _regions;

    /// <summary>Total RAM in bytes.</summary>
    public ulong Size { get; }

    private GuestMemory(GuestRegion[] regions)
    {
        _regions = regions;
        Size = (ulong)regions.Sum(r => (decimal)r.Size);
    }

    /// <summary>Maps anonymous host memory for each (guest address, size) range.</summary>
    public static GuestMemory Allocate(IEnumerable<(ulong GuestAddress, ulong Size)> ranges)
    {
        var regions = new List<GuestRegion>();
        try
        {
            foreach (var (gpa, size) in ranges)
            {
                void* p = mmap(null, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (p == MAP_FAILED)
                    throw new GuestMemoryException($"Cannot map {size >> 20} MiB of guest memory: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}.");
                regions.Add(new GuestRegion(gpa, size, (IntPtr)p));
            }
            return new GuestMemory(regions.ToArray());
        }
        catch
        {
            foreach (var r in regions) munmap((void*)r.HostAddress, (size_t)r.Size);
            throw;
        }
    }

    /// <summary>
    /// Maps RAM from a snapshot file, copy-on-write (MAP_PRIVATE): every VM restored from the same
    /// file shares its pages through the page cache until it writes one. Nothing is read here; the
    /// guest faults pages in as it touches them.
    /// </summary>
    public static GuestMemory MapFile(SafeFileHandle file, IEnumerable<(ulong GuestAddress, ulong Size, long FileOffset)> ranges)
    {
        var regions = new List<GuestRegion>();
        bool added = false;
        file.DangerousAddRef(ref added);
        try
        {
            int fd = (int)file.DangerousGetHandle();
            foreach (var (gpa, size, offset) in ranges)
            {
                void* p = mmap(null, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, offset);
                if (p == MAP_FAILED)
                    throw new GuestMemoryException($"Cannot map {size >> 20} MiB of guest memory from the snapshot: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}.");
                regions.Add(new GuestRegion(gpa, size, (IntPtr)p));
            }
            return new GuestMemory(regions.ToArray());
        }
        catch
        {
            foreach (var r in regions) munmap((void*)r.HostAddress, (size_t)r.Size);
            throw;
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
    }

    /// <summary>True when [address, address+length) lies inside one RAM region.</summary>
    public bool IsValidRange(ulong address, ulong length) => FindRegion(address, length) is not null;

    /// <summary>A view of guest RAM; throws <see cref="GuestMemoryException"/> unless the whole range is RAM.</summary>
    public Span<byte> GetSpan(ulong address, int length)
    {
        if (length < 0) throw new GuestMemoryException($"Negative length {length} at guest address 0x{address:X}.");
        var region = FindRegion(address, (ulong)length)
            ?? throw new GuestMemoryException($"Guest range 0x{address:X}+0x{length:X} is not inside guest RAM.");
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new Span<byte>((byte*)region.HostAddress + (address - region.GuestAddress), length);
    }

    public void Write(ulong address, ReadOnlySpan<byte> data) => data.CopyTo(GetSpan(address, data.Length));
    public void Read(ulong address, Span<byte> destination) => GetSpan(address, destination.Length).CopyTo(destination);

    public void WriteU16(ulong address, ushort value) => System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(GetSpan(address, 2), value);
    public void WriteU32(ulong address, uint value) => System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(GetSpan(address, 4), value);
    public void WriteU64(ulong address, ulong value) => System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(GetSpan(address, 8), value);
    public ulong ReadU64(ulong address) => System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(GetSpan(address, 8));

    /// <summary>Zeroes a range (e.g. an ELF segment's .bss part).</summary>
    public void Clear(ulong address, ulong length)
    {
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, 1 << 30);
            GetSpan(address, chunk).Clear();
            address += (ulong)chunk;
            length -= (ulong)chunk;
        }
    }

    /// <summary>Reads file bytes straight into guest RAM (pread into the mapping, no intermediate copy).</summary>
    public void ReadFromFile(SafeFileHandle file, long fileOffset, ulong address, ulong length)
    {
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, 1 << 30);
            var target = GetSpan(address, chunk);
            int done = 0;
            while (done < chunk)
            {
                int n = RandomAccess.Read(file, target[done..], fileOffset + done);
                if (n == 0) throw new GuestMemoryException($"Unexpected end of file at offset {fileOffset + done}.");
                done += n;
            }
            fileOffset += chunk;
            address += (ulong)chunk;
            length -= (ulong)chunk;
        }
    }

    private GuestRegion? FindRegion(ulong address, ulong length)
    {
        foreach (var r in _regions)
            if (r.Contains(address, length)) return r;
        return null;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var r in _regions) munmap((void*)r.HostAddress, (size_t)r.Size);
    }
}

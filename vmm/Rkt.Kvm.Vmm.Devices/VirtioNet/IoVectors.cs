using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Tmds.Linux;

namespace Rkt.Kvm.Vmm.Devices.VirtioNet;

/// <summary>
/// A reusable scatter/gather list over guest memory for writev(2): pointers into the guest RAM
/// mapping, which never moves, so no copy and no pinning per packet.
/// </summary>
public sealed unsafe partial class IoVectors
{
    private readonly iovec[] _vectors;

    public IoVectors(int capacity) => _vectors = GC.AllocateArray<iovec>(capacity, pinned: true);

    public int Count { get; private set; }
    public long TotalLength { get; private set; }
    public int Capacity => _vectors.Length;

    public void Clear()
    {
        Count = 0;
        TotalLength = 0;
    }

    /// <summary>Appends a span of guest memory (from GuestMemory.GetSpan); false when the list is full.</summary>
    public bool Add(Span<byte> span)
    {
        if (span.IsEmpty) return true;
        if (Count == _vectors.Length) return false;
        _vectors[Count++] = new iovec { iov_base = Unsafe.AsPointer(ref MemoryMarshal.GetReference(span)), iov_len = span.Length };
        TotalLength += span.Length;
        return true;
    }

    /// <summary>writev(2) of the whole list: bytes written, or -1 with the errno in <paramref name="error"/>.</summary>
    internal long WriteTo(int fd, out int error)
    {
        long n;
        fixed (iovec* v = _vectors) n = Writev(fd, v, Count);
        error = n < 0 ? Marshal.GetLastPInvokeError() : 0;
        return n;
    }

    // Not in Tmds.LibC 0.5.
    [LibraryImport("libc", EntryPoint = "writev", SetLastError = true)]
    private static partial nint Writev(int fd, iovec* iov, int count);
}

using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p;

/// <summary>
/// Moves file data between host files and a descriptor chain's guest buffers with one preadv or
/// pwritev whose iovecs point into guest RAM. Linux's 9p client sends big reads and writes
/// "zero-copy": the header in one buffer, the data in page-sized buffers after it, so the
/// readable (and the writable) buffers are treated as one byte stream. One per worker, reused.
/// </summary>
internal sealed unsafe class ChainTransfer(GuestMemory memory) : IP9Transfer
{
    /// <summary>At most one iovec per descriptor: a chain is never longer than the queue (indirect tables included, capped by IOV_MAX here).</summary>
    private const int MaxIovecs = 1024;
    private readonly IoVec[] _iov = new IoVec[MaxIovecs];
    private DescriptorChain? _chain;

    public long ReplyCapacity { get; private set; }

    public void Use(DescriptorChain chain, long writable)
    {
        _chain = chain;
        ReplyCapacity = writable;
    }

    public int ReadFile(FileDescriptor fd, long offset, int count) => Transfer(fd, offset, P9.ReadReplyHeader, count, write: false);

    public int WriteFile(FileDescriptor fd, long offset, int count) => Transfer(fd, offset, P9.WriteRequestHeader, count, write: true);

    private int Transfer(FileDescriptor fd, long offset, long skip, int count, bool write)
    {
        if (count <= 0) return 0;
        var buffers = _chain!.Buffers;
        int n = 0;
        long left = count;
        for (int i = 0; i < buffers.Count && left > 0 && n < MaxIovecs; i++)
        {
            var b = buffers[i];
            // A write's data is in the readable buffers, a read's destination in the writable ones.
            if (b.DeviceWritable == write) continue;
            if (skip >= b.Length) { skip -= b.Length; continue; }
            int length = (int)Math.Min(b.Length - skip, left);
            // GetSpan checks the range lies in guest RAM (the queue checked it too; this is the last word).
            fixed (byte* p = memory.GetSpan(b.Address + (ulong)skip, length))
                _iov[n++] = new IoVec { Base = p, Length = (nuint)length }; // guest RAM is an mmap: it never moves
            left -= length;
            skip = 0;
        }
        fixed (IoVec* iov = _iov)
        {
            int done = 0;
            int first = 0;
            // A short transfer (end of file, or a partial write) ends the loop; no progress means stop.
            while (first < n)
            {
                int r = write ? HostFs.WriteVector(fd, iov + first, n - first, offset + done) : HostFs.ReadVector(fd, iov + first, n - first, offset + done);
                if (r <= 0) break;
                done += r;
                if (!write) break; // a short read is end of file (regular files)
                while (first < n && (long)iov[first].Length <= r) { r -= (int)iov[first].Length; first++; }
                if (first < n && r > 0) { iov[first].Base = (byte*)iov[first].Base + r; iov[first].Length -= (nuint)r; }
            }
            return done;
        }
    }
}

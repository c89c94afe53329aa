using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Where Tread data goes and Twrite data comes from, so file bytes move straight between host files
/// and the guest's buffers (the virtio device passes its descriptor chain; tests pass arrays).
/// </summary>
public interface IP9Transfer
{
    /// <summary>Total bytes the guest offered for the reply.</summary>
    long ReplyCapacity { get; }
    /// <summary>preads up to <paramref name="count"/> bytes into the reply after its 11-byte Rread header; returns how many.</summary>
    int ReadFile(FileDescriptor fd, long offset, int count);
    /// <summary>pwrites <paramref name="count"/> request bytes that follow the 23-byte Twrite header; returns how many.</summary>
    int WriteFile(FileDescriptor fd, long offset, int count);
}

/// <summary>A reply: <see cref="Length"/> bytes in the reply buffer, then <see cref="DataLength"/> bytes the transfer already wrote after them.</summary>
public readonly record struct P9Reply(int Length, int DataLength)
{
    public int Used => Length + DataLength;
}

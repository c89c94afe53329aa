using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Devices.Virtio;

/// <summary>
/// Copying between a validated descriptor chain and host memory, treating the chain's readable
/// (or writable) buffers as one byte stream: a driver may split a header across descriptors in
/// any way it likes, and the device must not care.
/// </summary>
public static class DescriptorChainIo
{
    /// <summary>Copies readable bytes from stream offset <paramref name="skip"/> into <paramref name="destination"/>; returns how many were available.</summary>
    public static int ReadFrom(this DescriptorChain chain, GuestMemory memory, long skip, Span<byte> destination)
    {
        int copied = 0;
        foreach (var buffer in chain.Buffers)
        {
            if (buffer.DeviceWritable || copied == destination.Length) break;
            if (skip >= buffer.Length) { skip -= buffer.Length; continue; }
            int n = (int)Math.Min(buffer.Length - skip, destination.Length - copied);
            memory.GetSpan(buffer.Address + (ulong)skip, n).CopyTo(destination[copied..]);
            copied += n;
            skip = 0;
        }
        return copied;
    }

    /// <summary>Copies <paramref name="source"/> into the writable bytes from stream offset <paramref name="skip"/>; returns how many fitted.</summary>
    public static int WriteTo(this DescriptorChain chain, GuestMemory memory, long skip, ReadOnlySpan<byte> source)
    {
        int copied = 0;
        foreach (var buffer in chain.Buffers)
        {
            if (!buffer.DeviceWritable || copied == source.Length) continue;
            if (skip >= buffer.Length) { skip -= buffer.Length; continue; }
            int n = (int)Math.Min(buffer.Length - skip, source.Length - copied);
            source.Slice(copied, n).CopyTo(memory.GetSpan(buffer.Address + (ulong)skip, n));
            copied += n;
            skip = 0;
        }
        return copied;
    }

    /// <summary>The readable bytes after stream offset <paramref name="skip"/>, up to <paramref name="length"/> bytes, as guest memory segments.</summary>
    public static IEnumerable<(ulong Address, int Length)> ReadableSegments(this DescriptorChain chain, long skip, long length)
    {
        foreach (var buffer in chain.Buffers)
        {
            if (buffer.DeviceWritable || length <= 0) yield break;
            if (skip >= buffer.Length) { skip -= buffer.Length; continue; }
            int n = (int)Math.Min(buffer.Length - skip, length);
            yield return (buffer.Address + (ulong)skip, n);
            length -= n;
            skip = 0;
        }
    }

    /// <summary>The first contiguous run of writable bytes after stream offset <paramref name="skip"/> (length 0 when none).</summary>
    public static (ulong Address, int Length) FirstWritableSegment(this DescriptorChain chain, long skip)
    {
        foreach (var buffer in chain.Buffers)
        {
            if (!buffer.DeviceWritable) continue;
            if (skip >= buffer.Length) { skip -= buffer.Length; continue; }
            return (buffer.Address + (ulong)skip, (int)Math.Min(buffer.Length - skip, int.MaxValue));
        }
        return (0, 0);
    }
}

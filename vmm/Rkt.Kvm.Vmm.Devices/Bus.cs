namespace Rkt.Kvm.Vmm.Devices;

/// <summary>A device reached through port I/O or MMIO. Offsets are relative to the device's base.</summary>
public interface IBusDevice
{
    void Read(ulong offset, Span<byte> data);
    void Write(ulong offset, ReadOnlySpan<byte> data);
}

/// <summary>
/// Dispatches guest port or MMIO accesses to devices by address range. An access nobody claims
/// reads as all ones (like an empty ISA bus) and writes are dropped: guests probe absent hardware.
/// </summary>
public sealed class Bus
{
    private readonly record struct Range(ulong Base, ulong Length, IBusDevice Device);

    private Range[] _ranges = [];

    /// <summary>How many accesses hit no device (probes of absent hardware; useful when tuning boot).</summary>
    public long UnclaimedAccesses;

    public void Register(ulong baseAddress, ulong length, IBusDevice device)
    {
        if (length == 0) throw new ArgumentOutOfRangeException(nameof(length));
        foreach (var r in _ranges)
        {
            if (baseAddress < r.Base + r.Length && r.Base < baseAddress + length)
                throw new InvalidOperationException($"Bus range 0x{baseAddress:X}+0x{length:X} overlaps 0x{r.Base:X}+0x{r.Length:X}.");
        }
        _ranges = [.. _ranges, new Range(baseAddress, length, device)];
    }

    public bool Read(ulong address, Span<byte> data)
    {
        if (Find(address, data.Length) is { } r)
        {
            r.Device.Read(address - r.Base, data);
            return true;
        }
        Interlocked.Increment(ref UnclaimedAccesses);
        data.Fill(0xFF);
        return false;
    }

    public bool Write(ulong address, ReadOnlySpan<byte> data)
    {
        if (Find(address, data.Length) is { } r)
        {
            r.Device.Write(address - r.Base, data);
            return true;
        }
        Interlocked.Increment(ref UnclaimedAccesses);
        return false;
    }

    private Range? Find(ulong address, int length)
    {
        foreach (var r in _ranges)
        {
            if (address >= r.Base && address - r.Base < r.Length && (ulong)length <= r.Length - (address - r.Base))
                return r;
        }
        return null;
    }
}

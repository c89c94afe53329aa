namespace Rkt.Kvm.Vmm.Devices.BootTimer;

/// <summary>
/// A one-byte MMIO marker: when the guest writes <see cref="Magic"/> (for example init running
/// `devmem 0xc0000000 8 123`), the VMM records how long the boot took, in wall and CPU time,
/// so boots can be measured without parsing console text.
/// </summary>
public sealed class BootTimer(Action onMarker) : IBusDevice
{
    public const byte Magic = 123;
    public const ulong Size = 0x1000;

    public void Read(ulong offset, Span<byte> data) => data.Clear();

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset == 0 && data.Length >= 1 && data[0] == Magic) onMarker();
    }
}

namespace Rkt.Kvm.Vmm.Devices.I8042;

/// <summary>
/// Just enough of the PS/2 keyboard controller for the guest to reset the machine: with
/// `reboot=k` Linux writes command 0xFE (pulse reset line) to port 0x64. The status register
/// always reads "input buffer empty, no output", so the kernel's wait loops end at once.
/// </summary>
public sealed class I8042(Action onReset) : IBusDevice
{
    public const ushort DataPort = 0x60;
    public const ushort CommandPort = 0x64;
    public const byte ResetCommand = 0xFE;

    public void Read(ulong offset, Span<byte> data) => data.Clear();

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset == CommandPort - DataPort && data.Length == 1 && data[0] == ResetCommand) onReset();
    }
}

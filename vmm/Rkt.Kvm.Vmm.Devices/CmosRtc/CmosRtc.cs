namespace Rkt.Kvm.Vmm.Devices.CmosRtc;

/// <summary>
/// The MC146818 CMOS clock at ports 0x70/0x71, read-only time in BCD, 24-hour mode. Linux reads
/// its boot wall-clock from here; without it the guest would spin waiting for "update in
/// progress" to clear on an all-ones bus. Other CMOS bytes behave as plain RAM.
/// </summary>
public sealed class CmosRtc(Func<DateTime> utcNow) : IBusDevice
{
    public const ushort IndexPort = 0x70;
    public const ulong PortSpan = 2;

    private const int Seconds = 0x00, Minutes = 0x02, Hours = 0x04, DayOfWeek = 0x06, DayOfMonth = 0x07,
        Month = 0x08, Year = 0x09, StatusA = 0x0A, StatusB = 0x0B, StatusC = 0x0C, StatusD = 0x0D, Century = 0x32;

    private readonly object _lock = new();
    private readonly byte[] _ram = new byte[128];
    private int _index;

    public CmosRtc() : this(() => DateTime.UtcNow) { }

    public void Read(ulong offset, Span<byte> data)
    {
        if (data.Length != 1) { data.Fill(0xFF); return; }
        lock (_lock) data[0] = offset == 0 ? (byte)_index : ReadRegister(_index);
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length != 1) return;
        lock (_lock)
        {
            if (offset == 0) _index = data[0] & 0x7F; // bit 7 is the NMI mask, not part of the index
            else if (_index > StatusD && _index != Century) _ram[_index] = data[0];
        }
    }

    private byte ReadRegister(int index)
    {
        var now = utcNow();
        return index switch
        {
            Seconds => Bcd(now.Second),
            Minutes => Bcd(now.Minute),
            Hours => Bcd(now.Hour),
            DayOfWeek => Bcd((int)now.DayOfWeek + 1),
            DayOfMonth => Bcd(now.Day),
            Month => Bcd(now.Month),
            Year => Bcd(now.Year % 100),
            Century => Bcd(now.Year / 100),
            StatusA => 0x26, // 32.768 kHz time base, 1024 Hz rate, no update in progress
            StatusB => 0x02, // 24-hour mode, BCD, no interrupts
            StatusC => 0x00,
            StatusD => 0x80, // battery good
            _ => _ram[index],
        };
    }

    internal static byte Bcd(int value) => (byte)(((value / 10) << 4) | (value % 10));
}

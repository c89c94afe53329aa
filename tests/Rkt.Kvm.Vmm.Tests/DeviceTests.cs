using System.Text;
using Rkt.Kvm.Vmm.Devices;
using Rkt.Kvm.Vmm.Devices.BootTimer;
using Rkt.Kvm.Vmm.Devices.CmosRtc;
using Rkt.Kvm.Vmm.Devices.I8042;
using Rkt.Kvm.Vmm.Devices.Serial8250;

namespace Rkt.Kvm.Vmm.Tests;

internal sealed class RecordingLine : IInterruptLine
{
    public readonly List<bool> Levels = [];
    public bool Asserted => Levels.Count > 0 && Levels[^1];
    public void SetLevel(bool asserted) => Levels.Add(asserted);
}

internal sealed class RecordingOutput : ISerialOutput
{
    public readonly List<byte> Bytes = [];
    public void Write(byte value) => Bytes.Add(value);
}

/// <summary>The UART's registers as Linux's 8250 driver uses them: probe, THRE interrupts, receive, loopback.</summary>
public class Serial8250Tests
{
    private readonly RecordingLine _irq = new();
    private readonly RecordingOutput _out = new();
    private readonly Serial8250 _uart;

    public Serial8250Tests() => _uart = new Serial8250(_out, _irq);

    private byte In(int reg) { Span<byte> b = stackalloc byte[1]; _uart.Read((ulong)reg, b); return b[0]; }
    private void Out(int reg, byte value) => _uart.Write((ulong)reg, [value]);

    [Fact]
    public void Transmitted_bytes_reach_the_output_in_order()
    {
        foreach (byte b in "hello\n"u8) Out(0, b);
        Assert.Equal("hello\n", Encoding.ASCII.GetString(_out.Bytes.ToArray()));
        Assert.Equal(0x60, In(5) & 0x60); // THR empty and transmitter empty
    }

    [Fact]
    public void Enabling_thr_empty_interrupt_raises_it_and_reading_iir_clears_it()
    {
        Assert.Equal(0x01, In(2)); // no interrupt pending
        Out(1, 0x02);
        Assert.True(_irq.Asserted);
        Assert.Equal(0x02, In(2));
        Assert.False(_irq.Asserted);
        Assert.Equal(0x01, In(2));
        Out(0, (byte)'x'); // THR empties at once: a new THRE interrupt
        Assert.True(_irq.Asserted);
        Out(1, 0x00); // masking it drops the line
        Assert.False(_irq.Asserted);
    }

    [Fact]
    public void Fifo_enable_shows_in_iir_as_16550A()
    {
        Out(2, 0x01);
        Assert.Equal(0xC0, In(2) & 0xC0);
        Out(2, 0x00);
        Assert.Equal(0x00, In(2) & 0xC0);
    }

    [Fact]
    public void Received_bytes_set_data_ready_and_interrupt_with_priority_over_thre()
    {
        Out(1, 0x03);
        Assert.True(_uart.EnqueueInput((byte)'a'));
        Assert.Equal(0x01, In(5) & 0x01);
        Assert.Equal(0x04, In(2) & 0x0F);
        Assert.Equal((byte)'a', In(0));
        Assert.Equal(0, In(5) & 0x01);
        Assert.Equal(0x02, In(2) & 0x0F); // THRE was still pending behind it
    }

    [Fact]
    public void Receive_fifo_is_bounded_and_reports_overrun()
    {
        for (int i = 0; i < Serial8250.ReceiveFifoSize; i++) Assert.True(_uart.EnqueueInput((byte)i));
        Assert.False(_uart.EnqueueInput(0xFF));
        Assert.Equal(0x02, In(5) & 0x02);
        Assert.Equal(0, In(5) & 0x02); // overrun clears on read
    }

    [Fact]
    public void Loopback_returns_written_bytes_and_mirrors_modem_lines()
    {
        Out(4, 0x10 | 0x0F); // loopback + DTR, RTS, OUT1, OUT2
        Assert.Equal(0xF0, In(6) & 0xF0);
        Out(4, 0x10 | 0x02); // RTS only -> CTS
        Assert.Equal(0x10, In(6) & 0xF0);
        Out(0, 0x5A);
        Assert.Empty(_out.Bytes);
        Assert.Equal(0x5A, In(0));
    }

    [Fact]
    public void Divisor_latch_and_scratch_are_plain_registers()
    {
        Out(3, 0x80);
        Out(0, 0x01); Out(1, 0x02);
        Assert.Equal(0x01, In(0)); Assert.Equal(0x02, In(1));
        Out(3, 0x03);
        Assert.Equal(0x03, In(3));
        Assert.Empty(_out.Bytes);
        Out(7, 0xA5);
        Assert.Equal(0xA5, In(7));
    }

    [Fact]
    public void Ier_keeps_only_its_four_defined_bits() { Out(1, 0xFF); Assert.Equal(0x0F, In(1)); }

    [Fact]
    public void Wide_or_out_of_range_accesses_are_ignored()
    {
        var wide = new byte[2];
        _uart.Read(0, wide);
        Assert.Equal([0xFF, 0xFF], wide);
        _uart.Write(9, [0x41]);
        _uart.Write(0, [0x41, 0x42]);
        Assert.Empty(_out.Bytes);
    }
}

public class LegacyDeviceTests
{
    [Fact]
    public void I8042_reset_command_on_port_0x64_resets()
    {
        int resets = 0;
        var kbc = new I8042(() => resets++);
        kbc.Write(4, [0xFE]);
        kbc.Write(0, [0xFE]); // data port: not a reset
        kbc.Write(4, [0xAA]);
        Assert.Equal(1, resets);
        var status = new byte[1] { 0xFF };
        kbc.Read(4, status);
        Assert.Equal(0, status[0]);
    }

    [Fact]
    public void Cmos_clock_reads_time_in_bcd_and_never_reports_update_in_progress()
    {
        var rtc = new CmosRtc(() => new DateTime(2026, 11, 29, 21, 45, 7, DateTimeKind.Utc));
        byte Reg(byte index) { rtc.Write(0, [(byte)(index | 0x80)]); var b = new byte[1]; rtc.Read(1, b); return b[0]; }
        Assert.Equal(0x07, Reg(0x00));
        Assert.Equal(0x45, Reg(0x02));
        Assert.Equal(0x21, Reg(0x04));
        Assert.Equal(0x29, Reg(0x07));
        Assert.Equal(0x11, Reg(0x08));
        Assert.Equal(0x26, Reg(0x09));
        Assert.Equal(0x20, Reg(0x32));
        Assert.Equal(0, Reg(0x0A) & 0x80);
        Assert.Equal(0x02, Reg(0x0B));
        rtc.Write(0, [0x40]); rtc.Write(1, [0x99]);
        Assert.Equal(0x99, Reg(0x40));
        rtc.Write(0, [0x00]); rtc.Write(1, [0x99]); // the clock itself is read-only
        Assert.Equal(0x07, Reg(0x00));
    }

    [Fact]
    public void Boot_timer_fires_only_on_the_magic_byte()
    {
        int marks = 0;
        var timer = new BootTimer(() => marks++);
        timer.Write(0, [122]);
        timer.Write(1, [123]);
        timer.Write(0, [123]);
        Assert.Equal(1, marks);
    }

    [Fact]
    public void Bus_dispatches_by_range_and_reads_all_ones_from_nothing()
    {
        var bus = new Bus();
        var seen = new List<ulong>();
        bus.Register(0x3F8, 8, new Probe(seen));
        Assert.Throws<InvalidOperationException>(() => bus.Register(0x3FF, 2, new Probe(seen)));
        var b = new byte[1];
        Assert.True(bus.Read(0x3FD, b));
        Assert.Equal(5ul, seen[^1]);
        Assert.False(bus.Read(0x2F8, b));
        Assert.Equal(0xFF, b[0]);
        Assert.False(bus.Write(0x400, b));
        Assert.False(bus.Read(0x3FF, new byte[2])); // crosses the device's end
        Assert.Equal(3, bus.UnclaimedAccesses);
    }

    private sealed class Probe(List<ulong> seen) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data) { seen.Add(offset); data.Clear(); }
        public void Write(ulong offset, ReadOnlySpan<byte> data) => seen.Add(offset);
    }
}

using Rkt.Kvm.Vmm.Devices.Serial8250;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>The UART saved mid-use and restored into a fresh one reads back the same registers and input.</summary>
public class SerialSnapshotTests
{
    private static byte In(Serial8250 uart, int reg) { Span<byte> b = stackalloc byte[1]; uart.Read((ulong)reg, b); return b[0]; }
    private static void Out(Serial8250 uart, int reg, byte value) => uart.Write((ulong)reg, [value]);

    private static (Serial8250 Uart, RecordingLine Line, RecordingOutput Output) Fresh()
    {
        var line = new RecordingLine();
        var output = new RecordingOutput();
        return (new Serial8250(output, line), line, output);
    }

    /// <summary>What Linux's 8250 driver leaves: 9600 8E1 (divisor 0x010C), FIFO on, receive interrupts, DTR|RTS|OUT2, a scratch value; then three input bytes arrive.</summary>
    private static Serial8250 Used()
    {
        var (uart, _, _) = Fresh();
        Out(uart, 3, 0x80);
        Out(uart, 0, 0x0C); Out(uart, 1, 0x01);
        Out(uart, 3, 0x1B);
        Out(uart, 2, 0x01);
        Out(uart, 1, 0x05);
        Out(uart, 4, 0x0B);
        Out(uart, 7, 0x5A);
        foreach (byte b in "abc"u8) Assert.True(uart.EnqueueInput(b));
        return uart;
    }

    [Fact]
    public void Registers_and_queued_input_come_back_in_order()
    {
        var saved = Used().SaveState();
        var (uart, line, output) = Fresh();
        uart.RestoreState(saved);
        Assert.Equal(0x05, In(uart, 1));
        Assert.Equal(0x1B, In(uart, 3));
        Assert.Equal(0x0B, In(uart, 4));
        Assert.Equal(0x5A, In(uart, 7));
        Assert.Equal(0xC0 | 0x04, In(uart, 2)); // FIFO enabled, receive data pending
        Assert.Equal(0x61, In(uart, 5));        // data ready, THR and transmitter empty
        Out(uart, 3, 0x9B);
        Assert.Equal(((byte)0x0C, (byte)0x01), (In(uart, 0), In(uart, 1)));
        Out(uart, 3, 0x1B);
        Assert.Equal("abc"u8.ToArray(), new[] { In(uart, 0), In(uart, 0), In(uart, 0) });
        Assert.Equal(0, In(uart, 5) & 0x01);
        Assert.Empty(output.Bytes);
        // The line was up at the snapshot (the interrupt controller kept that); it drops once the input is read.
        Assert.Equal([false], line.Levels);
    }

    [Fact]
    public void A_pending_thr_empty_interrupt_is_not_lost()
    {
        var (old, _, _) = Fresh();
        Out(old, 1, 0x02);
        var (uart, _, _) = Fresh();
        uart.RestoreState(old.SaveState());
        Assert.Equal(0x02, In(uart, 2));
        Assert.Equal(0x01, In(uart, 2)); // reading IIR acknowledged it
    }

    [Fact]
    public void A_full_fifo_and_an_overrun_come_back()
    {
        var (old, _, _) = Fresh();
        for (int i = 0; i <= Serial8250.ReceiveFifoSize; i++) old.EnqueueInput((byte)(i + 1));
        var (uart, _, _) = Fresh();
        uart.RestoreState(old.SaveState());
        Assert.Equal(0x02, In(uart, 5) & 0x02);
        for (int i = 0; i < Serial8250.ReceiveFifoSize; i++) Assert.Equal(i + 1, In(uart, 0));
        Assert.Equal(0, In(uart, 5) & 0x01);
    }

    [Fact]
    public void A_restored_state_replaces_what_the_uart_had()
    {
        var saved = Used().SaveState();
        var (uart, _, _) = Fresh();
        foreach (byte b in "zzzz"u8) uart.EnqueueInput(b);
        Out(uart, 7, 0x11);
        uart.RestoreState(saved);
        Assert.Equal(0x5A, In(uart, 7));
        Assert.Equal((byte)'a', In(uart, 0));
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0, 0, 0, 0, 0 })]                        // shorter than the fixed part
    [InlineData(new byte[] { 0, 0, 0, 0, 0, 0, 0, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 })] // more than the FIFO holds
    [InlineData(new byte[] { 0, 0, 0, 0, 0, 0, 0, 3, 1, 2 })]               // fewer bytes than counted
    [InlineData(new byte[] { 0, 0, 0, 0, 0, 0, 0, 1, 1, 2 })]               // more bytes than counted
    public void Malformed_state_is_refused(byte[] state)
    {
        var (uart, _, _) = Fresh();
        Out(uart, 7, 0x42);
        var e = Assert.Throws<InvalidDataException>(() => uart.RestoreState(state));
        Assert.Contains("serial", e.Message);
        Assert.Equal(0x42, In(uart, 7)); // left as it was
    }
}

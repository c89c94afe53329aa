namespace Rkt.Kvm.Vmm.Devices.Serial8250;

/// <summary>
/// A 16550A UART (eight registers at 0x3F8) good enough for Linux's interrupt-driven 8250 driver:
/// FIFO detection, THR-empty and receive interrupts with 16550 priority and clearing rules,
/// loopback (which the driver's probe uses), divisor latch and scratch registers. Transmission is
/// instant, so THR is always empty again right after a write.
/// </summary>
public sealed class Serial8250 : IBusDevice
{
    public const ushort Com1Port = 0x3F8;
    public const int Com1Irq = 4;
    public const int RegisterCount = 8;
    /// <summary>Receive FIFO depth of a 16550A; further input is dropped (and reported as overrun).</summary>
    public const int ReceiveFifoSize = 16;

    // Register offsets.
    private const int Data = 0, InterruptEnable = 1, InterruptId = 2, LineControl = 3, ModemControl = 4, LineStatus = 5, ModemStatus = 6, Scratch = 7;

    // Bits.
    private const byte IerReceiveData = 0x01, IerThrEmpty = 0x02;
    private const byte IirNoInterrupt = 0x01, IirThrEmpty = 0x02, IirReceiveData = 0x04, IirFifoEnabled = 0xC0;
    private const byte FcrEnableFifo = 0x01, FcrClearReceive = 0x02;
    private const byte LcrDivisorLatch = 0x80;
    private const byte McrLoopback = 0x10;
    private const byte LsrDataReady = 0x01, LsrOverrun = 0x02, LsrThrEmpty = 0x20, LsrTransmitterEmpty = 0x40;
    private const byte MsrCts = 0x10, MsrDsr = 0x20, MsrDcd = 0x80;

    private readonly object _lock = new();
    private readonly ISerialOutput _output;
    private readonly IInterruptLine _interrupt;
    private readonly Queue<byte> _receive = new();
    private byte _ier, _lcr, _mcr, _scratch, _divisorLow = 0x0C, _divisorHigh;
    private bool _fifoEnabled, _thrEmptyInterrupt, _overrun, _lineAsserted;

    public Serial8250(ISerialOutput output, IInterruptLine interrupt)
    {
        _output = output;
        _interrupt = interrupt;
    }

    /// <summary>Host input for the guest (e.g. the console's stdin). Returns false when the FIFO is full.</summary>
    public bool EnqueueInput(byte value)
    {
        lock (_lock)
        {
            bool accepted = Receive(value);
            UpdateInterrupt();
            return accepted;
        }
    }

    public void Read(ulong offset, Span<byte> data)
    {
        if (data.Length != 1 || offset >= RegisterCount) { data.Fill(0xFF); return; }
        lock (_lock)
        {
            data[0] = ReadRegister((int)offset);
            UpdateInterrupt();
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length != 1 || offset >= RegisterCount) return;
        lock (_lock)
        {
            WriteRegister((int)offset, data[0]);
            UpdateInterrupt();
        }
    }

    /// <summary>The UART's registers and FIFO for a snapshot: the guest's interrupt-driven console stalls if IER or a pending THR-empty is lost.</summary>
    public byte[] SaveState()
    {
        lock (_lock)
        {
            var state = new List<byte> { _ier, _lcr, _mcr, _scratch, _divisorLow, _divisorHigh,
                (byte)((_fifoEnabled ? 1 : 0) | (_thrEmptyInterrupt ? 2 : 0) | (_overrun ? 4 : 0) | (_lineAsserted ? 8 : 0)), (byte)_receive.Count };
            state.AddRange(_receive);
            return state.ToArray();
        }
    }

    /// <summary>Takes back <see cref="SaveState"/>'s bytes (before any vCPU runs); the line level came back with the interrupt controller.</summary>
    public void RestoreState(ReadOnlySpan<byte> state)
    {
        if (state.Length < 8 || state[7] > ReceiveFifoSize || state.Length != 8 + state[7]) throw new InvalidDataException("The serial port's snapshot state is malformed.");
        lock (_lock)
        {
            (_ier, _lcr, _mcr, _scratch, _divisorLow, _divisorHigh) = ((byte)(state[0] & 0x0F), state[1], (byte)(state[2] & 0x1F), state[3], state[4], state[5]);
            byte flags = state[6];
            (_fifoEnabled, _thrEmptyInterrupt, _overrun, _lineAsserted) = ((flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0, (flags & 8) != 0);
            _receive.Clear();
            foreach (byte b in state[8..]) _receive.Enqueue(b);
        }
    }

    private bool DivisorLatch => (_lcr & LcrDivisorLatch) != 0;
    private bool Loopback => (_mcr & McrLoopback) != 0;

    private byte ReadRegister(int register)
    {
        switch (register)
        {
            case Data when DivisorLatch: return _divisorLow;
            case Data:
                return _receive.TryDequeue(out byte value) ? value : (byte)0;
            case InterruptEnable when DivisorLatch: return _divisorHigh;
            case InterruptEnable: return _ier;
            case InterruptId:
            {
                byte iir = PendingInterruptId();
                // Reading IIR while it reports THR-empty acknowledges that interrupt.
                if (iir == IirThrEmpty) _thrEmptyInterrupt = false;
                return (byte)(iir | (_fifoEnabled ? IirFifoEnabled : 0));
            }
            case LineControl: return _lcr;
            case ModemControl: return _mcr;
            case LineStatus:
            {
                byte lsr = LsrThrEmpty | LsrTransmitterEmpty;
                if (_receive.Count > 0) lsr |= LsrDataReady;
                if (_overrun) { lsr |= LsrOverrun; _overrun = false; }
                return lsr;
            }
            case ModemStatus:
                // In loopback the modem inputs mirror the outputs: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
                if (Loopback)
                    return (byte)(((_mcr & 0x02) << 3) | ((_mcr & 0x01) << 5) | ((_mcr & 0x04) << 4) | ((_mcr & 0x08) << 4));
                return MsrDcd | MsrDsr | MsrCts;
            default: return _scratch;
        }
    }

    private void WriteRegister(int register, byte value)
    {
        switch (register)
        {
            case Data when DivisorLatch: _divisorLow = value; break;
            case Data:
                if (Loopback) Receive(value);
                else _output.Write(value);
                // The byte left at once, so THR is empty again: that is a new THR-empty interrupt.
                _thrEmptyInterrupt = true;
                break;
            case InterruptEnable when DivisorLatch: _divisorHigh = value; break;
            case InterruptEnable:
                _ier = (byte)(value & 0x0F);
                // Enabling the THR-empty interrupt while THR is empty raises it, as on real 16550s.
                if ((_ier & IerThrEmpty) != 0) _thrEmptyInterrupt = true;
                break;
            case InterruptId: // FCR on write
                _fifoEnabled = (value & FcrEnableFifo) != 0;
                if ((value & FcrClearReceive) != 0) _receive.Clear();
                break;
            case LineControl: _lcr = value; break;
            case ModemControl: _mcr = (byte)(value & 0x1F); break;
            case LineStatus or ModemStatus: break; // read-only
            default: _scratch = value; break;
        }
    }

    private bool Receive(byte value)
    {
        if (_receive.Count >= ReceiveFifoSize) { _overrun = true; return false; }
        _receive.Enqueue(value);
        return true;
    }

    private byte PendingInterruptId()
    {
        if ((_ier & IerReceiveData) != 0 && _receive.Count > 0) return IirReceiveData;
        if ((_ier & IerThrEmpty) != 0 && _thrEmptyInterrupt) return IirThrEmpty;
        return IirNoInterrupt;
    }

    private void UpdateInterrupt()
    {
        bool asserted = PendingInterruptId() != IirNoInterrupt;
        if (asserted == _lineAsserted) return;
        _lineAsserted = asserted;
        _interrupt.SetLevel(asserted);
    }
}

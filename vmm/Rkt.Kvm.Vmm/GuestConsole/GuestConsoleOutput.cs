using System.Text;
using Rkt.Kvm.Vmm.Devices.Serial8250;

namespace Rkt.Kvm.Vmm.GuestConsole;

/// <summary>
/// The guest console: bytes from the UART go, unchanged and in order, to every target stream
/// (stdout, a log file). Complete lines are also shown to observers (the panic detector).
/// Writes are flushed per line, so a reader sees whole lines, and on <see cref="Flush"/>.
/// </summary>
public sealed class GuestConsoleOutput : ISerialOutput, IDisposable
{
    private const int MaxLine = 4096;
    private readonly object _lock = new();
    private readonly Stream[] _targets;
    private readonly Action<string>[] _lineObservers;
    private readonly byte[] _line = new byte[MaxLine];
    private int _lineLength;
    private int _unflushed;

    public GuestConsoleOutput(IEnumerable<Stream> targets, params Action<string>[] lineObservers)
    {
        _targets = targets.ToArray();
        _lineObservers = lineObservers;
    }

    public void Write(byte value)
    {
        lock (_lock)
        {
            foreach (var t in _targets) t.WriteByte(value);
            _unflushed++;
            if (value == (byte)'\n' || _lineLength == MaxLine)
            {
                EmitLine();
                FlushTargets();
            }
            if (value != (byte)'\n') _line[_lineLength++] = value;
        }
    }

    /// <summary>Pushes out whatever is buffered (a prompt without a newline, or the tail at exit).</summary>
    public void Flush()
    {
        lock (_lock)
        {
            if (_unflushed > 0) FlushTargets();
        }
    }

    private void EmitLine()
    {
        if (_lineObservers.Length > 0)
        {
            string text = Encoding.UTF8.GetString(_line, 0, _lineLength).TrimEnd('\r');
            foreach (var observer in _lineObservers) observer(text);
        }
        _lineLength = 0;
    }

    private void FlushTargets()
    {
        foreach (var t in _targets)
        {
            try { t.Flush(); }
            catch (IOException) { } // a closed stdout must not stop the VM
        }
        _unflushed = 0;
    }

    public void Dispose()
    {
        Flush();
        foreach (var t in _targets) t.Dispose();
    }
}

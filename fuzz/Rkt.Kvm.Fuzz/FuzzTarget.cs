using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace Rkt.Kvm.Fuzz;

/// <summary>
/// One fuzz target: a byte span in, nothing out. <see cref="Run"/> catches the exceptions the code
/// under test documents for bad input and checks its own invariants; whatever escapes (an unexpected
/// exception, a <see cref="FuzzFindingException"/> from a broken invariant) is a finding, as is a hang.
/// A target keeps what is costly to build (guest memory, a device, a scratch directory) for the life
/// of the process and puts it back in its initial state at the start of every run, so an input
/// behaves the same whatever ran before it.
/// </summary>
public interface IFuzzTarget
{
    /// <summary>The name on the command line and of the corpus folder (<c>fuzz/corpus/&lt;name&gt;/</c>).</summary>
    string Name { get; }

    /// <summary>One line for <c>list</c> and the README: what the target reaches.</summary>
    string Covers { get; }

    void Run(ReadOnlySpan<byte> input);

    /// <summary>A few small valid inputs, written by the <c>seed</c> command into the corpus.</summary>
    IEnumerable<(string Name, byte[] Data)> Seeds();
}

/// <summary>With RKT_KVM_FUZZ_VERBOSE=1, what each input did (refused why, replies), on stderr: for looking at a corpus by hand.</summary>
public static class FuzzLog
{
    public static bool Enabled { get; } = Environment.GetEnvironmentVariable("RKT_KVM_FUZZ_VERBOSE") == "1";

    public static void Note(string text)
    {
        if (Enabled) Console.Error.WriteLine(text);
    }
}

/// <summary>An invariant of the code under test did not hold for this input.</summary>
public sealed class FuzzFindingException(string message, Exception? inner = null) : Exception(message, inner);

public static class FuzzTargets
{
    /// <summary>Every target, in the order <c>make fuzz</c> runs them.</summary>
    public static IReadOnlyList<IFuzzTarget> All { get; } =
    [
        new Targets.SplitQueueTarget(),
        new Targets.P9DecodeTarget(),
        new Targets.P9ServerTarget(),
        new Targets.VsockPacketTarget(),
        new Targets.KernelLoaderTarget(),
        new Targets.TarExtractTarget(),
        new Targets.PodManifestTarget(),
        new Targets.RegistryInputTarget(),
    ];

    public static IFuzzTarget? Find(string name) => All.FirstOrDefault(t => t.Name == name);

    /// <summary>
    /// A per-process scratch directory for one target: under <c>$RKT_KVM_FUZZ_DIR</c> (set by
    /// fuzz/run.sh, so the paths are known in advance and can go into a dictionary) or else under
    /// the temp directory with the pid in its name; removed when the process exits normally.
    /// </summary>
    public static string ScratchDirectory(string target)
    {
        var root = Environment.GetEnvironmentVariable("RKT_KVM_FUZZ_DIR");
        var dir = root is { Length: > 0 }
            ? Path.Join(root, target)
            : Path.Join(Path.GetTempPath(), $"rkt-kvm-fuzz-{target}-{Environment.ProcessId}");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return dir;
    }
}

/// <summary>
/// A Serilog sink that keeps Error and Fatal events: the VMM logs every exception its devices and
/// the 9p server did not expect (a VMM bug, never the guest's doing) and carries on, so for a
/// fuzzer such an event is a finding even though nothing was thrown.
/// </summary>
public sealed class ErrorTrap : ILogEventSink
{
    private readonly List<string> _errors = [];

    public ILogger Logger { get; }

    public ErrorTrap() => Logger = new LoggerConfiguration().MinimumLevel.Warning().WriteTo.Sink(this).CreateLogger();

    public void Emit(LogEvent e)
    {
        if (e.Level < LogEventLevel.Error) return;
        lock (_errors) _errors.Add($"{e.RenderMessage()} {e.Exception}");
    }

    public void Clear()
    {
        lock (_errors) _errors.Clear();
    }

    /// <summary>Throws a finding when an error was logged since the last <see cref="Clear"/>.</summary>
    public void ThrowIfAny(string what)
    {
        lock (_errors)
        {
            if (_errors.Count == 0) return;
            var text = string.Join(Environment.NewLine, _errors);
            _errors.Clear();
            throw new FuzzFindingException($"{what} logged an error: {text}");
        }
    }
}

/// <summary>Reads a fuzz input as a little stream of fields; past the end every read is zero.</summary>
public ref struct InputReader(ReadOnlySpan<byte> data)
{
    private readonly ReadOnlySpan<byte> _data = data;
    private int _pos;

    public readonly bool AtEnd => _pos >= _data.Length;
    public readonly int Remaining => Math.Max(0, _data.Length - _pos);

    public byte U8() => _pos < _data.Length ? _data[_pos++] : (byte)0;

    public ushort U16() => (ushort)(U8() | U8() << 8);

    public uint U32() => (uint)(U16() | U16() << 16);

    /// <summary>Up to <paramref name="n"/> bytes (fewer at the end).</summary>
    public ReadOnlySpan<byte> Bytes(int n)
    {
        int take = Math.Clamp(n, 0, Remaining);
        var s = _data.Slice(_pos, take);
        _pos += take;
        return s;
    }

    /// <summary>Exactly <paramref name="n"/> bytes, zero-padded past the end.</summary>
    public byte[] Padded(int n)
    {
        var result = new byte[n];
        Bytes(n).CopyTo(result);
        return result;
    }
}

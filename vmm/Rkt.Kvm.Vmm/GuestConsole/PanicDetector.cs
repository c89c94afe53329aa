namespace Rkt.Kvm.Vmm.GuestConsole;

/// <summary>
/// Recognises the guest kernel's panic line on the console. The guest runs with `panic=-1`, so a
/// panic ends in the same reset as a clean reboot; this is how the VMM tells the two apart.
/// (A guest program that prints the same text to the console can only misreport its own VM.)
/// </summary>
public sealed class PanicDetector
{
    public const string PanicMarker = "Kernel panic - not syncing";
    private volatile string? _panicLine;

    /// <summary>The first panic line seen, or null.</summary>
    public string? PanicLine => _panicLine;

    public void OnLine(string line)
    {
        if (_panicLine is null && line.Contains(PanicMarker, StringComparison.Ordinal))
            _panicLine = line[line.IndexOf(PanicMarker, StringComparison.Ordinal)..];
    }
}

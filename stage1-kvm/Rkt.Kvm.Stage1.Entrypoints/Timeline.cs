using System.Globalization;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// When each phase of a pod's life happened, appended to <c>stage1-kvm/timeline</c> as
/// <c>&lt;name&gt; &lt;unix ms&gt;</c> lines (plus the guest's own figures): bench/pod splits a
/// pod's wall time with it. A few lines per pod; it costs nothing worth measuring.
/// </summary>
public sealed class Timeline(string path)
{
    private readonly Lock _lock = new();

    public void Mark(string name) => Write(name, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    public void Write(string name, double value)
    {
        lock (_lock) File.AppendAllText(path, string.Create(CultureInfo.InvariantCulture, $"{name} {value}\n"));
    }
}

namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>Byte counts as users write and read them: "512M", "2G"; "90MiB".</summary>
public static class Sizes
{
    public static long Parse(string text, string flag)
    {
        var t = text.Trim().ToUpperInvariant().Replace("IB", "").TrimEnd('B');
        int shift = t.Length > 0 ? "KMGT".IndexOf(t[^1]) : -1;
        var digits = shift >= 0 ? t[..^1] : t;
        if (!long.TryParse(digits, out var n) || n < 0) throw new UsageException($"{flag}: \"{text}\" is not a size");
        return shift >= 0 ? n << (10 * (shift + 1)) : n;
    }

    /// <summary>rkt shows sizes the way go-humanize's IBytes does, without the space.</summary>
    public static string Format(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes}B" : v < 10 ? $"{v:0.0}{units[u]}" : $"{v:0}{units[u]}";
    }
}

using System.Globalization;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>Go durations as rkt flags take them: <c>30s</c>, <c>2m</c>, <c>1h30m</c>, <c>500ms</c>.</summary>
public static partial class Durations
{
    [GeneratedRegex(@"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")]
    private static partial Regex Part();

    public static TimeSpan Parse(string text, string flag)
    {
        var total = TimeSpan.Zero;
        int consumed = 0;
        foreach (Match m in Part().Matches(text))
        {
            if (m.Index != consumed) break;
            consumed += m.Length;
            double n = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            total += m.Groups[2].Value switch { "ms" => TimeSpan.FromMilliseconds(n), "s" => TimeSpan.FromSeconds(n), "m" => TimeSpan.FromMinutes(n), _ => TimeSpan.FromHours(n) };
        }
        if (text == "0") return TimeSpan.Zero;
        return consumed == text.Length && consumed > 0 ? total : throw new UsageException($"{flag}={text}: not a duration like 30s, 2m or 1h30m");
    }
}

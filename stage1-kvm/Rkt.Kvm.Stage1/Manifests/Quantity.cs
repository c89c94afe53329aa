using System.Globalization;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>
/// Kubernetes resource quantities as appc isolators use them: <c>500m</c> (milli), <c>256M</c>
/// (decimal SI), <c>1Gi</c> (binary), <c>1e9</c> (exponent), or a plain number.
/// </summary>
public static partial class Quantity
{
    [GeneratedRegex(@"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+)?$")]
    private static partial Regex Pattern();

    public static bool TryParse(string? text, out decimal value)
    {
        value = 0;
        if (text is null) return false;
        var m = Pattern().Match(text.Trim());
        if (!m.Success) return false;
        if (!decimal.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number)) return false;
        string suffix = m.Groups[2].Value;
        try
        {
            value = suffix switch
            {
                "" => number,
                "m" => number / 1000m,
                "k" => number * 1e3m, "M" => number * 1e6m, "G" => number * 1e9m,
                "T" => number * 1e12m, "P" => number * 1e15m, "E" => number * 1e18m,
                "Ki" => number * 1024m, "Mi" => number * 1048576m, "Gi" => number * 1073741824m,
                "Ti" => number * 1099511627776m, "Pi" => number * 1125899906842624m, "Ei" => number * 1152921504606846976m,
                _ => number * Pow10(int.Parse(suffix[1..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture)),
            };
        }
        catch (OverflowException) { return false; }
        return true;
    }

    public static decimal Parse(string? text, string what) =>
        TryParse(text, out var v) ? v : throw new Stage1Exception($"{what}: \"{text}\" is not a resource quantity (like 500m, 256M or 1Gi)");

    private static decimal Pow10(int exponent)
    {
        if (exponent is < -28 or > 28) throw new OverflowException();
        decimal result = 1;
        for (int i = 0; i < Math.Abs(exponent); i++) result *= 10;
        return exponent < 0 ? 1 / result : result;
    }
}

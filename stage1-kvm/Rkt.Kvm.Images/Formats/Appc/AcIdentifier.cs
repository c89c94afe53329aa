using System.Text;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Images.Formats.Appc;

/// <summary>appc's AC identifier: <c>^[a-z0-9]+([-._~/][a-z0-9]+)*$</c>.</summary>
public static partial class AcIdentifier
{
    [GeneratedRegex("^[a-z0-9]+([-._~/][a-z0-9]+)*$")]
    private static partial Regex Pattern();

    public static bool IsValid(string s) => Pattern().IsMatch(s);

    /// <summary>Maps a docker repository or file name to the nearest valid identifier
    /// (lowercase, other characters become '-', separators never doubled or at the ends).</summary>
    public static string Sanitize(string s)
    {
        var sb = new StringBuilder();
        foreach (var c in s.ToLowerInvariant())
        {
            bool alnum = c is >= 'a' and <= 'z' or >= '0' and <= '9';
            bool sep = c is '-' or '.' or '_' or '~' or '/';
            if (alnum) sb.Append(c);
            else if (sb.Length > 0 && "-._~/".IndexOf(sb[^1]) < 0) sb.Append(sep ? c : '-');
        }
        while (sb.Length > 0 && "-._~/".IndexOf(sb[^1]) >= 0) sb.Length--;
        return sb.Length == 0 ? "image" : sb.ToString();
    }
}

using System.Text.RegularExpressions;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>appc names: ACName (app and volume names) and ACIdentifier (image names).</summary>
public static partial class AcName
{
    [GeneratedRegex("^[a-z0-9]+(-[a-z0-9]+)*$")]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[a-z0-9]+([-._~/][a-z0-9]+)*$")]
    private static partial Regex IdentifierPattern();

    /// <summary><c>^[a-z0-9]+([-][a-z0-9]+)*$</c>: safe as a single path component.</summary>
    public static bool IsValidName(string? s) => s is not null && NamePattern().IsMatch(s);

    public static bool IsValidIdentifier(string? s) => s is not null && IdentifierPattern().IsMatch(s);
}

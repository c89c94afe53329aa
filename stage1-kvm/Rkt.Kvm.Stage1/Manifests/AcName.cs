using System.Text.RegularExpressions;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>appc ACNames: app and volume names (image names are checked by Rkt.Kvm.Images' AcIdentifier).</summary>
public static partial class AcName
{
    [GeneratedRegex("^[a-z0-9]+(-[a-z0-9]+)*$")]
    private static partial Regex NamePattern();

    /// <summary><c>^[a-z0-9]+([-][a-z0-9]+)*$</c>: safe as a single path component.</summary>
    public static bool IsValidName(string? s) => s is not null && NamePattern().IsMatch(s);
}

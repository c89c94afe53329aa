using System.Text.RegularExpressions;
using Rkt.Kvm.Images.Formats;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// A registry image reference, <c>docker://[REGISTRY[:PORT]/]REPO[:TAG|@DIGEST]</c> (or
/// <c>oci://…</c>), normalized by Docker Hub's rules as rkt's docker2aci did: no registry means
/// <c>registry-1.docker.io</c> (so do <c>docker.io</c> and <c>index.docker.io</c>), a one-part
/// repository there is under <c>library/</c>, no tag means <c>latest</c>. Every part is checked
/// against distribution's grammar, because they end up in URLs and the image's name.
/// </summary>
public sealed partial record ImageReference(string Scheme, string Registry, string Repository, string? Tag, Digest? Digest)
{
    public const string DockerHub = "registry-1.docker.io";
    private const int MaxNameLength = 255;

    // distribution/reference: a domain is dot-separated labels with an optional port, or a bracketed IPv6 address.
    [GeneratedRegex(@"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$")]
    private static partial Regex Domain();

    [GeneratedRegex(@"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")]
    private static partial Regex PathComponent();

    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
    private static partial Regex TagPattern();

    /// <summary>True for the strings this type parses: <c>docker://…</c> and <c>oci://…</c>.</summary>
    public static bool IsRegistryReference(string image) =>
        image.StartsWith("docker://", StringComparison.Ordinal) || image.StartsWith("oci://", StringComparison.Ordinal);

    public static ImageReference Parse(string text)
    {
        var sep = text.IndexOf("://", StringComparison.Ordinal);
        var scheme = sep > 0 ? text[..sep] : "";
        if (scheme is not ("docker" or "oci")) throw Invalid(text, "it must start with docker:// or oci://");
        var rest = text[(sep + 3)..];
        if (rest.Length == 0) throw Invalid(text, "it names no image");

        Digest? digest = null;
        int at = rest.IndexOf('@');
        if (at >= 0)
        {
            if (!Digest.TryParse(rest[(at + 1)..], out var d)) throw Invalid(text, $"\"{rest[(at + 1)..]}\" is not a sha256:<64 hex> or sha512:<128 hex> digest");
            digest = d;
            rest = rest[..at];
        }
        string? tag = null;
        int colon = rest.LastIndexOf(':');
        if (colon > rest.LastIndexOf('/'))
        {
            tag = rest[(colon + 1)..];
            if (!TagPattern().IsMatch(tag)) throw Invalid(text, $"\"{tag}\" is not a valid tag");
            rest = rest[..colon];
        }

        string registry = DockerHub;
        int slash = rest.IndexOf('/');
        if (slash > 0)
        {
            var first = rest[..slash];
            // Docker's rule: the first part is a registry only if it looks like a host name.
            if (first.Contains('.') || first.Contains(':') || first == "localhost" || first.Any(char.IsUpper))
            {
                if (!Domain().IsMatch(first) || !Uri.TryCreate($"https://{first}/", UriKind.Absolute, out _))
                    throw Invalid(text, $"\"{first}\" is not a valid registry host[:port]");
                registry = first is "docker.io" or "index.docker.io" ? DockerHub : first;
                rest = rest[(slash + 1)..];
            }
        }
        if (registry == DockerHub && !rest.Contains('/')) rest = "library/" + rest;
        foreach (var component in rest.Split('/'))
            if (!PathComponent().IsMatch(component))
                throw Invalid(text, $"\"{component}\" is not a valid repository name part (lowercase letters, digits and . _ - separators)");
        if (rest.Length > MaxNameLength) throw Invalid(text, $"the repository name is longer than {MaxNameLength} characters");
        if (tag is null && digest is null) tag = "latest";
        return new ImageReference(scheme, registry, rest, tag, digest);
    }

    private static ImageException Invalid(string text, string why) =>
        new($"invalid image reference \"{text}\": {why}; expected docker://[REGISTRY[:PORT]/]REPO[:TAG|@DIGEST]");

    /// <summary>What the manifest request names: the digest when given (it pins the content), else the tag.</summary>
    public string ManifestReference => Digest?.ToString() ?? Tag!;

    /// <summary>"registry-1.docker.io/library/busybox", the image's name in the store (as rkt names it).</summary>
    public string Name => $"{Registry}/{Repository}";

    /// <summary>The image's appc name, as rkt's docker2aci made it: <see cref="Name"/> lowercased with
    /// the port's colon (no AC identifier character) as an underscore, "127.0.0.1_5000/team/app".</summary>
    public string AppcName
    {
        get
        {
            var name = Name.ToLowerInvariant().Replace(':', '_');
            return Formats.Appc.AcIdentifier.IsValid(name) ? name : Formats.Appc.AcIdentifier.Sanitize(name);
        }
    }

    /// <summary>"registry-1.docker.io/library/busybox:latest" or "…@sha256:…": how the store
    /// remembers where an image came from, so a later fetch or run finds it.</summary>
    public string Canonical => Digest is { } d ? $"{Name}@{d}" : $"{Name}:{Tag}";

    public override string ToString() => $"{Scheme}://{Canonical}";
}

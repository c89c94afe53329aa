using Rkt.Kvm.Images.Formats.Appc;

namespace Rkt.Kvm.Images.Trust;

/// <summary>
/// What a key is trusted for: an image name prefix, an AC identifier (<c>example.com/app</c>)
/// that covers the name itself and every name below it (<c>example.com/app/worker</c>), never a
/// sibling that merely starts with the same letters (<c>example.com/apple</c>). rkt keeps a
/// prefix's keys in <c>prefix.d/&lt;prefix&gt;/</c> with the prefix's slashes as directories, no
/// escaping: an AC identifier has no empty, <c>.</c> or <c>..</c> component to escape.
/// </summary>
public static class TrustPrefix
{
    /// <summary>Checks a user's <c>--prefix</c>. rkt's own help suggests <c>example.com/foo/*</c>,
    /// which its identifier check then refuses; the <c>/*</c> means what the bare prefix means.</summary>
    public static string Parse(string prefix)
    {
        var bare = prefix.EndsWith("/*", StringComparison.Ordinal) ? prefix[..^2] : prefix;
        if (bare.Contains("://", StringComparison.Ordinal))
            throw new ImageException($"--prefix must not contain a URL scheme, omit {bare[..bare.IndexOf(':')]}://");
        return AcIdentifier.IsValid(bare) ? bare
            : throw new ImageException($"--prefix \"{prefix}\" is not an image name prefix (an AC identifier such as example.com/app)");
    }

    /// <summary>The prefixes that cover <paramref name="name"/>, shortest first: "example.com",
    /// "example.com/app", "example.com/app/worker".</summary>
    public static IEnumerable<string> Covering(string name)
    {
        var parts = name.Split('/');
        for (int n = 1; n <= parts.Length; n++) yield return string.Join('/', parts[..n]);
    }
}

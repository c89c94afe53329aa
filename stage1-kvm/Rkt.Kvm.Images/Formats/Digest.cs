using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Images.Formats;

/// <summary>
/// An OCI content digest ("sha256:&lt;64 hex&gt;" or "sha512:&lt;128 hex&gt;"). Parsing is strict
/// because a digest becomes a file name (blobs/sha256/HEX): anything else could be a path.
/// </summary>
public sealed partial record Digest(string Algorithm, string Hex)
{
    [GeneratedRegex("^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")]
    private static partial Regex Pattern();

    public static bool TryParse(string? text, out Digest digest)
    {
        digest = null!;
        if (text is null || !Pattern().IsMatch(text)) return false;
        var colon = text.IndexOf(':');
        digest = new Digest(text[..colon], text[(colon + 1)..]);
        return true;
    }

    public static Digest Parse(string? text, string what) =>
        TryParse(text, out var d) ? d : throw new ImageException($"{what} has an invalid digest \"{text}\"");

    public HashAlgorithmName HashName => Algorithm == "sha512" ? HashAlgorithmName.SHA512 : HashAlgorithmName.SHA256;

    /// <summary>The path of this blob inside an OCI layout (or the store's blob directory).</summary>
    public string BlobPath(string root) => Path.Join(root, "blobs", Algorithm, Hex);

    public override string ToString() => $"{Algorithm}:{Hex}";
}

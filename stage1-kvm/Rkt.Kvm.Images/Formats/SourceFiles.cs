using System.Security.Cryptography;
using System.Text.Json;

namespace Rkt.Kvm.Images.Formats;

/// <summary>Reading the small JSON files of an image source: size-capped, digest-checked,
/// and only at paths that stay inside the source directory.</summary>
internal static class SourceFiles
{
    public const long MaxJsonBytes = 8 << 20;

    /// <summary>Joins a path named by the source (docker's manifest.json names its files) to the
    /// source root, refusing absolute paths and "..".</summary>
    public static string Inside(string root, string? rel, string what)
    {
        if (string.IsNullOrEmpty(rel) || rel.StartsWith('/') || rel.Contains('\0') || rel.Split('/').Contains(".."))
            throw new ImageException($"{what} names an unsafe path \"{rel}\"");
        return Path.Join(root, rel);
    }

    public static byte[] Read(string path, Digest? expected, string what)
    {
        if (!File.Exists(path)) throw new ImageException($"{what} is missing ({path})");
        var info = new FileInfo(path);
        if (info.Length > MaxJsonBytes) throw new ImageException($"{what} is larger than {MaxJsonBytes} bytes");
        var bytes = File.ReadAllBytes(path);
        if (expected is not null)
        {
            var actual = Convert.ToHexStringLower(expected.Algorithm == "sha512" ? SHA512.HashData(bytes) : SHA256.HashData(bytes));
            if (actual != expected.Hex) throw new ImageException($"{what} does not match its digest {expected} (got {expected.Algorithm}:{actual})");
        }
        return bytes;
    }

    public static T ReadJson<T>(string path, Digest? expected, string what) where T : class
    {
        var bytes = Read(path, expected, what);
        try { return JsonSerializer.Deserialize<T>(bytes) ?? throw new ImageException($"{what} is empty"); }
        catch (JsonException e) { throw new ImageException($"{what} is not valid JSON: {e.Message}", e); }
    }
}

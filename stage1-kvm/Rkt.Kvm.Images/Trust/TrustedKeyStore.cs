using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Images.Trust;

/// <summary>
/// rkt's trusted keys (pkg/keystore), in the system configuration (<c>/usr/lib/rkt</c>, read
/// only) and the local one (<c>/etc/rkt</c>, where <c>trust</c> writes):
/// <code>
/// trustedkeys/root.d/FINGERPRINT              trusted for every image
/// trustedkeys/prefix.d/PREFIX/FINGERPRINT     trusted for PREFIX and the names below it
/// </code>
/// A file's name must be its key's fingerprint. An empty local file masks the system key of that
/// fingerprint (rkt's way to distrust a key the distribution ships).
/// </summary>
public sealed class TrustedKeyStore(string systemConfig, string localConfig)
{
    private string SystemRoot => Path.Join(systemConfig, "trustedkeys", "root.d");
    private string SystemPrefixes => Path.Join(systemConfig, "trustedkeys", "prefix.d");
    private string LocalRoot => Path.Join(localConfig, "trustedkeys", "root.d");
    private string LocalPrefixes => Path.Join(localConfig, "trustedkeys", "prefix.d");

    /// <summary>Stores <paramref name="key"/> as trusted for <paramref name="prefix"/> (a parsed
    /// <see cref="TrustPrefix"/>), or for every image when it is null; returns the file's path.
    /// Written atomically: a reader sees the key whole or not at all.</summary>
    public string Add(PublicKeyFile key, string? prefix)
    {
        var dir = prefix is null ? LocalRoot : Path.Join(LocalPrefixes, prefix);
        Directory.CreateDirectory(dir);
        var path = Path.Join(dir, key.Fingerprint);
        AtomicFile.Write(path, key.Bytes, mode: UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        return path;
    }

    /// <summary>
    /// The keys trusted for image <paramref name="name"/>, as rkt's loadKeyring gathers them: the
    /// system's root keys, the local ones, then the system's and the local keys of every prefix
    /// that covers the name, shortest first; an empty file drops what came before under its name.
    /// </summary>
    public IReadOnlyList<PublicKeyFile> KeysFor(string name)
    {
        var keys = new Dictionary<string, PublicKeyFile>(StringComparer.Ordinal);
        var dirs = new List<string> { SystemRoot, LocalRoot };
        foreach (var prefixes in new[] { SystemPrefixes, LocalPrefixes })
            dirs.AddRange(TrustPrefix.Covering(name).Select(p => Path.Join(prefixes, p)));
        foreach (var dir in dirs.Where(Directory.Exists))
            foreach (var file in Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal))
            {
                var fingerprint = Path.GetFileName(file);
                if (new FileInfo(file).Length == 0) { keys.Remove(fingerprint); continue; }
                var key = PublicKeyFile.Parse(File.ReadAllBytes(file), $"trusted key {file}");
                if (key.Fingerprint != fingerprint)
                    throw new ImageException($"trusted key {file} is named for another key (its fingerprint is {key.Fingerprint})");
                keys[fingerprint] = key;
            }
        return [.. keys.Values];
    }

    /// <summary>Whether a prefix key (not a root key) is trusted for <paramref name="name"/> or a
    /// prefix above it: rkt then uses what it has instead of discovering keys for the name.</summary>
    public bool HasPrefixKeys(string name) =>
        TrustPrefix.Covering(name).Any(p => new[] { LocalPrefixes, SystemPrefixes }.Select(d => Path.Join(d, p))
            .Any(dir => Directory.Exists(dir) && Directory.EnumerateFiles(dir).Any(f => new FileInfo(f).Length > 0)));
}

using System.Security.Cryptography;
using System.Text;
using Rkt.Kvm.Images.Native;
using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Images.Store;

/// <summary>
/// The part of one URL's download that arrived before the connection broke, kept in the store's
/// scratch area (<c>cas/tmp/partial-HASH</c>, its validator in <c>partial-HASH.validator</c>) so that a
/// retry, or the next fetch of the URL, asks only for the rest (rkt keeps its partial ACIs in the
/// store's tmp directory the same way). Held under an flock: a second fetch of the same URL at the
/// same time downloads on its own instead. Nothing here is an image: a complete download is moved
/// into the fetch's own scratch directory and checked there like any other; <c>image gc</c> removes
/// the parts nobody holds.
/// </summary>
internal sealed class PartialDownload : IDisposable
{
    private const string Prefix = "partial-";
    private readonly FileLock _lock;

    private PartialDownload(string path, FileLock fileLock) { Path = path; _lock = fileLock; }

    /// <summary>The file the download goes into.</summary>
    public string Path { get; }

    private string ValidatorPath => Path + ".validator";

    /// <summary>The part held of <paramref name="url"/>'s download, or null when another fetch holds it.</summary>
    public static PartialDownload? TryOpen(string tmpDir, string url)
    {
        Directory.CreateDirectory(tmpDir);
        var path = System.IO.Path.Join(tmpDir, Prefix + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(url)))[..32]);
        var held = FileLock.TryExclusive(path + ".lock");
        if (held is null) return null;
        if (held.IsAt(path + ".lock")) return new PartialDownload(path, held);
        held.Dispose(); // its holder just finished and deleted it
        return null;
    }

    /// <summary>How much is held and what to ask for the rest with; null when there is nothing to
    /// continue (no bytes, or none of the server's validators came with them).</summary>
    public Registry.ResumeFrom? ResumePoint
    {
        get
        {
            var length = File.Exists(Path) ? new FileInfo(Path).Length : 0;
            var validator = File.Exists(ValidatorPath) ? File.ReadAllText(ValidatorPath) : null;
            return length > 0 && !string.IsNullOrEmpty(validator) ? new Registry.ResumeFrom(length, validator) : null;
        }
    }

    /// <summary>A new download of the whole: the part held is dropped, and <paramref name="validator"/>
    /// (none: the download cannot be continued) is what the rest will be asked with.</summary>
    public void Restart(string? validator)
    {
        Drop();
        if (validator is not null) File.WriteAllText(ValidatorPath, validator);
    }

    /// <summary>The complete download, moved to <paramref name="dest"/> (on the same filesystem).</summary>
    public void MoveTo(string dest)
    {
        File.Move(Path, dest);
        File.Delete(ValidatorPath);
    }

    /// <summary>Forgets the part held (a refusal that no retry would change, or a 304).</summary>
    public void Drop()
    {
        File.Delete(Path);
        File.Delete(ValidatorPath);
    }

    public void Dispose()
    {
        try
        {
            if (!File.Exists(Path))
            {
                File.Delete(ValidatorPath);
                File.Delete(Path + ".lock");
            }
        }
        finally { _lock.Dispose(); }
    }

    /// <summary>Deletes the parts under <paramref name="tmpDir"/> no fetch holds.</summary>
    public static int CollectAbandoned(string tmpDir) =>
        TempArea.CollectAbandoned(tmpDir, Prefix, path =>
        {
            bool had = File.Exists(path);
            File.Delete(path);
            File.Delete(path + ".validator");
            return had;
        });
}

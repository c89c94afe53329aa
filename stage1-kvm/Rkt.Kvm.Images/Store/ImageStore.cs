using System.Text.Json;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Images.Native;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Images.Store;

/// <summary>
/// The local image store under the data directory, shared by concurrent rkt-kvm processes:
/// <code>
/// cas/lock                 flock: shared to read, exclusive to change the index or collect
/// cas/index.json           every image: name, labels, import time, last used, size, blobs
/// cas/blob/sha512/HEX      an ACI's uncompressed tar (HEX is its image ID)
/// cas/blob/sha256/HEX      an OCI/docker layer as imported (compressed or not)
/// cas/manifest/ID          the appc image manifest
/// cas/tmp/                 imports in progress (see TempArea)
/// tree/ID/                 rendered trees: rootfs/, manifest, entries listing (see TreeStore)
/// </code>
/// An import prepares everything in tmp and commits under the exclusive lock: blobs renamed in,
/// manifest written, then the index replaced atomically. Until that last rename the image does
/// not exist, so an interrupted import leaves nothing visible (gc removes its leftovers).
/// </summary>
public sealed class ImageStore
{
    public const string DefaultDataDir = "/var/lib/rkt-kvm";
    private static readonly JsonSerializerOptions IndexJson = new() { WriteIndented = true };

    public ImageStore(string dataDir)
    {
        DataDir = Path.GetFullPath(dataDir);
        CasDir = Path.Join(DataDir, "cas");
        TreeDir = Path.Join(DataDir, "tree");
    }

    public string DataDir { get; }

    /// <summary>Where archives are extracted to disk (renders, unpacking a tarred layout): the confined
    /// child when set (rkt-kvm sets <see cref="Confinement.ExtractionSandbox.ForThisProcess"/>), else in-process.</summary>
    public Confinement.ExtractionSandbox? Sandbox { get; init; }
    public string CasDir { get; }
    public string TreeDir { get; }
    internal string TmpDir => Path.Join(CasDir, "tmp");
    private string LockPath => Path.Join(CasDir, "lock");
    private string IndexPath => Path.Join(CasDir, "index.json");

    public string BlobPath(string key)
    {
        var colon = key.IndexOf(':');
        return Path.Join(CasDir, "blob", key[..colon], key[(colon + 1)..]);
    }

    public string ManifestPath(string id) => Path.Join(CasDir, "manifest", id);

    /// <summary>Takes the store lock; creates the store on first use.</summary>
    internal FileLock Lock(bool exclusive)
    {
        Directory.CreateDirectory(CasDir);
        return exclusive ? FileLock.Exclusive(LockPath) : FileLock.Shared(LockPath);
    }

    public IReadOnlyList<ImageRecord> List()
    {
        using var _ = Lock(exclusive: false);
        return LoadIndex().Images;
    }

    /// <summary>
    /// Finds an image by ID (full or a prefix of at least "sha512-" plus 6 hex digits, as rkt
    /// shortens IDs) or by name, optionally with ":version". Ambiguity is an error.
    /// </summary>
    public ImageRecord Resolve(string idOrName) => TryResolve(idOrName) ?? throw new ImageException($"no image \"{idOrName}\" in the store");

    /// <summary><see cref="Resolve"/>, but null when nothing matches (ambiguity is still an error).</summary>
    public ImageRecord? TryResolve(string idOrName)
    {
        var images = List();
        List<ImageRecord> matches;
        if (idOrName.StartsWith("sha512-", StringComparison.Ordinal))
        {
            if (idOrName.Length < "sha512-".Length + 6) throw new ImageException($"image ID \"{idOrName}\" is too short to be unambiguous");
            matches = images.Where(i => i.Id.StartsWith(idOrName, StringComparison.Ordinal)).ToList();
        }
        else
        {
            matches = images.Where(i => i.DisplayName == idOrName || i.Name == idOrName).ToList();
        }
        return matches.Count switch
        {
            1 => matches[0],
            0 => null,
            // Several versions of one name: like rkt, the latest import wins when only the name is given.
            _ when !idOrName.StartsWith("sha512-", StringComparison.Ordinal) && matches.All(m => m.Name == idOrName)
                => matches.MaxBy(m => m.ImportTime)!,
            _ => throw new ImageException($"\"{idOrName}\" matches {matches.Count} images; give more of the ID"),
        };
    }

    /// <summary>The latest image fetched from <paramref name="remote"/> (see <see cref="ImageRecord.Remote"/>), or null.</summary>
    public ImageRecord? FindRemote(string remote) =>
        List().Where(i => i.Remote == remote).MaxBy(i => i.ImportTime);

    /// <summary>Hardlinks the stored blob <paramref name="key"/> to <paramref name="dest"/> (in the
    /// store's scratch area, so on the same filesystem); false when the store lacks it. Under the
    /// shared lock, so gc cannot take the blob between the look and the link; the link keeps the
    /// content alive whatever happens to the store's name for it afterwards.</summary>
    internal bool TryLinkBlob(string key, string dest)
    {
        using var _ = Lock(exclusive: false);
        var source = BlobPath(key);
        if (!File.Exists(source)) return false;
        if (Native.Libc.link(source, dest) != 0) throw Native.Libc.Error("link", dest);
        return true;
    }

    public byte[] ReadManifest(ImageRecord image) => File.ReadAllBytes(ManifestPath(image.Id));

    /// <summary>Commits a prepared import; returns the stored record (the existing one when
    /// the same image was imported before).</summary>
    internal ImageRecord Commit(ImageRecord record, IReadOnlyList<(string Key, string TmpPath)> blobs, byte[] manifest)
    {
        using var _ = Lock(exclusive: true);
        var index = LoadIndex();
        if (index.Images.FirstOrDefault(i => i.Id == record.Id) is { } existing)
        {
            // The same image fetched again, or fetched after a file import: remember where from.
            if (record.Remote is null || existing with { Remote = record.Remote, RemoteDigest = record.RemoteDigest, ETag = record.ETag,
                    CacheMaxAge = record.CacheMaxAge, DownloadTime = record.DownloadTime } == existing) return existing;
            var updated = existing with
            {
                Remote = record.Remote, RemoteDigest = record.RemoteDigest, ETag = record.ETag, CacheMaxAge = record.CacheMaxAge, DownloadTime = record.DownloadTime,
            };
            index.Images[index.Images.IndexOf(existing)] = updated;
            SaveIndex(index);
            return updated;
        }
        long size = 0;
        foreach (var (key, tmp) in blobs)
        {
            var dest = BlobPath(key);
            Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
            if (!File.Exists(dest)) File.Move(tmp, dest);
            size += new FileInfo(dest).Length;
        }
        Directory.CreateDirectory(Path.Join(CasDir, "manifest"));
        AtomicFile.Write(ManifestPath(record.Id), manifest);
        record = record with { Size = size };
        index.Images.Add(record);
        SaveIndex(index);
        return record;
    }

    /// <summary>Removes an image from the index, then its manifest, tree and the blobs no other
    /// image shares. Removing from the index first means a crash halfway leaves only garbage.
    /// A tree in <paramref name="treesInUse"/> stays: pods mount it as the lower layer of their
    /// overlays; a later gc removes it once no pod refers to it.</summary>
    public void Remove(ImageRecord image, IReadOnlySet<string>? treesInUse = null)
    {
        using var _ = Lock(exclusive: true);
        var index = LoadIndex();
        if (index.Images.RemoveAll(i => i.Id == image.Id) == 0) throw new ImageException($"no image \"{image.Id}\" in the store");
        SaveIndex(index);
        File.Delete(ManifestPath(image.Id));
        if (treesInUse?.Contains(image.Id) != true) new TreeStore(this).DeleteTree(image.Id);
        var stillUsed = index.Images.SelectMany(i => i.Blobs).ToHashSet();
        foreach (var key in image.Blobs.Where(k => !stillUsed.Contains(k))) File.Delete(BlobPath(key));
    }

    public void MarkUsed(string id, DateTimeOffset when)
    {
        using var _ = Lock(exclusive: true);
        var index = LoadIndex();
        var i = index.Images.FindIndex(r => r.Id == id);
        if (i < 0) return;
        index.Images[i] = index.Images[i] with { LastUsed = when };
        SaveIndex(index, durable: false);
    }

    /// <summary>
    /// Like rkt's image gc: removes images not used within <paramref name="gracePeriod"/>
    /// (null keeps all images), then every blob, manifest and tree no image references and
    /// the scratch directories of imports and renders that died. Trees in <paramref name="treesInUse"/>
    /// (pods' overlay lower layers) stay.
    /// </summary>
    public GcResult Collect(TimeSpan? gracePeriod, DateTimeOffset now, IReadOnlySet<string>? treesInUse = null)
    {
        var removedImages = new List<ImageRecord>();
        if (gracePeriod is { } grace)
            foreach (var image in List().Where(i => now - i.LastUsed > grace))
            {
                Remove(image, treesInUse);
                removedImages.Add(image);
            }

        using var _ = Lock(exclusive: true);
        var index = LoadIndex();
        var ids = index.Images.Select(i => i.Id).ToHashSet();
        var keys = index.Images.SelectMany(i => i.Blobs).ToHashSet();
        int blobs = 0, trees = 0;
        foreach (var alg in new[] { "sha256", "sha512" })
        {
            var dir = Path.Join(CasDir, "blob", alg);
            if (!Directory.Exists(dir)) continue;
            foreach (var file in Directory.EnumerateFiles(dir).Where(f => !keys.Contains($"{alg}:{Path.GetFileName(f)}")).ToList())
            {
                File.Delete(file);
                blobs++;
            }
        }
        var manifestDir = Path.Join(CasDir, "manifest");
        if (Directory.Exists(manifestDir))
            foreach (var file in Directory.EnumerateFiles(manifestDir).Where(f => !ids.Contains(Path.GetFileName(f))).ToList())
                File.Delete(file);
        var treeStore = new TreeStore(this);
        foreach (var id in treeStore.CachedIds().Where(id => !ids.Contains(id) && treesInUse?.Contains(id) != true).ToList())
        {
            treeStore.DeleteTree(id);
            trees++;
        }
        int scratch = TempArea.CollectAbandoned(TmpDir, "import-") + PartialDownload.CollectAbandoned(TmpDir) + TempArea.CollectAbandoned(TreeDir, TreeStore.TmpPrefix);
        return new GcResult(removedImages, blobs, trees, scratch);
    }

    private StoreIndex LoadIndex()
    {
        if (!File.Exists(IndexPath)) return new StoreIndex();
        try { return JsonSerializer.Deserialize<StoreIndex>(File.ReadAllBytes(IndexPath)) ?? new StoreIndex(); }
        catch (JsonException e) { throw new ImageException($"the store index {IndexPath} is corrupt: {e.Message}", e); }
    }

    private void SaveIndex(StoreIndex index, bool durable = true) =>
        AtomicFile.Write(IndexPath, JsonSerializer.SerializeToUtf8Bytes(index, IndexJson), durable);
}

public sealed record GcResult(IReadOnlyList<ImageRecord> RemovedImages, int RemovedBlobs, int RemovedTrees, int RemovedScratch);

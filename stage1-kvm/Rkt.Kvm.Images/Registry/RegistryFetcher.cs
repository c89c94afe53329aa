using Rkt.Kvm.Images.Formats;
using Rkt.Kvm.Images.Formats.Oci;
using Rkt.Kvm.Images.Store;
using Serilog;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// <c>fetch docker://…</c>: finds the image in the store or in its registry as the pull policy
/// says, downloads what the store lacks into a scratch area laid out like an OCI layout
/// (<c>blobs/ALG/HEX</c>; layers already in the store are hardlinked, not downloaded; the rest
/// in parallel), then imports it through the same path as a local OCI layout. Until the import
/// commits, nothing is visible in the store; a failure leaves it as it was.
/// </summary>
public sealed class RegistryFetcher(ImageStore store, RegistryOptions options, IImportProgress? progress = null)
{
    private static ILogger Log => Serilog.Log.ForContext<RegistryFetcher>();
    private readonly IImportProgress _progress = progress ?? NoProgress.Instance;

    public ImageRecord Fetch(ImageReference reference, PullPolicy policy, ImportOptions importOptions, CancellationToken ct = default)
    {
        // As rkt: docker images carry no signature to check, so the user must say it is fine.
        if (!options.Insecure.HasFlag(InsecureOptions.Image))
            throw new ImageException("signature verification for docker images is not supported (try --insecure-options=image)");
        var stored = store.FindRemote(reference.Canonical);
        // A digest names content that cannot change: no need to ask the registry again.
        if (stored is not null && (policy != PullPolicy.Update || reference.Digest is not null)) return stored;
        if (policy == PullPolicy.Never)
            throw new ImageException($"image {reference} is not in the store, and --pull-policy=never does not fetch it");
        return FetchAsync(reference, stored, importOptions, ct).GetAwaiter().GetResult();
    }

    private async Task<ImageRecord> FetchAsync(ImageReference reference, ImageRecord? stored, ImportOptions importOptions, CancellationToken ct)
    {
        using var http = new RegistryHttp(reference, options);
        var resolved = await new ManifestResolver(http, importOptions.Policy.MaxBytes).Resolve(reference, ct);
        // The tag still names the image we have: nothing to download or check again.
        if (stored?.RemoteDigest == resolved.Digest.ToString()) return stored;

        using var tmp = TempArea.Create(store.TmpDir, "import-");
        var downloader = new BlobDownloader(http);
        var config = resolved.Manifest.Config!;
        var configDigest = Digest.Parse(config.Digest, "the config");
        await downloader.Download(configDigest, config.Size, BlobFile(tmp, configDigest), $"config {configDigest}", null, ct);

        var layers = resolved.Manifest.Layers ?? [];
        var missing = new List<(int Index, Digest Digest, long Size)>();
        var seen = new HashSet<string>();
        for (int i = 0; i < layers.Count; i++)
        {
            var digest = Digest.Parse(layers[i].Digest, $"layer {i + 1}");
            if (!seen.Add(digest.ToString())) continue; // the same blob twice (empty layers): fetched once
            if (store.TryLinkBlob(digest.ToString(), BlobFile(tmp, digest)))
                Log.Debug("{Reference}: layer {Digest} is in the store already", reference, digest);
            else missing.Add((i, digest, layers[i].Size));
        }

        using var gate = new SemaphoreSlim(options.ParallelDownloads);
        var progressLock = new object();
        await Task.WhenAll(missing.Select(async layer =>
        {
            await gate.WaitAsync(ct);
            try
            {
                var what = $"layer {layer.Index + 1}/{layers.Count} ({layer.Digest})";
                Action<long> advance;
                lock (progressLock) advance = _progress.Begin($"downloading layer {layer.Index + 1}/{layers.Count} {layer.Digest.Hex[..12]}", layer.Size);
                await downloader.Download(layer.Digest, layer.Size, BlobFile(tmp, layer.Digest), what,
                    n => { lock (progressLock) advance(n); }, ct);
            }
            finally { gate.Release(); }
        }));

        var refName = reference.Tag is { } tag ? $"{reference.Name}:{tag}" : reference.Name;
        var image = OciLayoutReader.FromManifest(tmp.Path, resolved.Manifest, resolved.Digest, refName, format: "registry");
        return new ImageImporter(store, _progress).ImportFetched(image, reference.Canonical, resolved.Digest.ToString(), tmp, importOptions);
    }

    /// <summary>Where a blob goes in the scratch area: the OCI layout's place for it. The digest was
    /// validated (algorithm and hex only) before it names a file.</summary>
    private static string BlobFile(TempArea tmp, Digest digest)
    {
        var path = digest.BlobPath(tmp.Path);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return path;
    }
}

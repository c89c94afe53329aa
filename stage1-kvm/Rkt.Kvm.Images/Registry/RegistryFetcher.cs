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
        var refName = reference.Tag is { } tag ? $"{reference.Name}:{tag}" : reference.Name;
        var image = OciLayoutReader.FromManifest(tmp.Path, resolved.Manifest, resolved.Digest, refName, format: "registry");

        // Every blob the store lacks is downloaded (a few at a time) while the import checks the
        // layers already here, in order: layer i is checked as soon as its download is complete.
        // The first failure, download or check, cancels the rest and is the one reported.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var gate = new SemaphoreSlim(options.ParallelDownloads);
        var progress = new LockedProgress(_progress);
        Exception? firstFailure = null;
        async Task Guard(Func<Task> work)
        {
            try { await work(); }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref firstFailure, e, null);
                stop.Cancel();
                throw;
            }
        }

        var ready = new Dictionary<string, Task>();
        for (int i = 0; i < layers.Count; i++)
        {
            var digest = image.Layers[i].BlobDigest!;
            if (ready.ContainsKey(digest.ToString())) continue; // the same blob twice (empty layers): fetched once
            if (store.TryLinkBlob(digest.ToString(), BlobFile(tmp, digest)))
            {
                Log.Debug("{Reference}: layer {Digest} is in the store already", reference, digest);
                ready[digest.ToString()] = Task.CompletedTask;
                continue;
            }
            var (index, size) = (i, layers[i].Size);
            ready[digest.ToString()] = Guard(async () =>
            {
                await gate.WaitAsync(stop.Token);
                try
                {
                    var advance = progress.Begin($"downloading layer {index + 1}/{layers.Count} {digest.Hex[..12]}", size);
                    await downloader.Download(digest, size, BlobFile(tmp, digest), $"layer {index + 1}/{layers.Count} ({digest})", n => advance(n), stop.Token);
                }
                finally { gate.Release(); }
            });
        }

        var importOptionsWithWait = importOptions with
        {
            Name = reference.AppcName, LayerReady = i => ready[image.Layers[i].BlobDigest!.ToString()],
        };
        ImageRecord? record = null;
        // Its own thread: the import is synchronous and blocks while it waits for a download.
        var import = Guard(() => Task.Factory.StartNew(
            () => record = new ImageImporter(store, progress).ImportFetched(image, reference.Canonical, resolved.Digest.ToString(), tmp, importOptionsWithWait),
            stop.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default));
        try { await Task.WhenAll([.. ready.Values, import]); }
        catch when (firstFailure is not null) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(firstFailure); }
        return record!;
    }

    /// <summary>Where a blob goes in the scratch area: the OCI layout's place for it. The digest was
    /// validated (algorithm and hex only) before it names a file.</summary>
    private static string BlobFile(TempArea tmp, Digest digest)
    {
        var path = digest.BlobPath(tmp.Path);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return path;
    }

    /// <summary>Downloads and the import report from several threads; the CLI's progress is not thread-safe.</summary>
    private sealed class LockedProgress(IImportProgress inner) : IImportProgress
    {
        private readonly Lock _lock = new();
        public void Step(string description, long totalBytes) { lock (_lock) inner.Step(description, totalBytes); }
        public void Advance(long bytes) { lock (_lock) inner.Advance(bytes); }

        public Action<long> Begin(string description, long totalBytes)
        {
            Action<long> advance;
            lock (_lock) advance = inner.Begin(description, totalBytes);
            return bytes => { lock (_lock) advance(bytes); };
        }
    }
}

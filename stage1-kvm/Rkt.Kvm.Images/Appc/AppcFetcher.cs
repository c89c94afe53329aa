using Rkt.Kvm.Images.Formats.Appc;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Trust;
using Serilog;

namespace Rkt.Kvm.Images.Appc;

/// <summary>
/// rkt's fetchers of appc images, each verifying the image's detached OpenPGP signature against
/// the keys trusted for the image's name unless <c>--insecure-options=image</c> (rkt's warning then):
/// <list type="bullet">
/// <item><c>fetch example.com/app:v1</c> (rkt's nameFetcher): the store as the pull policy says,
/// else meta discovery, the signature then the ACI into the store's scratch area; the signature is
/// checked with the keys for the name asked for before the ACI is read, and the manifest must
/// then name the image asked for. With no key trusted for the name, discovered keys are offered first.</item>
/// <item><c>fetch ./app.aci</c> (rkt's fileFetcher): the signature is <c>--signature</c> or
/// <c>./app.aci.asc</c>; the keys are those for the name the ACI's manifest gives.</item>
/// <item><c>fetch https://example.com/app.aci</c> (rkt's httpFetcher): the signature is
/// <c>https://example.com/app.aci.asc</c>, fetched first; the keys as for a file.</item>
/// </list>
/// Then, as rkt's fetch does, the image's dependencies (<see cref="DependencyFetcher"/>). Every
/// image is checked and prepared before any is committed: a refusal leaves the store as it was.
/// </summary>
public sealed class AppcFetcher(ImageStore store, TrustedKeyStore keys, RegistryOptions options, KeyReviewConsole console, IImportProgress? progress = null)
{
    private static ILogger Log => Serilog.Log.ForContext<AppcFetcher>();
    /// <summary>A detached signature is a few hundred bytes.</summary>
    private const long MaxSignatureBytes = 1 << 20;
    private readonly IImportProgress _progress = progress ?? NoProgress.Instance;

    /// <summary>rkt's <c>--trust-keys-from-https</c>, for keys discovered during the fetch.</summary>
    public bool TrustKeysFromHttps { get; init; }

    private bool Verify => !options.Insecure.HasFlag(InsecureOptions.Image);

    /// <summary>An image by name (and labels): rkt's name fetch.</summary>
    public ImageRecord Fetch(AppImageName requested, PullPolicy policy, ImportOptions importOptions, CancellationToken ct = default) =>
        WithDependencies(FindByName(requested, policy, importOptions, ct), policy, importOptions, ct);

    /// <summary>A local ACI file, with its signature <paramref name="signature"/> or, when null, the
    /// file named as the ACI with ".aci.asc" (rkt's fileFetcher).</summary>
    public ImageRecord FetchFile(string path, string? signature, PullPolicy policy, ImportOptions importOptions, CancellationToken ct = default)
    {
        path = Path.GetFullPath(path);
        WarnIfInsecure(tls: false);
        if (!Verify) return WithDependencies(Prepared(new ImageImporter(store, _progress).PrepareAci(path, importOptions)), policy, importOptions, ct);
        var asc = ReadSignature(signature ?? SignaturePath(path));
        // Checked and imported from a copy of our own: the file cannot change between the two.
        using var tmp = TempArea.Create(store.TmpDir, "import-");
        var copy = Path.Join(tmp.Path, AcIdentifier.Sanitize(Path.GetFileName(path)));
        File.Copy(path, copy);
        return WithDependencies(VerifyAndPrepare(copy, asc, Path.GetFileName(path), null, importOptions), policy, importOptions, ct);
    }

    /// <summary>An ACI at an http(s) URL and its signature at the URL with ".aci.asc" (rkt's
    /// httpFetcher). The store remembers the URL: <c>new</c> and <c>never</c> find it there.</summary>
    public ImageRecord FetchUrl(Uri url, PullPolicy policy, ImportOptions importOptions, string? signature = null, CancellationToken ct = default)
    {
        if (url.Scheme is not ("https" or "http"))
            throw new ImageException($"an unsupported URL scheme \"{url.Scheme}\": the only URL schemes supported for an image archive are http, https and file");
        if (url.Scheme == "http" && !options.Insecure.HasFlag(InsecureOptions.Http))
            throw new ImageException($"{HttpSession.ForLog(url)} is a plain-http URL; allow it with --insecure-options=http");
        var remote = url.ToString();
        var stored = store.FindRemote(remote);
        Found top;
        if (stored is not null && (policy != PullPolicy.Update || IsFresh(stored, DateTimeOffset.UtcNow))) top = Stored(stored);
        else if (policy == PullPolicy.Never) throw new ImageException($"image {HttpSession.ForLog(url)} is not in the store, and --pull-policy=never does not fetch it");
        else top = FetchUrlAsync(url, signature is null || !Verify ? null : ReadSignature(signature), importOptions with { Remote = remote }, stored, ct).GetAwaiter().GetResult();
        return WithDependencies(top, policy, importOptions, ct);
    }

    /// <summary>rkt's useCached: a URL's image is current for the <c>max-age</c> its server gave,
    /// counted from its download; until then even <c>update</c> does not ask again.</summary>
    private static bool IsFresh(ImageRecord stored, DateTimeOffset now)
    {
        if (stored is not { CacheMaxAge: > 0 and var maxAge, DownloadTime: { } downloaded } || now - downloaded >= TimeSpan.FromSeconds(maxAge)) return false;
        Log.Debug("{Url} was downloaded {Age} ago, within its max-age of {MaxAge} s: using the stored image", stored.Remote, now - downloaded, maxAge);
        return true;
    }

    /// <summary>rkt's ascPathFromImgPath: "x.aci" → "x.aci.asc", "x" → "x.aci.asc".</summary>
    internal static string SignaturePath(string aci) => (aci.EndsWith(".aci", StringComparison.Ordinal) ? aci[..^4] : aci) + ".aci.asc";

    /// <summary>The top image and every dependency prepared, then committed, dependencies first.</summary>
    private ImageRecord WithDependencies(Found top, PullPolicy policy, ImportOptions importOptions, CancellationToken ct)
    {
        var pending = new List<PreparedImport>();
        try
        {
            if (top.Pending is not null) pending.Add(top.Pending);
            var deps = new DependencyFetcher(store, app => FindByName(app, policy, importOptions, ct)).Resolve(top);
            pending.InsertRange(0, deps);
            ImageRecord? committed = null;
            foreach (var p in pending) committed = p.Commit();
            return top.Pending is null ? top.Record : committed!;
        }
        finally
        {
            foreach (var p in pending) p.Dispose();
        }
    }

    private Found Stored(ImageRecord record) => new(record, ManifestSummary.Parse(store.ReadManifest(record), record.DisplayName), null);

    private static Found Prepared(PreparedImport prepared) => new(prepared.Record, prepared.Manifest, prepared);

    /// <summary>The latest stored image of the name whose labels carry every label asked for.</summary>
    private ImageRecord? StoredByName(AppImageName app) =>
        store.List().Where(i => i.Name == app.Name && app.MatchesLabels(i.Labels)).MaxBy(i => i.ImportTime);

    private Found FindByName(AppImageName requested, PullPolicy policy, ImportOptions importOptions, CancellationToken ct)
    {
        var app = requested.WithPlatformDefaults();
        if (policy != PullPolicy.Update && StoredByName(app) is { } stored) return Stored(stored);
        if (policy == PullPolicy.Never)
            throw new ImageException($"image {requested} is not in the store, and --pull-policy=never does not fetch it");
        return FetchByNameAsync(app, importOptions, ct).GetAwaiter().GetResult();
    }

    private void WarnIfInsecure(bool tls)
    {
        if (tls && options.Insecure.HasFlag(InsecureOptions.Tls)) console.Err.WriteLine("rkt-kvm: warning: TLS verification has been disabled");
        if (!Verify) console.Err.WriteLine("rkt-kvm: warning: image signature verification has been disabled");
    }

    /// <summary>
    /// rkt's nameFetcher: discovery, then, as for a URL, the image the store keeps for the ACI URL
    /// discovery gave (its remote: the URL, ETag, max-age) decides: within its max-age it is the
    /// answer without asking, otherwise its ETag goes as If-None-Match and a 304 keeps it. A stored
    /// image must also be the one asked for (name and labels): a template without <c>{version}</c>
    /// gives every version the same URL.
    /// </summary>
    private async Task<Found> FetchByNameAsync(AppImageName app, ImportOptions importOptions, CancellationToken ct)
    {
        using var http = new HttpSession(options);
        var endpoint = await new AppcDiscovery(http).DiscoverImage(app, ct);
        Log.Debug("{App}: ACI {Aci}, signature {Asc}", app, HttpSession.ForLog(endpoint.Aci), HttpSession.ForLog(endpoint.Asc));
        var remote = endpoint.Aci.ToString();
        var stored = store.FindRemote(remote) is { } r && r.Name == app.Name && app.MatchesLabels(r.Labels) ? r : null;
        if (stored is not null && IsFresh(stored, DateTimeOffset.UtcNow)) return Stored(stored);
        WarnIfInsecure(tls: true);
        if (Verify) OfferDiscoveredKeys(app.Name, ct);
        var checkedOptions = importOptions with { Remote = remote, CheckAciManifest = manifest => CheckManifest(app, manifest, HttpSession.ForLog(endpoint.Aci)) };
        return await Download(http, endpoint.Aci, endpoint.Asc, app.Name, checkedOptions, ct, stored: stored);
    }

    /// <param name="signature">a local signature (<c>--signature</c>), or null to fetch the URL's.</param>
    /// <param name="stored">the image fetched from the URL before: its ETag goes as If-None-Match, and a 304 answer keeps it.</param>
    private async Task<Found> FetchUrlAsync(Uri url, byte[]? signature, ImportOptions importOptions, ImageRecord? stored, CancellationToken ct)
    {
        using var http = new HttpSession(options);
        WarnIfInsecure(tls: true);
        var asc = new Uri(url.GetLeftPart(UriPartial.Authority) + SignaturePath(url.AbsolutePath) + url.Query);
        return await Download(http, url, asc, null, importOptions, ct, signature, stored);
    }

    /// <summary>
    /// The signature first, as rkt (a missing one fails before the large image is downloaded),
    /// then the ACI, into the store's scratch area; verified (with the keys for
    /// <paramref name="name"/>, or for the name its manifest gives when null) and prepared.
    /// </summary>
    private async Task<Found> Download(HttpSession http, Uri aciUrl, Uri ascUrl, string? name, ImportOptions importOptions, CancellationToken ct,
        byte[]? signature = null, ImageRecord? stored = null)
    {
        using var tmp = TempArea.Create(store.TmpDir, "import-");
        var what = HttpSession.ForLog(aciUrl);
        // Named as on the server (for the progress lines), never a path of the server's choosing.
        var fileName = AcIdentifier.Sanitize(Path.GetFileName(aciUrl.AbsolutePath));
        if (Verify && signature is null)
        {
            var asc = Path.Join(tmp.Path, fileName + ".asc");
            await DownloadFile(http, ascUrl, asc, MaxSignatureBytes, $"the signature {HttpSession.ForLog(ascUrl)}", $"downloading signature {fileName}.asc", ct);
            signature = await File.ReadAllBytesAsync(asc, ct);
        }
        var aci = Path.Join(tmp.Path, fileName);
        (string? ETag, int? MaxAge)? cache;
        // What arrived of the ACI before a connection broke is kept (rkt's resumable session): the
        // retry, or the next fetch of the URL, asks for the rest. Nothing of it is checked or stored
        // before the whole is here, moved next to the signature.
        using (var partial = PartialDownload.TryOpen(store.TmpDir, aciUrl.ToString()))
        {
            try { cache = await DownloadFile(http, aciUrl, aci, importOptions.Policy.MaxBytes, what, $"downloading ACI {fileName}", ct, stored?.ETag, partial); }
            catch (Exception e) when (partial is not null && !HttpSession.IsNetworkFailure(e, ct))
            {
                partial.Drop(); // a refusal another attempt would meet again
                throw;
            }
            if (cache is null) partial?.Drop();
            else partial?.MoveTo(aci);
        }
        if (cache is null)
        {
            Log.Debug("{Url} is not modified (ETag {ETag}): using the stored image", what, stored!.ETag);
            return Stored(stored);
        }
        var found = VerifyAndPrepare(aci, signature, what, name, importOptions);
        // rkt's remote store: what the next fetch of the URL sends, and how long it may skip asking.
        found.Pending!.Record = found.Record with { ETag = cache.Value.ETag, CacheMaxAge = cache.Value.MaxAge, DownloadTime = DateTimeOffset.UtcNow };
        return found with { Record = found.Pending.Record };
    }

    /// <summary>Checks <paramref name="aci"/> against <paramref name="signature"/> (none: not
    /// checked) with the keys trusted for <paramref name="name"/>, or, as rkt's validator, for the
    /// name the ACI's manifest gives; then checks and prepares the import.</summary>
    private Found VerifyAndPrepare(string aci, byte[]? signature, string what, string? name, ImportOptions importOptions)
    {
        if (signature is not null)
        {
            name ??= ImageImporter.ReadAciManifest(aci).Name;
            PublicKeyFile signer;
            using (var signed = File.OpenRead(aci))
                signer = SignatureVerifier.Verify(name, keys.KeysFor(name), signed, signature, what, DateTimeOffset.UtcNow);
            console.Err.WriteLine($"rkt-kvm: signature verified: {string.Join(", ", signer.UserIds.DefaultIfEmpty(signer.DisplayFingerprint))}");
            // The import reads the manifest again: it must be the one whose name picked the keys.
            var verifiedName = name;
            var check = importOptions.CheckAciManifest;
            importOptions = importOptions with
            {
                CheckAciManifest = manifest =>
                {
                    check?.Invoke(manifest);
                    if (manifest.Name != verifiedName) throw new ImageException($"{what}: the image is named \"{manifest.Name}\", but its signature was checked for \"{verifiedName}\"");
                },
            };
        }
        return Prepared(new ImageImporter(store, _progress).PrepareAci(aci, importOptions));
    }

    /// <summary>rkt's maybeFetchPubKeys: with no prefix key for the name yet, discovered keys are
    /// shown for review. A failure here is only reported: a root key may still verify the image.</summary>
    private void OfferDiscoveredKeys(string name, CancellationToken ct)
    {
        if (keys.HasPrefixKeys(name))
        {
            Log.Debug("keys already exist for prefix {Name}, not fetching again", name);
            return;
        }
        // As rkt: keys come over plain http only with --insecure-options=pubkey,http, and not at all
        // when TLS checks are off, unless pubkey says so.
        bool pubkey = options.Insecure.HasFlag(InsecureOptions.Pubkey);
        if (options.Insecure.HasFlag(InsecureOptions.Tls) && !pubkey) return;
        if (pubkey) console.Err.WriteLine("rkt-kvm: signing keys may be downloaded from an insecure connection");
        var trust = new KeyTrust(keys, options, console) { AllowHttp = pubkey && options.Insecure.HasFlag(InsecureOptions.Http), TrustKeysFromHttps = TrustKeysFromHttps };
        IReadOnlyList<string> locations;
        // Most names publish no keys (their signer's key is trusted already): quiet unless --debug.
        try { locations = trust.Discover(name, ct); }
        catch (ImageException e) { Log.Debug("{Message}", e.Message); return; }
        try { trust.Add(locations, name, ask: true, ct); }
        catch (ImageException e) { console.Err.WriteLine($"rkt-kvm: {e.Message}"); }
    }

    /// <summary>One download into a file, as large as <paramref name="limit"/>, shown as a progress step.</summary>
    /// <param name="ifNoneMatch">the ETag of the stored copy, if any.</param>
    /// <param name="partial">where the download goes instead of <paramref name="dest"/>, continuing
    /// what it holds (<see cref="RangeResume"/>), also from one attempt to the next.</param>
    /// <returns>the response's ETag and max-age; null when the server says the stored copy is current (304).</returns>
    private async Task<(string? ETag, int? MaxAge)?> DownloadFile(HttpSession http, Uri url, string dest, long limit, string what, string step, CancellationToken ct,
        string? ifNoneMatch = null, PartialDownload? partial = null) =>
        await http.Retry<(string?, int?)?>(what, async ct =>
        {
            var resume = partial?.ResumePoint;
            var response = await http.GetOk(url, what, ct, ifNoneMatch, resume);
            var start = RangeResume.Start(response, resume);
            if (start is null)
            {
                response.Dispose();
                Log.Debug("{Url}: the server cannot send the rest after byte {Held}; starting again", what, resume!.Offset);
                resume = null;
                response = await http.GetOk(url, what, ct, ifNoneMatch);
                start = 0;
            }
            using var _ = response;
            if (response.StatusCode == System.Net.HttpStatusCode.NotModified) return null;
            var length = response.Content.Headers.ContentLength + start;
            if (length > limit) throw new ImageException($"{what} is larger than {limit} bytes");
            if (start > 0) Log.Debug("{Url}: continuing after {Held} bytes (If-Range {Validator})", what, start, resume!.Validator);
            else partial?.Restart(RangeResume.Validator(response));
            var advance = _progress.Begin(step, length ?? 0);
            if (start > 0) advance(start.Value);
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await using var file = new FileStream(partial?.Path ?? dest, start > 0 ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
            await BodyCopier.Copy(body, file, null, length, limit, what, http.Options, n => advance(n), ct, start.Value);
            var cacheControl = response.Headers.CacheControl;
            int? maxAge = cacheControl is null || cacheControl.NoCache || cacheControl.NoStore ? null : (int?)cacheControl.MaxAge?.TotalSeconds;
            return (response.Headers.ETag?.ToString(), maxAge);
        }, ct);

    /// <summary>A local signature file, as rkt's localAscFetcher opens it.</summary>
    private static byte[] ReadSignature(string path)
    {
        try
        {
            using var file = File.OpenRead(path);
            if (file.Length > MaxSignatureBytes) throw new IOException($"{path} is larger than {MaxSignatureBytes} bytes");
            var bytes = new byte[file.Length];
            file.ReadExactly(bytes);
            return bytes;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException($"error opening signature file: {e.Message} (an unsigned image needs --insecure-options=image)", e);
        }
    }

    /// <summary>rkt's validator: the image must be the one asked for, or a key trusted for one
    /// name could put an image of another name into the store.</summary>
    private static void CheckManifest(AppImageName app, ManifestSummary manifest, string what)
    {
        if (manifest.Name != app.Name)
            throw new ImageException($"{what}: the image is named \"{manifest.Name}\", but \"{app.Name}\" was asked for");
        foreach (var (label, value) in app.Labels)
        {
            if (!manifest.Labels.TryGetValue(label, out var actual))
                throw new ImageException($"{what}: the image has no label \"{label}\" (\"{value}\" was asked for)");
            if (actual != value)
                throw new ImageException($"{what}: its label \"{label}\" is \"{actual}\", but \"{value}\" was asked for");
        }
    }
}

/// <summary>An image a fetch found: in the store already (<see cref="Pending"/> null) or prepared
/// for the store, not yet committed.</summary>
internal sealed record Found(ImageRecord Record, ManifestSummary Manifest, PreparedImport? Pending);

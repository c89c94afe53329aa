using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Trust;
using Serilog;

namespace Rkt.Kvm.Images.Appc;

/// <summary>
/// <c>fetch example.com/app:v1</c>, rkt's name fetch: the store as the pull policy says (name and
/// every label asked for, os and arch defaulting to linux/amd64), else meta discovery, then the
/// ACI and its <c>.asc</c> into the store's scratch area. The signature is checked against the
/// keys trusted for the name before the ACI is read at all; the import then checks that the
/// manifest names the image asked for, before the store commits. A refusal leaves the store as it
/// was. With no key trusted for the name, keys are discovered and offered for review first, as rkt
/// does; <c>--insecure-options=image</c> skips the signature, with rkt's warning.
/// </summary>
public sealed class AppcFetcher(ImageStore store, TrustedKeyStore keys, RegistryOptions options, KeyReviewConsole console, IImportProgress? progress = null)
{
    private static ILogger Log => Serilog.Log.ForContext<AppcFetcher>();
    /// <summary>A detached signature is a few hundred bytes.</summary>
    private const long MaxSignatureBytes = 1 << 20;

    /// <summary>rkt's <c>--trust-keys-from-https</c>, for keys discovered during the fetch.</summary>
    public bool TrustKeysFromHttps { get; init; }

    public ImageRecord Fetch(AppImageName requested, PullPolicy policy, ImportOptions importOptions, CancellationToken ct = default)
    {
        var app = requested.WithPlatformDefaults();
        if (policy != PullPolicy.Update && Stored(app) is { } stored) return stored;
        if (policy == PullPolicy.Never)
            throw new ImageException($"image {requested} is not in the store, and --pull-policy=never does not fetch it");
        return FetchAsync(app, importOptions, ct).GetAwaiter().GetResult();
    }

    /// <summary>The latest stored image of the name whose labels carry every label asked for.</summary>
    private ImageRecord? Stored(AppImageName app) =>
        store.List().Where(i => i.Name == app.Name && app.MatchesLabels(i.Labels)).MaxBy(i => i.ImportTime);

    private async Task<ImageRecord> FetchAsync(AppImageName app, ImportOptions importOptions, CancellationToken ct)
    {
        using var http = new HttpSession(options);
        var endpoint = await new AppcDiscovery(http).DiscoverImage(app, ct);
        Log.Debug("{App}: ACI {Aci}, signature {Asc}", app, HttpSession.ForLog(endpoint.Aci), HttpSession.ForLog(endpoint.Asc));
        bool verify = !options.Insecure.HasFlag(InsecureOptions.Image);
        if (options.Insecure.HasFlag(InsecureOptions.Tls)) console.Err.WriteLine("rkt-kvm: warning: TLS verification has been disabled");
        if (!verify) console.Err.WriteLine("rkt-kvm: warning: image signature verification has been disabled");
        else OfferDiscoveredKeys(app.Name, ct);

        using var tmp = TempArea.Create(store.TmpDir, "import-");
        var what = HttpSession.ForLog(endpoint.Aci);
        // The signature first, as rkt: a missing one fails before the (large) image is downloaded.
        var signature = verify ? await http.GetSmall(endpoint.Asc, MaxSignatureBytes, $"the signature {HttpSession.ForLog(endpoint.Asc)}", ct) : null;
        // Named as on the server (for the import's progress line), never a path of the server's choosing.
        var aci = Path.Join(tmp.Path, Formats.Appc.AcIdentifier.Sanitize(Path.GetFileName(endpoint.Aci.AbsolutePath)));
        await Download(http, endpoint.Aci, aci, importOptions.Policy.MaxBytes, what, ct);
        if (signature is not null)
        {
            using var signed = File.OpenRead(aci);
            var signer = SignatureVerifier.Verify(app.Name, keys.KeysFor(app.Name), signed, signature, what, DateTimeOffset.UtcNow);
            console.Err.WriteLine($"rkt-kvm: signature verified: {string.Join(", ", signer.UserIds.DefaultIfEmpty(signer.DisplayFingerprint))}");
        }
        var checkedOptions = importOptions with { Remote = app.Canonical, CheckAciManifest = manifest => CheckManifest(app, manifest, what) };
        return progress is null ? new ImageImporter(store).Import(aci, checkedOptions) : new ImageImporter(store, progress).Import(aci, checkedOptions);
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

    private static async Task Download(HttpSession http, Uri url, string dest, long limit, string what, CancellationToken ct) =>
        await http.Retry(what, async ct =>
        {
            using var response = await http.GetOk(url, what, ct);
            if (response.Content.Headers.ContentLength > limit) throw new ImageException($"{what} is larger than {limit} bytes (--max-size)");
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await using var file = new FileStream(dest, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
            await BodyCopier.Copy(body, file, null, response.Content.Headers.ContentLength, limit, what, http.Options, null, ct);
            return true;
        }, ct);

    /// <summary>rkt's validator: the image must be the one asked for, or a key trusted for one
    /// name could put an image of another name into the store.</summary>
    private static void CheckManifest(AppImageName app, Formats.Appc.ManifestSummary manifest, string what)
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

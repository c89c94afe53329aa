using System.Security.Cryptography;
using System.Text.Json;
using Rkt.Kvm.Images.Formats;
using Rkt.Kvm.Images.Formats.Oci;
using Serilog;

namespace Rkt.Kvm.Images.Registry;

/// <summary>An image manifest from a registry, checked: its digest, and its config and layer
/// descriptors within the limits.</summary>
public sealed record ResolvedManifest(OciManifestOrIndex Manifest, Digest Digest, string MediaType);

/// <summary>
/// Fetches a reference's manifest: Docker schema 2 or OCI, through a manifest list or OCI index
/// to its linux/amd64 image. Every manifest is size-capped, hashed and, when asked for by digest,
/// checked against it; the registry's <c>Docker-Content-Digest</c> must agree. Descriptors are
/// validated before anything uses them: digests (which become file names), sizes (the layer
/// budget) and the number of layers.
/// </summary>
internal sealed class ManifestResolver(RegistryHttp http, long maxImageBytes)
{
    private static ILogger Log => Serilog.Log.ForContext<ManifestResolver>();

    public const string OciManifest = "application/vnd.oci.image.manifest.v1+json";
    public const string OciIndex = "application/vnd.oci.image.index.v1+json";
    public const string DockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
    public const string DockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
    private const string Accept = $"{OciIndex}, {DockerList}, {OciManifest}, {DockerManifest}";

    public async Task<ResolvedManifest> Resolve(ImageReference reference, CancellationToken ct)
    {
        var (doc, digest, type) = await Fetch(reference.ManifestReference, reference.Digest, ct);
        if (IsIndex(doc, type))
        {
            var chosen = doc.Manifests!.FirstOrDefault(m => m.Platform is { Os: "linux", Architecture: "amd64" })
                ?? throw new ImageException($"{reference} has no linux/amd64 image (it offers {Platforms(doc)})");
            var chosenDigest = Digest.Parse(chosen.Digest, $"the linux/amd64 entry of {reference}'s index");
            Log.Debug("{Reference}: index {Index} -> linux/amd64 manifest {Manifest}", reference, digest, chosenDigest);
            (doc, digest, type) = await Fetch(chosenDigest.ToString(), chosenDigest, ct);
            if (IsIndex(doc, type)) throw new ImageException($"{reference}: the linux/amd64 entry of its index is another index");
        }
        Validate(doc, digest, http.Options.MaxLayers, maxImageBytes);
        return new ResolvedManifest(doc, digest, type);
    }

    private async Task<(OciManifestOrIndex Doc, Digest Digest, string Type)> Fetch(string manifestReference, Digest? expected, CancellationToken ct)
    {
        var what = $"manifest {http.Repository}{(manifestReference.Contains(':') ? '@' : ':')}{manifestReference}";
        var limit = http.Options.MaxManifestBytes;
        var (bytes, contentType, headerDigest) = await http.Retry(what, async ct =>
        {
            var url = await http.Url($"manifests/{manifestReference}", ct);
            using var response = await http.Get(url, Accept, what, ct);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(http.Options.ResponseTimeout);
            var body = await HttpSession.ReadLimited(response, limit, what, timeout.Token);
            var header = response.Headers.TryGetValues("Docker-Content-Digest", out var values) ? values.FirstOrDefault() : null;
            return (body, response.Content.Headers.ContentType?.MediaType, header);
        }, ct);

        var algorithm = expected?.HashName ?? HashAlgorithmName.SHA256;
        var hex = Convert.ToHexStringLower(algorithm == HashAlgorithmName.SHA512 ? SHA512.HashData(bytes) : SHA256.HashData(bytes));
        var digest = new Digest(algorithm == HashAlgorithmName.SHA512 ? "sha512" : "sha256", hex);
        if (expected is not null && expected.Hex != hex)
            throw new ImageException($"{what} does not match its digest (got {digest})");
        if (Digest.TryParse(headerDigest, out var claimed) && claimed.Algorithm == digest.Algorithm && claimed.Hex != hex)
            throw new ImageException($"{what}: the registry says its digest is {claimed} but its content is {digest}");

        var (doc, type) = Parse(bytes, contentType, what);
        return (doc, digest, type);
    }

    /// <summary>A manifest or index as the registry sent it, refused unless it is schema 2 of a known media type.</summary>
    internal static (OciManifestOrIndex Doc, string Type) Parse(byte[] bytes, string? contentType, string what)
    {
        OciManifestOrIndex doc;
        try { doc = JsonSerializer.Deserialize<OciManifestOrIndex>(bytes) ?? throw new ImageException($"{what} is empty"); }
        catch (JsonException e) { throw new ImageException($"{what} is not valid JSON: {e.Message}", e); }
        var type = doc.MediaType ?? contentType ?? "";
        if (doc.SchemaVersion == 1 || type.StartsWith("application/vnd.docker.distribution.manifest.v1", StringComparison.Ordinal))
            throw new ImageException($"{what} is a Docker schema 1 manifest, which is not supported: push the image again with a current client");
        if (doc.SchemaVersion != 2) throw new ImageException($"{what} has schemaVersion {doc.SchemaVersion}; expected 2");
        if (type is not (OciManifest or OciIndex or DockerManifest or DockerList) && !(type is "" or "application/json"))
            throw new ImageException($"{what} has an unsupported media type \"{type}\"");
        return (doc, type);
    }

    internal static bool IsIndex(OciManifestOrIndex doc, string type) =>
        type is OciIndex or DockerList || (doc.Manifests is not null && doc.Config is null);

    private static string Platforms(OciManifestOrIndex index) =>
        string.Join(", ", index.Manifests!.Select(m => $"{m.Platform?.Os ?? "?"}/{m.Platform?.Architecture ?? "?"}").Distinct());

    /// <summary>Everything a hostile manifest could use against us is refused here, before a byte of a blob is read.</summary>
    internal static void Validate(OciManifestOrIndex manifest, Digest digest, int maxLayers, long maxImageBytes)
    {
        var what = $"manifest {digest}";
        if (manifest.Config is not { } config) throw new ImageException($"{what} has no config");
        Digest.Parse(config.Digest, $"{what}'s config");
        if (config.Size is <= 0 or > SourceFiles.MaxJsonBytes)
            throw new ImageException($"{what}'s config size {config.Size} is not between 1 and {SourceFiles.MaxJsonBytes} bytes");
        var layers = manifest.Layers ?? [];
        if (layers.Count > maxLayers)
            throw new ImageException($"{what} lists {layers.Count} layers; at most {maxLayers} are accepted");
        long total = 0;
        for (int i = 0; i < layers.Count; i++)
        {
            var layer = layers[i];
            var layerDigest = Digest.Parse(layer.Digest, $"layer {i + 1} of {what}");
            if (layer.Size <= 0) throw new ImageException($"layer {i + 1} ({layerDigest}) of {what} has an invalid size {layer.Size}");
            if (layer.Size > maxImageBytes || (total += layer.Size) > maxImageBytes)
                throw new ImageException($"{what}'s layers add up to more than the size limit of {maxImageBytes} bytes (--max-size)");
        }
    }
}

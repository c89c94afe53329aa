using System.Text;
using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Appc;
using Rkt.Kvm.Images.Formats;
using Rkt.Kvm.Images.Registry;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// What a user or a registry hands the registry client as text, before any download: the image
/// reference (<c>docker://…</c>), a <c>WWW-Authenticate</c> challenge, a manifest or index. The
/// whole input goes to all three. Only <see cref="ImageException"/> may escape the reference and
/// manifest parsers, nothing the challenge parser; what parses must keep the promises the rest of
/// the client relies on: a reference builds the registry URLs and parses back to itself from its
/// canonical form (less a tag beside a digest), a validated manifest's digests name files inside
/// the blob directory.
/// </summary>
public sealed class RegistryInputTarget : IFuzzTarget
{
    public string Name => "registry-input";
    public string Covers => "ImageReference.Parse (Docker Hub rules), AuthChallenge.TryParse, ManifestResolver.Parse/IsIndex/Validate, " +
        "appc discovery: AppImageName.TryParse, DiscoveryMeta.Parse, DiscoveryTemplate.Render";

    public void Run(ReadOnlySpan<byte> input)
    {
        var text = Encoding.UTF8.GetString(input);
        Reference(text);
        _ = AuthChallenge.TryParse(text);
        Manifest(input.ToArray());
        Discovery(text);
    }

    /// <summary>The input as an appc image name and as a discovery page: neither may throw, a name
    /// that parses is an AC identifier, and every meta tag found is an ac-* tag with a prefix and a URI.</summary>
    private static void Discovery(string text)
    {
        var app = AppImageName.TryParse(text, out var parsed, out _) ? parsed : new AppImageName("example.com/app", new Dictionary<string, string>());
        if (!Rkt.Kvm.Images.Formats.Appc.AcIdentifier.IsValid(app.Name)) throw new FuzzFindingException($"name \"{app.Name}\" parsed from \"{text}\" is no AC identifier");
        foreach (var meta in DiscoveryMeta.Parse(text))
        {
            if (!meta.Name.StartsWith("ac-", StringComparison.Ordinal) || meta.Prefix.Length == 0 || meta.Uri.Length == 0)
                throw new FuzzFindingException($"meta tag {meta} is not a complete ac-* tag");
            _ = DiscoveryTemplate.Render(meta.Uri, app);
        }
    }

    private static void Reference(string text)
    {
        ImageReference reference;
        try { reference = ImageReference.Parse(text.StartsWith("oci://", StringComparison.Ordinal) ? text : "docker://" + text); }
        catch (ImageException e)
        {
            FuzzLog.Note($"registry-input: reference refused: {e.Message}");
            return;
        }
        FuzzLog.Note($"registry-input: reference {reference}");
        if (reference.Repository.Split('/').Any(p => p is "" or "." or ".."))
            throw new FuzzFindingException($"repository \"{reference.Repository}\" has an empty or dot component");
        try { _ = new Uri(new Uri($"https://{reference.Registry}/"), $"/v2/{reference.Repository}/manifests/{reference.ManifestReference}"); }
        catch (UriFormatException e) { throw new FuzzFindingException($"reference {reference} makes no URL", e); }
        ImageReference again;
        try { again = ImageReference.Parse($"{reference.Scheme}://{reference.Canonical}"); }
        catch (ImageException e) { throw new FuzzFindingException($"the canonical form of {reference} does not parse", e); }
        // The canonical form names the content: with a digest, the tag is not part of it.
        if (again != (reference.Digest is null ? reference : reference with { Tag = null }))
            throw new FuzzFindingException($"{reference} parses back as {again}");
    }

    private static void Manifest(byte[] bytes)
    {
        var digest = new Digest("sha256", new string('0', 64));
        try
        {
            var (doc, type) = ManifestResolver.Parse(bytes, null, "manifest");
            if (ManifestResolver.IsIndex(doc, type))
            {
                var chosen = doc.Manifests?.FirstOrDefault(m => m.Platform is { Os: "linux", Architecture: "amd64" });
                if (chosen is not null) Digest.Parse(chosen.Digest, "the linux/amd64 entry");
                return;
            }
            ManifestResolver.Validate(doc, digest, maxLayers: 256, maxImageBytes: 32L << 30);
            const string root = "/store/tmp/import-x";
            foreach (var layer in doc.Layers ?? [])
            {
                var path = Path.GetFullPath(Digest.Parse(layer.Digest, "a layer").BlobPath(root));
                if (!path.StartsWith(root + "/blobs/", StringComparison.Ordinal))
                    throw new FuzzFindingException($"layer digest {layer.Digest} names {path}, outside the blob directory");
            }
        }
        catch (ImageException e) { FuzzLog.Note($"registry-input: manifest refused: {e.Message}"); }
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        yield return ("hub-name", "busybox"u8.ToArray());
        yield return ("registry-port-digest", Encoding.UTF8.GetBytes($"localhost:5000/team/app:v1.2@sha256:{new string('a', 64)}"));
        yield return ("oci-scheme", "oci://ghcr.io/o/r:tag"u8.ToArray());
        yield return ("bearer-challenge", """Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull" """u8.ToArray());
        yield return ("basic-challenge", """Basic realm="Registry \"Realm\"" """u8.ToArray());
        var layer = $$"""{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{{new string('b', 64)}}","size":1234}""";
        yield return ("oci-manifest", Encoding.UTF8.GetBytes($$"""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
             "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{{new string('c', 64)}}","size":500},
             "layers":[{{layer}},{{layer}}]}
            """));
        yield return ("appc-discovery-page", """
            <!DOCTYPE html><html><head><!-- <meta name="ac-discovery" content="x y"> -->
            <META name="ac-discovery" content="example.com https://example.com/{name}-{version}-{os}-{arch}.{ext}?a=1&amp;b=2">
            <meta name=ac-discovery-pubkeys content='example.com/app https://example.com/pubkeys.gpg'/>
            <script>"<meta name='ac-discovery' content='example.com https://no'>"</script></head></html>
            """u8.ToArray());
        yield return ("appc-name", "example.com/app:v1.0,channel=beta,os=linux"u8.ToArray());
        yield return ("docker-list", Encoding.UTF8.GetBytes($$$"""
            {"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
             {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:{{{new string('d', 64)}}}","size":700,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
             {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:{{{new string('e', 64)}}}","size":700,"platform":{"architecture":"amd64","os":"linux"}}]}
            """));
    }
}

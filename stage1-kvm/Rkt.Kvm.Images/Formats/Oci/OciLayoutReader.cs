using Rkt.Kvm.Images.Formats.Oci;

namespace Rkt.Kvm.Images.Formats.Oci;

/// <summary>
/// Resolves an image in an OCI image layout directory: by ref name or digest (or the only image
/// there), through nested indexes to the linux/amd64 manifest, then its config and layers. Every
/// JSON blob on the way is checked against its digest; layers are checked while they stream.
/// </summary>
public static class OciLayoutReader
{
    public const string RefNameAnnotation = "org.opencontainers.image.ref.name";

    public static bool IsLayout(string dir) => File.Exists(Path.Join(dir, "oci-layout")) && File.Exists(Path.Join(dir, "index.json"));

    public static LayeredImage Read(string dir, string? reference)
    {
        var index = SourceFiles.ReadJson<OciManifestOrIndex>(Path.Join(dir, "index.json"), null, "the OCI layout's index.json");
        var chosen = Choose(index.Manifests ?? [], reference, dir);
        string? refName = chosen.Annotations?.GetValueOrDefault(RefNameAnnotation);

        // An index may point at further indexes (multi-platform images): descend to a manifest.
        for (int depth = 0; ; depth++)
        {
            if (depth > 8) throw new ImageException("the OCI layout's indexes nest too deeply");
            var digest = Digest.Parse(chosen.Digest, "a manifest descriptor");
            var doc = SourceFiles.ReadJson<OciManifestOrIndex>(digest.BlobPath(dir), digest, $"manifest {digest}");
            if (doc.Manifests is { } nested && doc.Config is null)
            {
                chosen = nested.FirstOrDefault(m => m.Platform is { Os: "linux", Architecture: "amd64" })
                    ?? throw new ImageException($"index {digest} has no linux/amd64 image");
                continue;
            }
            return FromManifest(dir, doc, digest, refName);
        }
    }

    private static OciDescriptor Choose(List<OciDescriptor> manifests, string? reference, string dir)
    {
        if (reference is not null)
        {
            var match = manifests.FirstOrDefault(m => m.Digest == reference || m.Annotations?.GetValueOrDefault(RefNameAnnotation) == reference);
            if (match is not null) return match;
            throw new ImageException($"the OCI layout {dir} has no image \"{reference}\" (refs: {RefList(manifests)})");
        }
        return manifests.Count switch
        {
            1 => manifests[0],
            0 => throw new ImageException($"the OCI layout {dir} holds no image"),
            _ => throw new ImageException($"the OCI layout {dir} holds {manifests.Count} images; choose one with --ref (refs: {RefList(manifests)})"),
        };
    }

    private static string RefList(List<OciDescriptor> manifests) =>
        string.Join(", ", manifests.Select(m => m.Annotations?.GetValueOrDefault(RefNameAnnotation) ?? m.Digest));

    /// <summary>An image from its manifest, its blobs at <c>blobs/ALG/HEX</c> under <paramref name="dir"/>
    /// (a layout, or the scratch directory a registry fetch downloads into).</summary>
    internal static LayeredImage FromManifest(string dir, OciManifestOrIndex manifest, Digest manifestDigest, string? refName, string format = "oci")
    {
        var configDigest = Digest.Parse(manifest.Config?.Digest, $"manifest {manifestDigest}'s config");
        var config = ImageConfig.Parse(SourceFiles.Read(configDigest.BlobPath(dir), configDigest, $"config {configDigest}"), $"config {configDigest}");
        var descriptors = manifest.Layers ?? [];
        var diffIds = config.RootFs?.DiffIds ?? [];
        if (diffIds.Count != descriptors.Count)
            throw new ImageException($"manifest {manifestDigest} lists {descriptors.Count} layers but its config has {diffIds.Count} diff_ids");
        var layers = descriptors.Select((d, i) =>
        {
            var digest = Digest.Parse(d.Digest, $"layer {i + 1} of manifest {manifestDigest}");
            return new LayerSource(digest.BlobPath(dir), digest, Digest.Parse(diffIds[i], $"diff_id {i + 1}"), d.Size);
        }).ToList();
        return new LayeredImage(format, config, configDigest, layers, refName);
    }
}

using Rkt.Kvm.Images.Formats.Oci;

namespace Rkt.Kvm.Images.Formats.Docker;

/// <summary>
/// Resolves an image in an unpacked <c>docker save</c> archive: manifest.json names the config
/// and the layer tars; the config's diff_ids are the layers' digests (of their uncompressed
/// bytes), checked while the layers stream.
/// </summary>
public static class DockerArchiveReader
{
    public static bool IsArchive(string dir) => File.Exists(Path.Join(dir, "manifest.json"));

    public static LayeredImage Read(string dir, string? reference)
    {
        var entries = SourceFiles.ReadJson<List<DockerManifestEntry>>(Path.Join(dir, "manifest.json"), null, "docker manifest.json");
        var entry = Choose(entries, reference);
        var configPath = SourceFiles.Inside(dir, entry.Config, "docker manifest.json");
        // docker names the config after its own digest ("<hex>.json" or "blobs/sha256/<hex>").
        var configName = Path.GetFileNameWithoutExtension(entry.Config!);
        Digest.TryParse("sha256:" + configName, out var configDigest);
        var configBytes = SourceFiles.Read(configPath, configDigest, $"config {entry.Config}");
        configDigest ??= new Digest("sha256", Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(configBytes)));
        var config = ImageConfig.Parse(configBytes, $"config {entry.Config}");
        var layerPaths = entry.Layers ?? [];
        var diffIds = config.RootFs?.DiffIds ?? [];
        if (diffIds.Count != layerPaths.Count)
            throw new ImageException($"docker manifest.json lists {layerPaths.Count} layers but the config has {diffIds.Count} diff_ids");
        var layers = layerPaths.Select((p, i) => new LayerSource(
            SourceFiles.Inside(dir, p, "docker manifest.json"), null, Digest.Parse(diffIds[i], $"diff_id {i + 1}"), null)).ToList();
        var tag = reference ?? entry.RepoTags?.FirstOrDefault();
        return new LayeredImage("docker-archive", config, configDigest, layers, tag);
    }

    private static DockerManifestEntry Choose(List<DockerManifestEntry> entries, string? reference)
    {
        if (reference is not null)
            return entries.FirstOrDefault(e => e.RepoTags?.Contains(reference) == true)
                ?? throw new ImageException($"the docker archive has no image \"{reference}\" (tags: {string.Join(", ", entries.SelectMany(e => e.RepoTags ?? []))})");
        return entries.Count switch
        {
            1 => entries[0],
            0 => throw new ImageException("the docker archive holds no image"),
            _ => throw new ImageException($"the docker archive holds {entries.Count} images; choose one with --ref (tags: {string.Join(", ", entries.SelectMany(e => e.RepoTags ?? []))})"),
        };
    }
}

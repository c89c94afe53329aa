using System.Text.Json;
using System.Text.Json.Serialization;

namespace Rkt.Kvm.Images.Formats.Oci;

/// <summary>The parts of the OCI image spec (and docker's matching JSON) we read.</summary>
public sealed class OciDescriptor
{
    [JsonPropertyName("mediaType")] public string? MediaType { get; set; }
    [JsonPropertyName("digest")] public string? Digest { get; set; }
    [JsonPropertyName("size")] public long Size { get; set; }
    [JsonPropertyName("annotations")] public Dictionary<string, string>? Annotations { get; set; }
    [JsonPropertyName("platform")] public OciPlatform? Platform { get; set; }
}

public sealed class OciPlatform
{
    [JsonPropertyName("architecture")] public string? Architecture { get; set; }
    [JsonPropertyName("os")] public string? Os { get; set; }
}

/// <summary>An image index and an image manifest share one shape here: an index lists
/// manifests, a manifest has a config and layers.</summary>
public sealed class OciManifestOrIndex
{
    [JsonPropertyName("schemaVersion")] public int SchemaVersion { get; set; }
    [JsonPropertyName("mediaType")] public string? MediaType { get; set; }
    [JsonPropertyName("manifests")] public List<OciDescriptor>? Manifests { get; set; }
    [JsonPropertyName("config")] public OciDescriptor? Config { get; set; }
    [JsonPropertyName("layers")] public List<OciDescriptor>? Layers { get; set; }
}

/// <summary>The image config (OCI "application/vnd.oci.image.config.v1+json", and docker's,
/// which has the same field names).</summary>
public sealed class ImageConfig
{
    [JsonPropertyName("architecture")] public string? Architecture { get; set; }
    [JsonPropertyName("os")] public string? Os { get; set; }
    [JsonPropertyName("created")] public string? Created { get; set; }
    [JsonPropertyName("config")] public ContainerConfig? Config { get; set; }
    [JsonPropertyName("rootfs")] public RootFs? RootFs { get; set; }

    public static ImageConfig Parse(byte[] json, string what)
    {
        try { return JsonSerializer.Deserialize<ImageConfig>(json) ?? throw new ImageException($"{what} is empty"); }
        catch (JsonException e) { throw new ImageException($"{what} is not a valid image config: {e.Message}", e); }
    }
}

public sealed class ContainerConfig
{
    [JsonPropertyName("User")] public string? User { get; set; }
    [JsonPropertyName("Env")] public List<string>? Env { get; set; }
    [JsonPropertyName("Entrypoint")] public List<string>? Entrypoint { get; set; }
    [JsonPropertyName("Cmd")] public List<string>? Cmd { get; set; }
    [JsonPropertyName("WorkingDir")] public string? WorkingDir { get; set; }
    [JsonPropertyName("ExposedPorts")] public Dictionary<string, JsonElement>? ExposedPorts { get; set; }
    [JsonPropertyName("Volumes")] public Dictionary<string, JsonElement>? Volumes { get; set; }
    [JsonPropertyName("Labels")] public Dictionary<string, string>? Labels { get; set; }
}

public sealed class RootFs
{
    [JsonPropertyName("type")] public string? Type { get; set; }
    [JsonPropertyName("diff_ids")] public List<string>? DiffIds { get; set; }
}

/// <summary>docker save's manifest.json: one entry per saved image.</summary>
public sealed class DockerManifestEntry
{
    [JsonPropertyName("Config")] public string? Config { get; set; }
    [JsonPropertyName("RepoTags")] public List<string>? RepoTags { get; set; }
    [JsonPropertyName("Layers")] public List<string>? Layers { get; set; }
}

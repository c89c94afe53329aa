using System.Text.Json.Serialization;

namespace Rkt.Kvm.Images.Store;

/// <summary>One image in the store's index.</summary>
public sealed record ImageRecord
{
    /// <summary>"sha512-&lt;128 hex&gt;": for an ACI the hash of its uncompressed tar, as rkt
    /// computes it; for OCI/docker the hash of our manifest plus the layer digests.</summary>
    [JsonPropertyName("id")] public required string Id { get; init; }
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("labels")] public Dictionary<string, string> Labels { get; init; } = [];
    /// <summary>"aci", "oci", "docker-archive" or "registry".</summary>
    [JsonPropertyName("format")] public required string Format { get; init; }
    [JsonPropertyName("importTime")] public DateTimeOffset ImportTime { get; init; }
    [JsonPropertyName("lastUsed")] public DateTimeOffset LastUsed { get; init; }
    /// <summary>Bytes of the blobs it holds in the store.</summary>
    [JsonPropertyName("size")] public long Size { get; init; }
    /// <summary>Blob keys ("sha512:HEX" for an ACI's tar, "sha256:HEX" per layer), in layer order.</summary>
    [JsonPropertyName("blobs")] public List<string> Blobs { get; init; } = [];
    [JsonPropertyName("allowDevices")] public bool AllowDevices { get; init; }
    /// <summary>Where a fetch got it, so that a later fetch or run finds it: a registry reference
    /// ("registry-1.docker.io/library/busybox:latest"), or an ACI's URL (given, or found by appc
    /// discovery: rkt's remote); null for an imported file.</summary>
    [JsonPropertyName("remote")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? Remote { get; init; }
    /// <summary>The digest of the registry manifest it was made from: a later fetch of the same
    /// tag that finds the same manifest has nothing to do.</summary>
    [JsonPropertyName("remoteDigest")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? RemoteDigest { get; init; }

    /// <summary>An ACI fetched from a URL (given, or found by discovery): the server's <c>ETag</c> for
    /// it, sent back as <c>If-None-Match</c> when the URL is fetched again (rkt's remote store).</summary>
    [JsonPropertyName("etag")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? ETag { get; init; }
    /// <summary>The server's <c>Cache-Control: max-age</c> in seconds: until <see cref="DownloadTime"/>
    /// plus this, the URL is not asked again.</summary>
    [JsonPropertyName("cacheMaxAge")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? CacheMaxAge { get; init; }
    [JsonPropertyName("downloadTime")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public DateTimeOffset? DownloadTime { get; init; }

    /// <summary>"name:version", as rkt prints an image.</summary>
    [JsonIgnore]
    public string DisplayName => Labels.TryGetValue("version", out var v) ? $"{Name}:{v}" : Name;
}

/// <summary>The index file: every image the store holds.</summary>
public sealed class StoreIndex
{
    [JsonPropertyName("images")] public List<ImageRecord> Images { get; set; } = [];
}

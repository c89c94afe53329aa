using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Rkt.Kvm.Images.Formats.Appc;

/// <summary>appc name/value pairs, used for labels, annotations and environment.</summary>
public sealed record AppcNameValue(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("value")] string Value);

public sealed record AppcPort(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("protocol")] string Protocol,
    [property: JsonPropertyName("port")] int Port,
    [property: JsonPropertyName("count")] int Count,
    [property: JsonPropertyName("socketActivated")] bool SocketActivated);

public sealed record AppcMountPoint(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("readOnly")] bool ReadOnly);

public sealed record AppcApp
{
    [JsonPropertyName("exec")] public required IReadOnlyList<string> Exec { get; init; }
    [JsonPropertyName("user")] public required string User { get; init; }
    [JsonPropertyName("group")] public required string Group { get; init; }
    [JsonPropertyName("workingDirectory"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? WorkingDirectory { get; init; }
    [JsonPropertyName("environment")] public IReadOnlyList<AppcNameValue> Environment { get; init; } = [];
    [JsonPropertyName("mountPoints")] public IReadOnlyList<AppcMountPoint> MountPoints { get; init; } = [];
    [JsonPropertyName("ports")] public IReadOnlyList<AppcPort> Ports { get; init; } = [];
}

/// <summary>The appc ImageManifest we write for OCI and docker images, the way rkt's
/// docker2aci did, so both kinds of image reach stage1 in one shape.</summary>
public sealed record AppcImageManifest
{
    public const string SpecVersion = "0.8.11";

    [JsonPropertyName("acKind")] public string AcKind { get; init; } = "ImageManifest";
    [JsonPropertyName("acVersion")] public string AcVersion { get; init; } = SpecVersion;
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("labels")] public IReadOnlyList<AppcNameValue> Labels { get; init; } = [];
    [JsonPropertyName("app"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public AppcApp? App { get; init; }
    [JsonPropertyName("annotations")] public IReadOnlyList<AppcNameValue> Annotations { get; init; } = [];

    public static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public byte[] ToJsonBytes() => JsonSerializer.SerializeToUtf8Bytes(this, Json);
}

/// <summary>What the store needs from any image manifest: its name and labels, checked.</summary>
public sealed record ManifestSummary(string Name, IReadOnlyDictionary<string, string> Labels)
{
    /// <summary>Parses and checks an ACI's manifest (acKind, name, labels).</summary>
    public static ManifestSummary Parse(byte[] json, string what)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json); }
        catch (JsonException e) { throw new ImageException($"{what}: the manifest is not valid JSON: {e.Message}", e); }
        if (root is not JsonObject obj) throw new ImageException($"{what}: the manifest is not a JSON object");
        if (obj["acKind"]?.GetValueKind() != JsonValueKind.String || (string?)obj["acKind"] != "ImageManifest")
            throw new ImageException($"{what}: the manifest's acKind is not \"ImageManifest\"");
        var name = obj["name"]?.GetValueKind() == JsonValueKind.String ? (string?)obj["name"] : null;
        if (name is null || !AcIdentifier.IsValid(name))
            throw new ImageException($"{what}: the manifest's name \"{name}\" is not a valid AC identifier");
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (obj["labels"] is JsonArray array)
            foreach (var label in array)
                if (label?["name"]?.GetValue<string>() is { } n && label["value"]?.GetValue<string>() is { } v) labels[n] = v;
        return new ManifestSummary(name, labels);
    }
}

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

/// <summary>
/// One entry of an ACI manifest's <c>dependencies</c> (appc's Dependency): the image to render
/// below this one, by name and labels; <see cref="ImageId"/> and <see cref="Size"/>, when given,
/// must match the image found (its ID, and the length of the tar that ID hashes).
/// </summary>
public sealed record AciDependency(string ImageName, string? ImageId, IReadOnlyDictionary<string, string> Labels, long? Size)
{
    /// <summary>"example.com/base:v1" (or the name with its labels), for messages.</summary>
    public override string ToString() => Labels.Count == 0 ? ImageName
        : ImageName + string.Concat(Labels.OrderBy(l => l.Key != "version").ThenBy(l => l.Key, StringComparer.Ordinal)
            .Select((l, i) => i == 0 && l.Key == "version" ? $":{l.Value}" : $",{l.Key}={l.Value}"));

    /// <summary>Whether <paramref name="id"/> (a full store ID) is the one asked for. appc IDs
    /// are "sha512-" and hex; rkt shortens them to 64 digits, so a shortened one matches as a prefix.</summary>
    public bool MatchesId(string id) => ImageId is null || id.StartsWith(ImageId, StringComparison.Ordinal);
}

/// <summary>What the store needs from any image manifest: its name and labels, checked; for an
/// ACI also its dependencies and path whitelist, which rendering needs.</summary>
public sealed record ManifestSummary(string Name, IReadOnlyDictionary<string, string> Labels)
{
    /// <summary>The images rendered below this one, in the manifest's order.</summary>
    public IReadOnlyList<AciDependency> Dependencies { get; init; } = [];

    /// <summary>appc's <c>pathWhitelist</c>, as paths relative to the rootfs ("bin/sh"): when not
    /// empty, the only files (not directories) taken from this image, and the only paths taken
    /// from the images below it. Empty: everything.</summary>
    public IReadOnlyList<string> PathWhitelist { get; init; } = [];

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
        return new ManifestSummary(name, labels)
        {
            Dependencies = ParseDependencies(obj["dependencies"], what),
            PathWhitelist = ParseWhitelist(obj["pathWhitelist"], what),
        };
    }

    /// <summary>At most this many dependencies in one manifest: far more than any real image.</summary>
    public const int MaxDependencies = 64;

    private static List<AciDependency> ParseDependencies(JsonNode? node, string what)
    {
        if (node is null) return [];
        if (node is not JsonArray array) throw new ImageException($"{what}: the manifest's dependencies are not a JSON array");
        if (array.Count > MaxDependencies) throw new ImageException($"{what}: the manifest lists {array.Count} dependencies (at most {MaxDependencies})");
        var result = new List<AciDependency>();
        foreach (var item in array)
        {
            var name = item?["imageName"] is JsonValue n && n.TryGetValue<string>(out var s) ? s : null;
            if (name is null || !AcIdentifier.IsValid(name))
                throw new ImageException($"{what}: a dependency's imageName \"{name}\" is not a valid AC identifier");
            string? id = null;
            if (item!["imageID"] is { } idNode)
            {
                id = idNode is JsonValue v && v.TryGetValue<string>(out var text) ? text : null;
                if (id is null || !IsImageId(id)) throw new ImageException($"{what}: dependency {name} has an invalid imageID \"{id}\" (sha512- and 64 to 128 hex digits)");
            }
            var labels = new SortedDictionary<string, string>(StringComparer.Ordinal);
            if (item["labels"] is JsonArray labelArray)
                foreach (var label in labelArray)
                {
                    var key = label?["name"] is JsonValue k && k.TryGetValue<string>(out var ks) ? ks : null;
                    var value = label?["value"] is JsonValue lv && lv.TryGetValue<string>(out var vs) ? vs : null;
                    if (key is null || value is null || !AcIdentifier.IsValid(key))
                        throw new ImageException($"{what}: dependency {name} has an invalid label");
                    labels[key] = value;
                }
            long? size = null;
            if (item["size"] is { } sizeNode)
                size = sizeNode is JsonValue sv && sv.TryGetValue<long>(out var l) && l >= 0 ? l
                    : throw new ImageException($"{what}: dependency {name} has an invalid size");
            result.Add(new AciDependency(name, id, labels, size));
        }
        return result;
    }

    private static bool IsImageId(string id) =>
        id.StartsWith("sha512-", StringComparison.Ordinal) && id.Length - 7 is >= 64 and <= 128 && id[7..].All(char.IsAsciiHexDigitLower);

    private static List<string> ParseWhitelist(JsonNode? node, string what)
    {
        if (node is null) return [];
        if (node is not JsonArray array) throw new ImageException($"{what}: the manifest's pathWhitelist is not a JSON array");
        var result = new List<string>();
        foreach (var item in array)
        {
            var path = item is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
            if (path is null || !path.StartsWith('/')) throw new ImageException($"{what}: pathWhitelist entry \"{path}\" is not an absolute path");
            // As appc compares them: cleaned, relative to the rootfs.
            try { result.Add(Archive.EntryPath.Normalize(path.TrimStart('/'), path)); }
            catch (UnsafeEntryException e) { throw new ImageException($"{what}: pathWhitelist entry \"{path}\" is refused: {e.Message}", e); }
        }
        return result;
    }
}

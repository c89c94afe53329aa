using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>What an app runs: the appc App, as the pod manifest gives it (the image's app with
/// the user's overrides already applied by stage0).</summary>
public sealed record AppSpec(
    IReadOnlyList<string> Exec,
    string User,
    string Group,
    IReadOnlyList<uint> SupplementaryGids,
    string? WorkingDirectory,
    IReadOnlyList<KeyValuePair<string, string>> Environment,
    IReadOnlyList<MountPoint> MountPoints,
    Isolators Isolators,
    IReadOnlyList<AppPort> Ports)
{
    public static AppSpec Parse(JsonObject app, string where)
    {
        var exec = JsonRead.Strings(app, "exec", where);
        var gids = new List<uint>();
        foreach (var (item, at) in JsonRead.Array(app, "supplementaryGIDs", where))
            gids.Add(item?.GetValueKind() == JsonValueKind.Number && item.AsValue().TryGetValue(out uint gid) ? gid
                : throw new Stage1Exception($"{at}: expected a group id"));
        var mountPoints = JsonRead.Array(app, "mountPoints", where).Select(e =>
        {
            var mp = JsonRead.Object(e.Item, e.Where);
            var name = JsonRead.RequiredString(mp, "name", e.Where);
            if (!AcName.IsValidName(name)) throw new Stage1Exception($"{e.Where}.name: \"{name}\" is not a valid ACName");
            return new MountPoint(name, AbsolutePath(JsonRead.RequiredString(mp, "path", e.Where), $"{e.Where}.path"),
                JsonRead.OptionalBool(mp, "readOnly", e.Where) ?? false);
        }).ToList();
        var workingDirectory = JsonRead.OptionalString(app, "workingDirectory", where);
        if (workingDirectory is { Length: > 0 }) AbsolutePath(workingDirectory, $"{where}.workingDirectory");
        return new AppSpec(exec, JsonRead.RequiredString(app, "user", where), JsonRead.RequiredString(app, "group", where), gids,
            string.IsNullOrEmpty(workingDirectory) ? null : workingDirectory,
            JsonRead.NameValues(app, "environment", where), mountPoints, Isolators.Parse(app, where), AppPort.Parse(app, where));
    }

    /// <summary>Absolute, no NUL, no <c>..</c> component: a path inside the app, as the agent will use it.</summary>
    internal static string AbsolutePath(string path, string where)
    {
        if (!path.StartsWith('/') || path.Contains('\0') || path.Split('/').Contains(".."))
            throw new Stage1Exception($"{where}: \"{path}\" must be an absolute path without \"..\"");
        return path;
    }
}

public sealed record MountPoint(string Name, string Path, bool ReadOnly);

/// <summary>A RuntimeApp's mount: volume <see cref="Volume"/> at <see cref="Path"/> in the app.</summary>
public sealed record AppMount(string Volume, string Path);

public sealed record ImageRef(string Name, string Id, IReadOnlyList<KeyValuePair<string, string>> Labels);

public sealed record RuntimeApp(string Name, ImageRef Image, AppSpec? App, bool ReadOnlyRootFs,
    IReadOnlyList<AppMount> Mounts, IReadOnlyList<KeyValuePair<string, string>> Annotations);

/// <summary>A pod volume: <c>host</c> (a host directory) or <c>empty</c> (made for the pod).</summary>
public sealed record Volume(string Name, string Kind, string? Source, bool? ReadOnly, bool Recursive, string Mode, long? Uid, long? Gid)
{
    public bool IsHost => Kind == "host";
}

/// <summary>
/// The appc PodManifest stage0 writes to <c>&lt;pod&gt;/pod</c>, parsed and checked as untrusted
/// input: app and volume names are ACNames and unique, mounts name existing volumes, paths are
/// absolute. The parsed JSON is kept, so unknown fields survive a rewrite.
/// </summary>
public sealed record PodManifest(
    JsonObject Json,
    IReadOnlyList<RuntimeApp> Apps,
    IReadOnlyList<Volume> Volumes,
    Isolators Isolators,
    IReadOnlyList<KeyValuePair<string, string>> Annotations,
    IReadOnlyList<ExposedPort> Ports)
{
    public const string MutableAnnotation = "coreos.com/rkt/stage1/mutable";

    /// <summary>Stage0 writes the annotation "true" for `rkt app sandbox` pods, "false" for `rkt run`.</summary>
    public bool Mutable => Annotations.LastOrDefault(a => a.Key == MutableAnnotation).Value == "true";

    public RuntimeApp? App(string name) => Apps.FirstOrDefault(a => a.Name == name);

    public static PodManifest Load(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new Stage1Exception($"cannot read the pod manifest {path}: {e.Message}", e); }
        return Parse(bytes, path);
    }

    public static PodManifest Parse(ReadOnlySpan<byte> json, string what = "pod manifest")
    {
        JsonNode? root;
        // Duplicate names are refused while parsing: JsonObject would otherwise throw ArgumentException when first read.
        try { root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false }); }
        catch (JsonException e) { throw new Stage1Exception($"{what}: not valid JSON: {e.Message}", e); }
        CheckStrings(json, what);
        var pod = root as JsonObject ?? throw new Stage1Exception($"{what}: not a JSON object");
        if (JsonRead.OptionalString(pod, "acKind", what) != "PodManifest")
            throw new Stage1Exception($"{what}: acKind is not \"PodManifest\"");
        JsonRead.RequiredString(pod, "acVersion", what);

        var volumes = new List<Volume>();
        foreach (var (item, at) in JsonRead.Array(pod, "volumes", what))
        {
            var v = JsonRead.Object(item, at);
            var name = JsonRead.RequiredString(v, "name", at);
            if (!AcName.IsValidName(name)) throw new Stage1Exception($"{at}.name: \"{name}\" is not a valid ACName");
            if (volumes.Any(x => x.Name == name)) throw new Stage1Exception($"{what}: duplicate volume name \"{name}\"");
            var kind = JsonRead.RequiredString(v, "kind", at);
            if (kind is not ("host" or "empty")) throw new Stage1Exception($"{at}.kind: \"{kind}\" is not host or empty");
            var source = JsonRead.OptionalString(v, "source", at);
            if (kind == "host") AppSpec.AbsolutePath(source ?? throw new Stage1Exception($"{at}.source: a host volume needs a source"), $"{at}.source");
            var mode = JsonRead.OptionalString(v, "mode", at) ?? "0755";
            if (mode.Length is 0 or > 5 || mode.Any(c => c is < '0' or > '7')) throw new Stage1Exception($"{at}.mode: \"{mode}\" is not an octal mode");
            volumes.Add(new Volume(name, kind, source, JsonRead.OptionalBool(v, "readOnly", at), JsonRead.OptionalBool(v, "recursive", at) ?? true,
                mode, JsonRead.OptionalInteger(v, "uid", at), JsonRead.OptionalInteger(v, "gid", at)));
        }

        var apps = new List<RuntimeApp>();
        foreach (var (item, at) in JsonRead.Array(pod, "apps", what))
        {
            var a = JsonRead.Object(item, at);
            var name = JsonRead.RequiredString(a, "name", at);
            if (!AcName.IsValidName(name)) throw new Stage1Exception($"{at}.name: \"{name}\" is not a valid app name (ACName: lowercase letters, digits and dashes)");
            if (apps.Any(x => x.Name == name)) throw new Stage1Exception($"{what}: duplicate app name \"{name}\"");
            var image = JsonRead.Object(a["image"], $"{at}.image");
            var imageRef = new ImageRef(JsonRead.OptionalString(image, "name", $"{at}.image") ?? "",
                JsonRead.RequiredString(image, "id", $"{at}.image"), JsonRead.NameValues(image, "labels", $"{at}.image"));
            AppSpec? app = a["app"] is null ? null : AppSpec.Parse(JsonRead.Object(a["app"], $"{at}.app"), $"{at}.app");
            var mounts = JsonRead.Array(a, "mounts", at).Select(e =>
            {
                var m = JsonRead.Object(e.Item, e.Where);
                var volume = JsonRead.RequiredString(m, "volume", e.Where);
                if (m["appVolume"] is null && volumes.All(v => v.Name != volume))
                    throw new Stage1Exception($"{e.Where}.volume: no pod volume is named \"{volume}\"");
                return new AppMount(volume, AppSpec.AbsolutePath(JsonRead.RequiredString(m, "path", e.Where), $"{e.Where}.path"));
            }).ToList();
            apps.Add(new RuntimeApp(name, imageRef, app, JsonRead.OptionalBool(a, "readOnlyRootFS", at) ?? false, mounts,
                JsonRead.NameValues(a, "annotations", at)));
        }

        return new PodManifest(pod, apps, volumes, Isolators.Parse(pod, what), JsonRead.NameValues(pod, "annotations", what), ExposedPort.Parse(pod, what));
    }

    /// <summary>
    /// JsonNode turns names and strings into .NET strings only when they are first read, and throws
    /// InvalidOperationException then for text that cannot be one (invalid UTF-8, a lone surrogate
    /// escape such as "\ud800"): read every one now, so such a manifest is refused as invalid JSON.
    /// </summary>
    private static void CheckStrings(ReadOnlySpan<byte> json, string what)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 64 });
        try
        {
            while (reader.Read())
                if (reader.TokenType is JsonTokenType.PropertyName or JsonTokenType.String) reader.GetString();
        }
        catch (Exception e) when (e is InvalidOperationException or JsonException) { throw new Stage1Exception($"{what}: not valid JSON: {e.Message}", e); }
    }

    /// <summary>
    /// The pod's exposed ports, each resolved to the app port of that name (its protocol and
    /// port), as rkt forwards them; a name no app declares is an error, as in rkt.
    /// </summary>
    public IReadOnlyList<ForwardedPort> ForwardedPorts()
    {
        var result = new List<ForwardedPort>();
        foreach (var exposed in Ports)
        {
            var port = Apps.SelectMany(a => a.App?.Ports ?? []).FirstOrDefault(p => p.Name == exposed.Name)
                ?? throw new Stage1Exception($"port \"{exposed.Name}\" is not declared by any app of the pod (declared: {string.Join(", ", Apps.SelectMany(a => a.App?.Ports ?? []).Select(p => p.Name).DefaultIfEmpty("none"))})");
            if (result.Any(r => r.HostPort == exposed.HostPort && r.Protocol == port.Protocol))
                throw new Stage1Exception($"host port {exposed.HostPort}/{port.Protocol} is forwarded twice");
            result.Add(new ForwardedPort(port.Protocol, exposed.HostIp, exposed.HostPort, port.Port));
        }
        return result;
    }
}

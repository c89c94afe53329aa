using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>
/// A stage1 image as stage0 sees it: <c>stage1/manifest</c> naming each entrypoint in an
/// annotation (a path relative to <c>stage1/rootfs</c>) and the interface version.
/// </summary>
public sealed record Stage1Image(string Name, IReadOnlyDictionary<string, string> Entrypoints, int InterfaceVersion)
{
    public const string AnnotationPrefix = "coreos.com/rkt/stage1/";
    public const string InterfaceVersionAnnotation = AnnotationPrefix + "interface-version";
    public const int SupportedInterfaceVersion = 6;

    /// <summary>Every entrypoint of the contract, by annotation suffix.</summary>
    public static readonly string[] EntrypointNames = ["run", "enter", "gc", "stop", "app/add", "app/rm", "app/start", "app/stop", "attach"];

    /// <summary>rkt treats a stage1 as able to run mutable pods only when all three exist.</summary>
    public bool SupportsMutablePods => Entrypoints.ContainsKey("app/rm") && Entrypoints.ContainsKey("app/start") && Entrypoints.ContainsKey("app/stop");

    public static Stage1Image Parse(ReadOnlySpan<byte> json, string what)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json); }
        catch (JsonException e) { throw new Stage1Exception($"{what}: not valid JSON: {e.Message}", e); }
        var manifest = root as JsonObject ?? throw new Stage1Exception($"{what}: not a JSON object");
        if (JsonRead.OptionalString(manifest, "acKind", what) != "ImageManifest") throw new Stage1Exception($"{what}: acKind is not \"ImageManifest\"");
        var name = JsonRead.RequiredString(manifest, "name", what);
        var annotations = JsonRead.NameValues(manifest, "annotations", what).ToDictionary(p => p.Key, p => p.Value);
        var entrypoints = new Dictionary<string, string>();
        foreach (var entry in EntrypointNames)
            if (annotations.TryGetValue(AnnotationPrefix + entry, out var path))
            {
                var relative = path.TrimStart('/');
                if (relative.Length == 0 || relative.Contains('\0') || relative.Split('/').Contains(".."))
                    throw new Stage1Exception($"{what}: entrypoint {entry} \"{path}\" must be a path inside the stage1 rootfs");
                entrypoints[entry] = relative;
            }
        if (!annotations.TryGetValue(InterfaceVersionAnnotation, out var versionText) || !int.TryParse(versionText, out int version))
            throw new Stage1Exception($"{what}: no {InterfaceVersionAnnotation} annotation; is this a stage1 image?");
        if (!entrypoints.ContainsKey("run")) throw new Stage1Exception($"{what}: the stage1 image has no run entrypoint");
        return new Stage1Image(name, entrypoints, version);
    }

    /// <summary>The entrypoint's absolute path under the pod's <c>stage1/rootfs</c>.</summary>
    public string EntrypointPath(Pods.PodDirectory pod, string entrypoint) => EntrypointPath(pod.Stage1Rootfs, entrypoint);

    /// <summary>The entrypoint's absolute path under a stage1 rootfs (rkt's enter uses the tree store's).</summary>
    public string EntrypointPath(string stage1Rootfs, string entrypoint) =>
        Entrypoints.TryGetValue(entrypoint, out var relative) ? Path.Join(stage1Rootfs, relative)
            : throw new Stage1Exception($"the stage1 image {Name} has no {entrypoint} entrypoint");
}

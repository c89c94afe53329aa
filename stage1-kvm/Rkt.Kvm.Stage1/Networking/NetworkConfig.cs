using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Networking;

/// <summary>
/// A CNI network configuration (one <c>.conf</c> file, rkt's format): its name, plugin type, the
/// file it came from and its exact bytes, which are what the plugin reads on stdin.
/// </summary>
public sealed record NetworkConfig(string Name, string Type, string Path, byte[] Bytes)
{
    public const string DefaultName = "default";
    public const string DefaultRestrictedName = "default-restricted";

    /// <summary>rkt's <c>99-default.conf</c>: ptp with IP masquerade, host-local IPAM on 172.16.28.0/24, a default route.</summary>
    public const string DefaultJson =
        """{"cniVersion":"0.3.1","name":"default","type":"ptp","ipMasq":true,"ipam":{"type":"host-local","subnet":"172.16.28.0/24","routes":[{"dst":"0.0.0.0/0"}]}}""";
    /// <summary>rkt's <c>99-default-restricted.conf</c>: reachable from the host only (no masquerade, no default route).</summary>
    public const string DefaultRestrictedJson =
        """{"cniVersion":"0.3.1","name":"default-restricted","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","subnet":"172.31.0.0/16"}}""";

    /// <summary>Where rkt keeps the default networks, relative to the stage1 rootfs.</summary>
    public const string DefaultPath = "etc/rkt/net.d/99-default.conf";
    public const string DefaultRestrictedPath = "etc/rkt/net.d/99-default-restricted.conf";

    public static NetworkConfig Parse(string path, byte[] bytes)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(bytes); }
        catch (JsonException e) { throw new Stage1Exception($"network configuration {path} is not valid JSON: {e.Message}"); }
        if (root is not JsonObject o) throw new Stage1Exception($"network configuration {path} is not a JSON object");
        string? name = Text(o, "name", path), type = Text(o, "type", path);
        if (string.IsNullOrEmpty(name)) throw new Stage1Exception($"network configuration {path} has no \"name\"");
        if (string.IsNullOrEmpty(type)) throw new Stage1Exception($"network configuration {path} has no plugin \"type\"");
        if (type.Contains('/') || type.StartsWith('.')) throw new Stage1Exception($"network configuration {path}: plugin type \"{type}\" is not a plugin name");
        return new NetworkConfig(name, type, path, bytes);
    }

    private static string? Text(JsonObject o, string key, string path) =>
        o[key] switch
        {
            null => null,
            JsonValue v when v.TryGetValue(out string? s) => s,
            _ => throw new Stage1Exception($"network configuration {path}: \"{key}\" must be a string"),
        };

    /// <summary>
    /// The networks a pod joins, as rkt's stage1 loads them: every <c>*.conf</c> of
    /// <c>&lt;localConfig&gt;/net.d</c> in file-name order that the list names (or all of them for
    /// <c>all</c>), the first file of a name winning; then, unless the user's files define it,
    /// <c>default</c> (asked for by name or by <c>all</c>) or else <c>default-restricted</c>, read
    /// from the stage1 image. A name that no file defines is an error naming the missing networks.
    /// </summary>
    public static IReadOnlyList<NetworkConfig> Load(NetworkList list, string? localConfig, string stage1Rootfs)
    {
        if (list.None) return [];
        var nets = new List<NetworkConfig>();
        var dir = string.IsNullOrEmpty(localConfig) ? null : System.IO.Path.Join(localConfig, "net.d");
        if (dir is not null && Directory.Exists(dir))
        {
            foreach (var file in Directory.GetFiles(dir, "*.conf").Order(StringComparer.Ordinal))
            {
                var net = Parse(file, File.ReadAllBytes(file));
                if (!list.Wants(net.Name) || nets.Any(n => n.Name == net.Name)) continue;
                nets.Add(net);
            }
        }
        if (!nets.Any(n => n.Name is DefaultName or DefaultRestrictedName))
        {
            bool full = list.Wants(DefaultName);
            var path = System.IO.Path.Join(stage1Rootfs, full ? DefaultPath : DefaultRestrictedPath);
            nets.Add(File.Exists(path)
                ? Parse(path, File.ReadAllBytes(path))
                : Parse(path, System.Text.Encoding.UTF8.GetBytes(full ? DefaultJson : DefaultRestrictedJson)));
        }
        var missing = list.Named.Where(n => !nets.Any(c => c.Name == n)).ToList();
        if (missing.Count > 0)
            throw new Stage1Exception($"networks not found: {string.Join(", ", missing)} (no *.conf in {dir ?? "<no --local-config>"} has that \"name\")");
        return nets;
    }
}

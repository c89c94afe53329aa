using System.Text.Json;
using System.Text.Json.Nodes;
using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Stage1.Networking;

/// <summary>
/// One entry of the pod's <c>net-info.json</c>, rkt's record of the networks a pod joined, which
/// <c>rkt list</c> and <c>rkt status</c> read: <c>{netName, netConf, pluginPath, ifName, ip, args, mask}</c>.
/// </summary>
public sealed record NetInfo(string NetName, string NetConf, string PluginPath, string IfName, string Ip, string Args, string Mask)
{
    public const string FileName = "net-info.json";

    /// <summary>How rkt shows it in NETWORKS and <c>networks=</c>: <c>default:ip4=172.16.28.2</c>.</summary>
    public string Display => $"{NetName}:ip4={Ip}";

    public static string Describe(IEnumerable<NetInfo> nets) => string.Join(", ", nets.Select(n => n.Display));

    public JsonObject ToJson() => new()
    {
        ["netName"] = NetName, ["netConf"] = NetConf, ["pluginPath"] = PluginPath, ["ifName"] = IfName,
        ["ip"] = Ip, ["args"] = Args, ["mask"] = Mask,
    };

    public static void Save(string path, IEnumerable<NetInfo> nets) =>
        AtomicFile.Write(path, System.Text.Encoding.UTF8.GetBytes(new JsonArray([.. nets.Select(n => n.ToJson())]).ToJsonString() + "\n"), durable: false);

    /// <summary>The entries of a pod's file; none when the pod has no file (rkt shows nothing then) or it is unreadable.</summary>
    public static IReadOnlyList<NetInfo> Load(string path)
    {
        try
        {
            if (JsonNode.Parse(File.ReadAllText(path)) is not JsonArray array) return [];
            return array.OfType<JsonObject>().Select(o => new NetInfo(S(o, "netName"), S(o, "netConf"), S(o, "pluginPath"), S(o, "ifName"), S(o, "ip"), S(o, "args"), S(o, "mask"))).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException) { return []; }
    }

    private static string S(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out string? s) ? s : "";
}

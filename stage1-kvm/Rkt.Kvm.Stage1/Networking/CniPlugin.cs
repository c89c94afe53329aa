using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Networking;

/// <summary>
/// Runs CNI plugins the way the CNI spec (and rkt) does: the network's configuration on stdin,
/// <c>CNI_COMMAND</c>, <c>CNI_CONTAINERID</c> (the pod UUID), <c>CNI_NETNS</c>, <c>CNI_IFNAME</c>,
/// <c>CNI_ARGS</c> and <c>CNI_PATH</c> in the environment. Plugins are looked up in
/// <see cref="SearchPath"/>: <c>$RKT_KVM_CNI_PATH</c>, else Debian's <c>/usr/lib/cni</c> and
/// <c>/opt/cni/bin</c>.
/// </summary>
public sealed class CniPlugin(IReadOnlyList<string> searchPath)
{
    public const string Package = "containernetworking-plugins";

    public IReadOnlyList<string> SearchPath { get; } = searchPath;

    public static CniPlugin FromEnvironment() =>
        new((Environment.GetEnvironmentVariable("RKT_KVM_CNI_PATH") is { Length: > 0 } p ? p : "/usr/lib/cni:/opt/cni/bin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries));

    /// <summary>The directory holding plugin <paramref name="type"/>; a clear error naming the package when none does.</summary>
    public string Find(string type) =>
        TryFind(type) ?? throw new Stage1Exception($"CNI plugin \"{type}\" not found in {string.Join(":", SearchPath)} (install Debian's {Package}, or set RKT_KVM_CNI_PATH)");

    public string? TryFind(string type) => SearchPath.FirstOrDefault(dir => File.Exists(Path.Join(dir, type)));

    public CniResult Add(string type, byte[] config, string containerId, string netns, string ifName, string args) =>
        CniResult.Parse(Invoke("ADD", type, config, containerId, netns, ifName, args), type);

    public void Delete(string type, byte[] config, string containerId, string netns, string ifName, string args) =>
        Invoke("DEL", type, config, containerId, netns, ifName, args);

    private string Invoke(string command, string type, byte[] config, string containerId, string netns, string ifName, string args)
    {
        var dir = Find(type);
        var env = new Dictionary<string, string>
        {
            ["CNI_COMMAND"] = command,
            ["CNI_CONTAINERID"] = containerId,
            ["CNI_NETNS"] = netns,
            ["CNI_IFNAME"] = ifName,
            ["CNI_ARGS"] = args.Length == 0 ? "IgnoreUnknown=1" : "IgnoreUnknown=1;" + args,
            ["CNI_PATH"] = string.Join(":", SearchPath),
        };
        var result = HostCommand.Run(Path.Join(dir, type), [], Package, config, env);
        if (result.ExitCode != 0) throw new Stage1Exception($"CNI {command} of {type}: {ErrorMessage(result)}");
        return result.Stdout;
    }

    /// <summary>A plugin's error: the spec's <c>{"code","msg","details"}</c> on stdout, else what it printed.</summary>
    public static string ErrorMessage(HostCommandResult result)
    {
        try
        {
            if (JsonNode.Parse(result.Stdout) is JsonObject o && o["msg"]?.GetValue<string>() is { } msg)
                return o["details"]?.GetValue<string>() is { Length: > 0 } details ? $"{msg}: {details}" : msg;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { }
        return result.FirstLine.Length > 0 ? result.FirstLine : $"exit status {result.ExitCode}";
    }
}

using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Networking;

/// <summary>A route of the pod's namespace, as the guest must repeat it: no gateway means on-link.</summary>
public sealed record NetnsRoute(string Destination, string? Gateway);

/// <summary>What a CNI plugin left on an interface of the pod's namespace, which the guest's NIC takes over.</summary>
public sealed record NetnsLink(string Name, string Mac, int Mtu, IReadOnlyList<string> Addresses, IReadOnlyList<NetnsRoute> Routes);

/// <summary>
/// The pod's network namespace on the host, <c>/var/run/netns/cni-&lt;uuid&gt;</c> (as <c>ip netns</c>
/// and CNI name them), and the plumbing that hands each CNI interface to the VM: a tap beside it,
/// joined to it in both directions by tc mirred redirects (Kata's "tcfilter" model). Whatever the
/// plugin made (a ptp veth, a bridge port, a macvlan) then carries the guest's frames unchanged,
/// and the guest NIC takes the interface's MAC, addresses and routes. Uses iproute2 (<c>ip</c>,
/// <c>tc</c>); every step tolerates a namespace that is already gone, so teardown can be repeated.
/// </summary>
public sealed class PodNetNs(string name)
{
    public const string Package = "iproute2";
    public const string NetnsDir = "/var/run/netns";

    public string Name { get; } = name;
    public string Path => System.IO.Path.Join(NetnsDir, Name);

    public static PodNetNs ForPod(string uuid) => new("cni-" + uuid);

    public bool Exists => File.Exists(Path);

    public void Create()
    {
        if (!Exists) HostCommand.Check("ip", ["netns", "add", Name], Package);
        Ip("link", "set", "lo", "up");
    }

    /// <summary>Removes the namespace and with it every link inside (the taps, the pod ends of veths).</summary>
    public void Delete()
    {
        if (!Exists) return;
        var result = HostCommand.Run("ip", ["netns", "delete", Name], Package);
        if (result.ExitCode != 0 && Exists) throw new Stage1Exception($"cannot remove network namespace {Name}: {result.FirstLine}");
    }

    public static string TapName(string ifName) => "tap" + (ifName.StartsWith("eth", StringComparison.Ordinal) ? ifName[3..] : ifName);

    /// <summary>
    /// Makes tap <c>tapN</c> for interface <paramref name="ifName"/> (persistent, with a vnet header, the
    /// interface's MTU) and redirects every frame arriving on either of them out of the other.
    /// </summary>
    public void Bridge(string ifName, string tap, int mtu)
    {
        Ip("tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr");
        Ip("link", "set", "dev", tap, "mtu", mtu.ToString(System.Globalization.CultureInfo.InvariantCulture), "up");
        foreach (var (from, to) in new[] { (ifName, tap), (tap, ifName) })
        {
            Tc("qdisc", "add", "dev", from, "ingress");
            Tc("filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match", "u8", "0", "0",
               "action", "mirred", "egress", "redirect", "dev", to);
        }
    }

    /// <summary>The interface's MAC, MTU, IPv4 addresses and the IPv4 routes out of it, on-link routes first.</summary>
    public NetnsLink Read(string ifName)
    {
        var links = Json(Ip("-json", "address", "show", "dev", ifName));
        if (links.FirstOrDefault() is not JsonObject link) throw new Stage1Exception($"the network namespace {Name} has no interface {ifName}");
        var addresses = (link["addr_info"] as JsonArray ?? [])
            .OfType<JsonObject>()
            .Where(a => a["family"]?.GetValue<string>() == "inet")
            .Select(a => $"{a["local"]!.GetValue<string>()}/{a["prefixlen"]!.GetValue<int>()}")
            .ToList();
        var routes = Json(Ip("-json", "-4", "route", "show", "dev", ifName))
            .OfType<JsonObject>()
            .Where(r => r["type"] is null || r["type"]!.GetValue<string>() == "unicast")
            .Select(r => new NetnsRoute(Cidr(r["dst"]!.GetValue<string>()), r["gateway"]?.GetValue<string>()))
            .OrderBy(r => r.Gateway is null ? 0 : 1)
            .ToList();
        return new NetnsLink(ifName, link["address"]!.GetValue<string>(), link["mtu"]!.GetValue<int>(), addresses, routes);
    }

    private static string Cidr(string dst) => dst == "default" ? "0.0.0.0/0" : dst.Contains('/') ? dst : dst + "/32";

    private static JsonArray Json(string text)
    {
        try { return JsonNode.Parse(text) as JsonArray ?? []; }
        catch (JsonException e) { throw new Stage1Exception($"cannot read iproute2's JSON output: {e.Message}"); }
    }

    private string Ip(params string[] args) => HostCommand.Check("ip", ["-n", Name, .. args], Package);
    private string Tc(params string[] args) => HostCommand.Check("tc", ["-n", Name, .. args], Package);
}

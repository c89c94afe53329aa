using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Networking;

/// <summary>An address a CNI plugin assigned: <c>172.16.28.2/24</c> and its gateway, if any.</summary>
public sealed record CniIp(IPAddress Address, int PrefixLength, IPAddress? Gateway)
{
    public string Cidr => $"{Address}/{PrefixLength}";
    /// <summary>The prefix as a dotted quad (net-info.json's <c>mask</c>).</summary>
    public IPAddress Mask => PrefixLength == 0 ? IPAddress.Any : new IPAddress(BitConverter.GetBytes(IPAddress.HostToNetworkOrder(unchecked((int)(0xFFFFFFFFu << (32 - PrefixLength))))));
}

/// <summary>DNS settings a plugin returned (rkt writes the first non-empty one into the pod's resolv.conf).</summary>
public sealed record CniDns(IReadOnlyList<string> Nameservers, string? Domain, IReadOnlyList<string> Search, IReadOnlyList<string> Options)
{
    public bool IsEmpty => Nameservers.Count == 0 && Domain is null && Search.Count == 0 && Options.Count == 0;
}

/// <summary>
/// What a CNI ADD printed, read from both result shapes plugins use: 0.1/0.2 (<c>ip4.ip</c>) and
/// 0.3 and later (<c>ips[].address</c>). Only IPv4 is taken: the guest kernel has no IPv6.
/// </summary>
public sealed record CniResult(IReadOnlyList<CniIp> Ips, CniDns Dns, JsonObject Raw)
{
    public static CniResult Parse(string json, string plugin)
    {
        JsonObject o;
        try { o = JsonNode.Parse(json) as JsonObject ?? throw new Stage1Exception($"CNI plugin {plugin} printed a result that is not a JSON object"); }
        catch (JsonException e) { throw new Stage1Exception($"CNI plugin {plugin} printed a result that is not JSON: {e.Message}"); }
        var ips = new List<CniIp>();
        if (o["ips"] is JsonArray list)
        {
            foreach (var item in list.OfType<JsonObject>())
            {
                if (item["version"]?.GetValue<string>() is "6") continue;
                if (Address(item["address"], plugin) is { } ip && ip.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
                    ips.Add(ip with { Gateway = Gateway(item["gateway"], plugin) });
            }
        }
        else if (o["ip4"] is JsonObject ip4 && Address(ip4["ip"], plugin) is { } ip)
            ips.Add(ip with { Gateway = Gateway(ip4["gateway"], plugin) });
        var dns = o["dns"] as JsonObject;
        return new CniResult(ips, new CniDns(Strings(dns?["nameservers"]), dns?["domain"]?.GetValue<string>(), Strings(dns?["search"]), Strings(dns?["options"])), o);
    }

    private static CniIp? Address(JsonNode? node, string plugin)
    {
        if (node is null) return null;
        var text = node.GetValue<string>();
        var slash = text.IndexOf('/');
        if (slash < 0 || !IPAddress.TryParse(text[..slash], out var ip) || !int.TryParse(text[(slash + 1)..], out int prefix) || prefix < 0 || prefix > (ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128))
            throw new Stage1Exception($"CNI plugin {plugin} returned \"{text}\", which is not an address with a prefix length");
        return new CniIp(ip, prefix, null);
    }

    private static IPAddress? Gateway(JsonNode? node, string plugin) =>
        node is null ? null
        : IPAddress.TryParse(node.GetValue<string>(), out var ip) ? ip
        : throw new Stage1Exception($"CNI plugin {plugin} returned gateway \"{node}\", which is not an address");

    private static List<string> Strings(JsonNode? node) =>
        node is JsonArray a ? a.Select(n => n?.GetValue<string>()).OfType<string>().ToList() : [];

    /// <summary>resolv.conf text for these settings, with rkt's comment line.</summary>
    public static string ResolvConf(CniDns dns, string comment)
    {
        var text = new System.Text.StringBuilder($"# {comment}\n");
        foreach (var ns in dns.Nameservers) text.Append($"nameserver {ns}\n");
        if (dns.Search.Count > 0) text.Append($"search {string.Join(' ', dns.Search)}\n");
        else if (dns.Domain is not null) text.Append($"domain {dns.Domain}\n");
        if (dns.Options.Count > 0) text.Append($"options {string.Join(' ', dns.Options)}\n");
        return text.ToString();
    }
}

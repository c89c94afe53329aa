using System.Globalization;
using System.Net;
using System.Text;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent.Network;

/// <param name="LinkMac">The MAC the link has now when it is not <paramref name="Mac"/> (a VM restored from a template
/// keeps the template's MACs): the link is found by it and given <paramref name="Mac"/>. Null: found by Mac.</param>
internal sealed record InterfaceConfig(string Mac, IReadOnlyList<Ipv4Prefix> Addresses, uint Mtu, string? LinkMac = null)
{
    /// <summary>The MAC the link has before Apply, which finds it.</summary>
    public string CurrentMac => LinkMac ?? Mac;
}

internal sealed record RouteConfig(Ipv4Prefix Destination, IPAddress? Gateway, string Mac);

/// <summary>No link has a MAC the configuration names (after the wait for the driver).</summary>
internal sealed class LinkNotFoundException(string message) : IOException(message);

/// <summary>
/// The pod's network from ConfigurePod (agent.proto NetworkInterface, NetworkRoute), validated up front, and
/// applied with rtnetlink: lo up; per NIC (found by its MAC, or by its link MAC and then given its MAC) the MTU, up,
/// the addresses without a prefix route (the host gives the exact routes of the pod's namespace); then the routes in
/// the order given. Synchronous: netlink sockets belong to the calling thread's network namespace, which the tests
/// rely on.
/// </summary>
internal sealed class PodNetwork
{
    public static readonly TimeSpan DefaultLinkWait = TimeSpan.FromSeconds(2);
    private const uint IFF_LOOPBACK = 0x8;

    /// <summary>The canonical text of a network without NICs.</summary>
    public const string LoopbackOnly = "lo up";

    public IReadOnlyList<InterfaceConfig> Interfaces { get; }
    public IReadOnlyList<RouteConfig> Routes { get; }

    private PodNetwork(IReadOnlyList<InterfaceConfig> interfaces, IReadOnlyList<RouteConfig> routes) => (Interfaces, Routes) = (interfaces, routes);

    /// <summary>Validates the request's network; throws <see cref="ArgumentException"/> with a message for the client.</summary>
    public static PodNetwork Parse(IEnumerable<Agent.V1.NetworkInterface> interfaces, IEnumerable<NetworkRoute> routes)
    {
        var nics = new List<InterfaceConfig>();
        foreach (var nic in interfaces)
        {
            string mac = ParseMac(nic.Mac);
            if (nics.Any(n => n.Mac == mac)) throw new ArgumentException($"The interface MAC {mac} is given twice.");
            // link_mac equal to mac: nothing to rename, the same as no link_mac.
            string? linkMac = nic.LinkMac.Length == 0 ? null : ParseMac(nic.LinkMac);
            if (linkMac == mac) linkMac = null;
            if (linkMac is not null && nics.Any(n => n.LinkMac == linkMac)) throw new ArgumentException($"The link MAC {linkMac} is given twice.");
            // Each NIC must find its own link: a link_mac that is another NIC's lookup MAC would find that NIC's link.
            if (nics.FirstOrDefault(n => n.CurrentMac == (linkMac ?? mac)) is { } other)
                throw new ArgumentException(linkMac is null
                    ? $"The interface {mac} would find the link that the interface {other.Mac} finds by its link MAC {mac}."
                    : $"The link MAC {linkMac} of the interface {mac} is the MAC by which the interface {other.Mac} finds its link.");
            if (nic.Mtu != 0 && nic.Mtu is < 68 or > 65535) throw new ArgumentException($"The MTU {nic.Mtu} of the interface {mac} is outside 68..65535.");
            nics.Add(new InterfaceConfig(mac, nic.Addresses.Select(a => ParsePrefix(a, $"address of the interface {mac}")).ToList(), nic.Mtu, linkMac));
        }
        var list = new List<RouteConfig>();
        foreach (var route in routes)
        {
            Ipv4Prefix destination = ParsePrefix(route.Destination, "route destination");
            IPAddress network = Mask(destination);
            if (!network.Equals(destination.Address))
                throw new ArgumentException($"The route destination '{route.Destination}' has host bits set; use {network}/{destination.Length}.");
            IPAddress? gateway = route.Gateway.Length == 0 ? null : ParseIpv4(route.Gateway, $"gateway of the route to {destination}");
            string mac = route.Mac.Length == 0
                ? throw new ArgumentException($"The route to {destination} names no interface (mac).")
                : ParseMac(route.Mac);
            if (!nics.Any(n => n.Mac == mac)) throw new ArgumentException($"The route to {destination} goes out of {mac}, which is not one of the request's interfaces.");
            list.Add(new RouteConfig(destination, gateway, mac));
        }
        return new PodNetwork(nics, list);
    }

    /// <summary>Canonical text: equal configurations read the same (used to make a repeated ConfigurePod idempotent).
    /// Without link MACs: they say how to find a link, not what the network is, and once applied the links have the
    /// MACs the text names, so a repeat with or without them describes the same network.</summary>
    public override string ToString()
    {
        var text = new StringBuilder(LoopbackOnly);
        foreach (var nic in Interfaces)
        {
            text.Append("; ").Append(nic.Mac);
            if (nic.Mtu != 0) text.Append(" mtu ").Append(nic.Mtu);
            foreach (var a in nic.Addresses) text.Append(' ').Append(a);
        }
        foreach (var r in Routes)
            text.Append("; route ").Append(r.Destination).Append(r.Gateway is null ? "" : $" via {r.Gateway}").Append(" on ").Append(r.Mac);
        return text.ToString();
    }

    /// <summary>Applies the configuration in the calling thread's network namespace. Throws
    /// <see cref="LinkNotFoundException"/> (only lo changed by then) or <see cref="NetlinkException"/>.</summary>
    public void Apply(TimeSpan linkWait)
    {
        using var socket = RtNetlinkSocket.Open();
        SetUp(socket, RtNetlink.LoopbackIndex, "lo", 0);
        if (Interfaces.Count == 0) return;
        // Every link is found before any is changed (so a missing one leaves only lo changed, and a rename cannot
        // make one NIC's link look like another's); from then on a NIC's link is known by the NIC's MAC.
        Dictionary<string, NetLink> byCurrentMac = FindLinks(socket, linkWait);
        var links = Interfaces.ToDictionary(n => n.Mac, n => byCurrentMac[n.CurrentMac]);
        foreach (var nic in Interfaces)
        {
            NetLink link = links[nic.Mac];
            if (nic.LinkMac is not null) SetAddress(socket, link, nic.Mac);
            SetUp(socket, link.Index, link.Name, nic.Mtu);
            foreach (var address in nic.Addresses)
            {
                uint seq = socket.NextSeq();
                socket.Request(RtNetlink.NewAddress(seq, link.Index, address), seq, $"RTM_NEWADDR {address} on {link.Name}");
            }
        }
        foreach (var route in Routes)
        {
            NetLink link = links[route.Mac];
            uint seq = socket.NextSeq();
            string via = route.Gateway is null ? "" : $" via {route.Gateway}";
            socket.Request(RtNetlink.NewRoute(seq, link.Index, route.Destination, route.Gateway), seq, $"RTM_NEWROUTE {route.Destination}{via} on {link.Name}");
        }
    }

    /// <summary>Only lo up (no NICs: --net=none, or no ConfigurePod before the first app).</summary>
    public static void BringUpLoopback()
    {
        using var socket = RtNetlinkSocket.Open();
        SetUp(socket, RtNetlink.LoopbackIndex, "lo", 0);
    }

    /// <summary>Gives the link <paramref name="mac"/>, down: a driver without IFF_LIVE_ADDR_CHANGE refuses a new
    /// address on a running link (EBUSY), and the kernel applies IFLA_ADDRESS before flags in one request, hence
    /// two. A NIC of a restored template was never brought up, so usually only the second is sent.</summary>
    private static void SetAddress(RtNetlinkSocket socket, NetLink link, string mac)
    {
        uint seq;
        if ((link.Flags & RtNetlink.IFF_UP) != 0)
        {
            seq = socket.NextSeq();
            socket.Request(RtNetlink.SetLinkDown(seq, link.Index), seq, $"RTM_NEWLINK {link.Name} down");
        }
        seq = socket.NextSeq();
        socket.Request(RtNetlink.SetLinkAddress(seq, link.Index, MacBytes(mac)), seq, $"RTM_NEWLINK {link.Name} address {mac}");
    }

    private static void SetUp(RtNetlinkSocket socket, int index, string name, uint mtu)
    {
        uint seq = socket.NextSeq();
        socket.Request(RtNetlink.SetLinkUp(seq, index, mtu), seq, mtu == 0 ? $"RTM_NEWLINK {name} up" : $"RTM_NEWLINK {name} up mtu {mtu}");
    }

    /// <summary>The links by their current MACs (each NIC's link_mac or MAC); polls while the virtio-net driver may
    /// still be probing.</summary>
    private Dictionary<string, NetLink> FindLinks(RtNetlinkSocket socket, TimeSpan wait)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        while (true)
        {
            List<NetLink> all = socket.Links();
            var byMac = new Dictionary<string, NetLink>();
            foreach (var link in all)
                if ((link.Flags & IFF_LOOPBACK) == 0 && link.Mac.Length > 0) byMac.TryAdd(link.Mac, link);
            InterfaceConfig? missing = Interfaces.FirstOrDefault(n => !byMac.ContainsKey(n.CurrentMac));
            if (missing is null) return byMac;
            if (System.Diagnostics.Stopwatch.GetElapsedTime(start) >= wait)
            {
                string present = all.Count == 0 ? "none" : string.Join(", ", all.Select(l => l.Mac.Length > 0 ? $"{l.Name} {l.Mac}" : l.Name));
                string whose = missing.LinkMac is null ? "" : $"the link MAC of the interface {missing.Mac}; ";
                throw new LinkNotFoundException($"No network link has the MAC {missing.CurrentMac} ({whose}waited {(long)wait.TotalMilliseconds} ms; links: {present}).");
            }
            Thread.Sleep(20);
        }
    }

    /// <summary>"02:00:AC:10:1c:02" → "02:00:ac:10:1c:02".</summary>
    public static string ParseMac(string text)
    {
        bool ok = text.Length == 17;
        for (int i = 0; ok && i < 17; i++)
            ok = i % 3 == 2 ? text[i] == ':' : char.IsAsciiHexDigit(text[i]);
        return ok ? text.ToLowerInvariant() : throw new ArgumentException($"'{text}' is not a MAC address (six hex bytes separated by ':').");
    }

    /// <summary>The six bytes of a MAC from <see cref="ParseMac"/>.</summary>
    public static byte[] MacBytes(string mac) => Convert.FromHexString(ParseMac(mac).Replace(":", "", StringComparison.Ordinal));

    /// <summary>"172.16.28.2/24"; IPv6 is refused with its own message.</summary>
    public static Ipv4Prefix ParsePrefix(string text, string what)
    {
        if (text.Contains(':')) throw new ArgumentException($"The {what} '{text}' is IPv6, which is not supported yet.");
        int slash = text.IndexOf('/');
        if (slash < 0 || !TryParseIpv4(text[..slash], out IPAddress? address) || text.Length - slash - 1 is < 1 or > 2
            || !int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int length) || length > 32)
            throw new ArgumentException($"The {what} '{text}' is not an IPv4 CIDR such as 172.16.28.2/24.");
        return new Ipv4Prefix(address, length);
    }

    public static IPAddress ParseIpv4(string text, string what)
    {
        if (text.Contains(':')) throw new ArgumentException($"The {what} '{text}' is IPv6, which is not supported yet.");
        return TryParseIpv4(text, out IPAddress? address) ? address : throw new ArgumentException($"The {what} '{text}' is not an IPv4 address.");
    }

    /// <summary>Strict dotted quad: four decimal numbers 0..255 without leading zeros (inet_aton would read
    /// "010" as octal and "1.2" as 1.0.0.2).</summary>
    private static bool TryParseIpv4(string text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IPAddress? address)
    {
        string[] parts = text.Split('.');
        byte[] bytes = new byte[4];
        bool ok = parts.Length == 4;
        for (int i = 0; ok && i < 4; i++)
            ok = parts[i].Length is > 0 and <= 3 && (parts[i].Length == 1 || parts[i][0] != '0')
                && byte.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out bytes[i]);
        address = ok ? new IPAddress(bytes) : null;
        return ok;
    }

    private static IPAddress Mask(Ipv4Prefix prefix)
    {
        byte[] bytes = prefix.Address.GetAddressBytes();
        for (int bit = prefix.Length; bit < 32; bit++) bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        return new IPAddress(bytes);
    }
}

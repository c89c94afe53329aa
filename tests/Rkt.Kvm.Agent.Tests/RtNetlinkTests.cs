using System.Net;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.GuestAgent;
using Rkt.Kvm.GuestAgent.Apps;
using Rkt.Kvm.GuestAgent.Network;

namespace Rkt.Kvm.Agent.Tests;

/// <summary>The rtnetlink encoding against the uapi layouts, byte for byte (x86-64: little-endian host order;
/// addresses in network order). nlmsghdr 16, ifinfomsg 16, ifaddrmsg 8, rtmsg 12, rtattr 4, all aligned to 4.</summary>
public class RtNetlinkTests
{
    private static Ipv4Prefix Prefix(string address, int length) => new(IPAddress.Parse(address), length);

    private static byte[] Hex(string hex) => Convert.FromHexString(hex.Replace(" ", "").Replace("|", ""));

    [Fact]
    public void SetLinkUp_is_newlink_with_ifinfomsg_up_in_flags_and_change_and_an_mtu_attribute()
    {
        byte[] m = RtNetlink.SetLinkUp(7, 3, 1450);
        Assert.Equal(Hex(
            "28000000 1000 0500 07000000 00000000" +  // nlmsghdr: len 40, RTM_NEWLINK, REQUEST|ACK, seq 7, pid 0
            "00 00 0000 03000000 01000000 01000000" + // ifinfomsg: AF_UNSPEC, pad, type 0, index 3, IFF_UP, change IFF_UP
            "0800 0400 aa050000"), m);                // IFLA_MTU 1450
        Assert.Equal(Hex("20000000 1000 0500 01000000 00000000 | 00 00 0000 01000000 01000000 01000000"), RtNetlink.SetLinkUp(1, 1, 0));
    }

    [Fact]
    public void SetLinkDown_clears_iff_up_through_ifi_change()
    {
        Assert.Equal(Hex("20000000 1000 0500 04000000 00000000 | 00 00 0000 03000000 00000000 01000000"), RtNetlink.SetLinkDown(4, 3));
    }

    [Fact]
    public void SetLinkAddress_is_newlink_with_no_flag_change_and_a_six_byte_address_padded_to_12()
    {
        Assert.Equal(Hex(
            "2c000000 1000 0500 06000000 00000000" +  // len 44, RTM_NEWLINK, REQUEST|ACK, seq 6
            "00 00 0000 03000000 00000000 00000000" + // ifinfomsg: index 3, flags 0, change 0
            "0a00 0100 0200ac101c02 0000"),           // IFLA_ADDRESS, rta_len 10, padded to 12
            RtNetlink.SetLinkAddress(6, 3, PodNetwork.MacBytes("02:00:AC:10:1C:02")));
    }

    [Fact]
    public void GetLinks_is_a_dump_request_with_an_empty_ifinfomsg()
    {
        Assert.Equal(Hex("20000000 1200 0103 05000000 00000000 | 00000000 00000000 00000000 00000000"), RtNetlink.GetLinks(5));
    }

    [Fact]
    public void NewAddress_carries_local_address_and_noprefixroute_in_ifa_flags()
    {
        Assert.Equal(Hex(
            "30000000 1400 0506 09000000 00000000" + // len 48, RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE
            "02 18 00 00 03000000" +                 // ifaddrmsg: AF_INET, /24, flags 0, scope universe, index 3
            "0800 0200 ac101c02" +                   // IFA_LOCAL 172.16.28.2
            "0800 0100 ac101c02" +                   // IFA_ADDRESS
            "0800 0800 00020000"),                   // IFA_FLAGS IFA_F_NOPREFIXROUTE (0x200)
            RtNetlink.NewAddress(9, 3, Prefix("172.16.28.2", 24)));
    }

    [Fact]
    public void NewRoute_link_route_is_scope_link_with_dst_and_oif()
    {
        Assert.Equal(Hex(
            "2c000000 1800 0506 0a000000 00000000" +       // len 44, RTM_NEWROUTE
            "02 18 00 00 fe 03 fd 01 00000000" +           // rtmsg: AF_INET, dst /24, src 0, tos 0, main, boot, link, unicast, flags
            "0800 0100 ac101c00" +                         // RTA_DST 172.16.28.0
            "0800 0400 03000000"),                         // RTA_OIF 3
            RtNetlink.NewRoute(10, 3, Prefix("172.16.28.0", 24), null));
    }

    [Fact]
    public void NewRoute_default_route_has_no_dst_and_a_gateway_in_universe_scope()
    {
        Assert.Equal(Hex(
            "2c000000 1800 0506 0b000000 00000000" +
            "02 00 00 00 fe 03 00 01 00000000" +           // dst_len 0, scope universe
            "0800 0500 ac101c01" +                         // RTA_GATEWAY 172.16.28.1
            "0800 0400 02000000"),
            RtNetlink.NewRoute(11, 2, Prefix("0.0.0.0", 0), IPAddress.Parse("172.16.28.1")));
        Assert.Equal(16 + 12 + 3 * 8, RtNetlink.NewRoute(1, 2, Prefix("10.1.0.0", 16), IPAddress.Parse("172.16.28.1")).Length);
    }

    [Fact]
    public void Every_message_states_its_length_and_is_aligned_to_4()
    {
        foreach (byte[] m in new[] { RtNetlink.SetLinkUp(1, 1, 0), RtNetlink.SetLinkUp(1, 1, 9000), RtNetlink.GetLinks(1),
            RtNetlink.SetLinkDown(1, 2), RtNetlink.SetLinkAddress(1, 2, new byte[6]),
            RtNetlink.NewAddress(1, 2, Prefix("10.0.0.1", 8)), RtNetlink.NewRoute(1, 2, Prefix("0.0.0.0", 0), null) })
        {
            Assert.Equal(m.Length, BitConverter.ToInt32(m, 0));
            Assert.Equal(0, m.Length % 4);
        }
    }

    /// <summary>A message as the kernel writes it, built here independently of the agent's writer.</summary>
    private static byte[] Message(ushort type, uint seq, byte[] body)
    {
        var m = new List<byte>();
        m.AddRange(BitConverter.GetBytes(16 + body.Length));
        m.AddRange(BitConverter.GetBytes(type));
        m.AddRange(BitConverter.GetBytes((ushort)RtNetlink.NLM_F_MULTI));
        m.AddRange(BitConverter.GetBytes(seq));
        m.AddRange(BitConverter.GetBytes(4242u));
        m.AddRange(body);
        while (m.Count % 4 != 0) m.Add(0);
        return [.. m];
    }

    private static byte[] Attr(ushort type, byte[] payload)
    {
        var a = new List<byte>();
        a.AddRange(BitConverter.GetBytes((ushort)(4 + payload.Length)));
        a.AddRange(BitConverter.GetBytes(type));
        a.AddRange(payload);
        while (a.Count % 4 != 0) a.Add(0);
        return [.. a];
    }

    private static byte[] LinkMessage(uint seq, int index, string name, byte[]? mac, uint flags) =>
        Message(RtNetlink.RTM_NEWLINK, seq, [
            .. Hex("00 00 0100"), .. BitConverter.GetBytes(index), .. BitConverter.GetBytes(flags), .. Hex("00000000"),
            .. Attr(RtNetlink.IFLA_MTU, BitConverter.GetBytes(1500u)),
            .. Attr(RtNetlink.IFLA_IFNAME, [.. System.Text.Encoding.ASCII.GetBytes(name), 0]), // 5..16 bytes: padded
            .. (mac is null ? [] : Attr(RtNetlink.IFLA_ADDRESS, mac)),                          // 6 bytes: rta_len 10, padded to 12
        ]);

    [Fact]
    public void ParseLinks_reads_index_name_mac_and_flags_until_done()
    {
        byte[] reply = [
            .. LinkMessage(3, 1, "lo", new byte[6], 0x49),
            .. LinkMessage(3, 2, "eth0", Hex("0200ac101c02"), 0x1003),
            .. LinkMessage(2, 9, "stale", null, 0),                 // another request's: ignored
            .. Message(RtNetlink.NLMSG_DONE, 3, new byte[4]),
        ];
        var links = new List<NetLink>();
        Assert.True(RtNetlink.ParseLinks(reply, 3, links));
        Assert.Equal([new NetLink(1, "lo", "00:00:00:00:00:00", 0x49), new NetLink(2, "eth0", "02:00:ac:10:1c:02", 0x1003)], links);

        var partial = new List<NetLink>();
        Assert.False(RtNetlink.ParseLinks(LinkMessage(3, 4, "eth1", null, 0), 3, partial));
        Assert.Equal("", Assert.Single(partial).Mac);
    }

    [Fact]
    public void ParseLinks_turns_an_error_or_a_truncated_message_into_an_exception()
    {
        byte[] error = Message(RtNetlink.NLMSG_ERROR, 3, [.. BitConverter.GetBytes(-1), .. new byte[16]]);
        var e = Assert.Throws<NetlinkException>(() => RtNetlink.ParseLinks(error, 3, []));
        Assert.Equal(1, e.Errno);
        Assert.StartsWith("netlink RTM_GETLINK: ", e.Message);
        byte[] truncated = LinkMessage(3, 2, "eth0", null, 0)[..20];
        truncated[0] = 200;
        Assert.Throws<NetlinkException>(() => RtNetlink.ParseLinks(truncated, 3, []));
    }

    [Fact]
    public void FindAck_returns_the_errno_of_the_matching_nlmsgerr()
    {
        byte[] original = RtNetlink.NewAddress(8, 2, Prefix("10.0.0.1", 8));
        byte[] ack = Message(RtNetlink.NLMSG_ERROR, 8, [.. BitConverter.GetBytes(0), .. original[..16]]);
        byte[] eexist = Message(RtNetlink.NLMSG_ERROR, 8, [.. BitConverter.GetBytes(-17), .. original]);
        Assert.Equal(0, RtNetlink.FindAck(ack, 8));
        Assert.Equal(17, RtNetlink.FindAck(eexist, 8));
        Assert.Null(RtNetlink.FindAck(ack, 9));
        Assert.Equal(17, RtNetlink.FindAck([.. ack[..0], .. Message(RtNetlink.NLMSG_ERROR, 1, [.. BitConverter.GetBytes(-1), .. new byte[16]]), .. eexist], 8));
        Assert.Null(RtNetlink.FindAck(ack[..10], 8));
    }
}

/// <summary>ConfigurePod's network fields are validated before anything is touched.</summary>
public class PodNetworkParseTests
{
    private static NetworkInterface Nic(string mac, uint mtu = 0, params string[] addresses)
    {
        var nic = new NetworkInterface { Mac = mac, Mtu = mtu };
        nic.Addresses.Add(addresses);
        return nic;
    }

    private static NetworkInterface Renamed(string mac, string linkMac) => new() { Mac = mac, LinkMac = linkMac };

    private static NetworkRoute Route(string destination, string gateway, string mac) => new() { Destination = destination, Gateway = gateway, Mac = mac };

    internal static (NetworkInterface[], NetworkRoute[]) Typical(string mac = "02:00:ac:10:1c:02") => (
        [Nic(mac, 1450, "172.16.28.2/24")],
        [Route("172.16.28.0/24", "", mac), Route("0.0.0.0/0", "172.16.28.1", mac)]);

    [Fact]
    public void A_typical_network_parses_to_its_canonical_text()
    {
        var (nics, routes) = Typical("02:00:AC:10:1C:02");
        PodNetwork network = PodNetwork.Parse(nics, routes);
        Assert.Equal("lo up; 02:00:ac:10:1c:02 mtu 1450 172.16.28.2/24; route 172.16.28.0/24 on 02:00:ac:10:1c:02; route 0.0.0.0/0 via 172.16.28.1 on 02:00:ac:10:1c:02",
            network.ToString());
        Assert.Equal(network.ToString(), PodNetwork.Parse(Typical().Item1, Typical().Item2).ToString());
        Assert.Equal(PodNetwork.LoopbackOnly, PodNetwork.Parse([], []).ToString());
        Assert.Equal(new Ipv4Prefix(IPAddress.Parse("172.16.28.2"), 24), network.Interfaces[0].Addresses[0]);
        Assert.Null(network.Routes[0].Gateway);
    }

    [Theory]
    [InlineData("02:00:ac:10:1c", "is not a MAC address")]
    [InlineData("02-00-ac-10-1c-02", "is not a MAC address")]
    [InlineData("02:00:ac:10:1c:0g", "is not a MAC address")]
    public void Bad_macs_are_refused(string mac, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => PodNetwork.Parse([Nic(mac)], []));
        Assert.Contains(message, e.Message);
        Assert.Contains(mac, e.Message);
    }

    [Theory]
    [InlineData("172.16.28.2", "is not an IPv4 CIDR")]
    [InlineData("172.16.28.2/33", "is not an IPv4 CIDR")]
    [InlineData("172.16.28/24", "is not an IPv4 CIDR")]
    [InlineData("172.16.28.256/24", "is not an IPv4 CIDR")]
    [InlineData("172.16.028.2/24", "is not an IPv4 CIDR")]
    [InlineData("172.16.28.2/", "is not an IPv4 CIDR")]
    [InlineData(" 172.16.28.2/24", "is not an IPv4 CIDR")]
    [InlineData("fd00::2/64", "is IPv6, which is not supported yet")]
    public void Bad_addresses_are_refused(string address, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => PodNetwork.Parse([Nic("02:00:ac:10:1c:02", 0, address)], []));
        Assert.Contains(message, e.Message);
        Assert.Contains($"'{address}'", e.Message);
    }

    [Fact]
    public void Bad_routes_and_interfaces_are_refused_with_what_is_wrong()
    {
        const string mac = "02:00:ac:10:1c:02";
        string Refused(NetworkInterface[] nics, NetworkRoute[] routes) => Assert.Throws<ArgumentException>(() => PodNetwork.Parse(nics, routes)).Message;
        Assert.Contains("has host bits set; use 172.16.28.0/24", Refused([Nic(mac)], [Route("172.16.28.2/24", "", mac)]));
        Assert.Contains("which is not one of the request's interfaces", Refused([Nic(mac)], [Route("0.0.0.0/0", "172.16.28.1", "02:00:ac:10:1c:03")]));
        Assert.Contains("names no interface", Refused([Nic(mac)], [Route("0.0.0.0/0", "172.16.28.1", "")]));
        Assert.Contains("gateway of the route to 0.0.0.0/0 '172.16.28' is not an IPv4 address", Refused([Nic(mac)], [Route("0.0.0.0/0", "172.16.28", mac)]));
        Assert.Contains("is IPv6", Refused([Nic(mac)], [Route("::/0", "", mac)]));
        Assert.Contains("is IPv6", Refused([Nic(mac)], [Route("0.0.0.0/0", "fe80::1", mac)]));
        Assert.Contains("is given twice", Refused([Nic(mac), Nic(mac.ToUpperInvariant())], []));
        Assert.Contains("outside 68..65535", Refused([Nic(mac, 67)], []));
    }

    [Fact]
    public void A_link_mac_is_parsed_like_a_mac_and_left_out_of_the_canonical_text()
    {
        var (nics, routes) = Typical();
        nics[0].LinkMac = "02:00:AC:10:00:99";
        PodNetwork network = PodNetwork.Parse(nics, routes);
        Assert.Equal("02:00:ac:10:00:99", network.Interfaces[0].LinkMac);
        Assert.Equal("02:00:ac:10:00:99", network.Interfaces[0].CurrentMac);
        Assert.Equal("02:00:ac:10:1c:02", network.Interfaces[0].Mac);
        // The same network as without it: a repeated ConfigurePod with or without link_mac is the same request.
        Assert.Equal(PodNetwork.Parse(Typical().Item1, Typical().Item2).ToString(), network.ToString());

        // link_mac equal to mac (any case): nothing to rename.
        nics[0].LinkMac = "02:00:AC:10:1C:02";
        Assert.Null(PodNetwork.Parse(nics, routes).Interfaces[0].LinkMac);
        nics[0].LinkMac = "";
        Assert.Null(PodNetwork.Parse(nics, routes).Interfaces[0].LinkMac);
    }

    [Theory]
    [InlineData("02:00:ac:10:00")]
    [InlineData("02-00-ac-10-00-99")]
    [InlineData("02:00:ac:10:00:9z")]
    [InlineData(" 02:00:ac:10:00:99")]
    public void Bad_link_macs_are_refused_like_bad_macs(string linkMac)
    {
        var e = Assert.Throws<ArgumentException>(() => PodNetwork.Parse([Renamed("02:00:ac:10:1c:02", linkMac)], []));
        Assert.Equal($"'{linkMac}' is not a MAC address (six hex bytes separated by ':').", e.Message);
    }

    [Fact]
    public void Link_macs_that_would_find_one_link_twice_are_refused()
    {
        string Refused(params NetworkInterface[] nics) => Assert.Throws<ArgumentException>(() => PodNetwork.Parse(nics, [])).Message;
        Assert.Equal("The link MAC 02:00:ac:10:00:99 is given twice.",
            Refused(Renamed("02:00:ac:10:1c:02", "02:00:ac:10:00:99"), Renamed("02:00:ac:10:1d:02", "02:00:AC:10:00:99")));
        Assert.Equal("The link MAC 02:00:ac:10:1c:02 of the interface 02:00:ac:10:1d:02 is the MAC by which the interface 02:00:ac:10:1c:02 finds its link.",
            Refused(Nic("02:00:ac:10:1c:02"), Renamed("02:00:ac:10:1d:02", "02:00:ac:10:1c:02")));
        Assert.Equal("The interface 02:00:ac:10:00:99 would find the link that the interface 02:00:ac:10:1c:02 finds by its link MAC 02:00:ac:10:00:99.",
            Refused(Renamed("02:00:ac:10:1c:02", "02:00:ac:10:00:99"), Nic("02:00:ac:10:00:99")));

        // Two template links given each other's MACs: every NIC still finds a link of its own.
        PodNetwork swapped = PodNetwork.Parse([Renamed("02:00:ac:10:00:02", "02:00:ac:10:00:01"), Renamed("02:00:ac:10:00:01", "02:00:ac:10:00:02")], []);
        Assert.Equal(["02:00:ac:10:00:01", "02:00:ac:10:00:02"], swapped.Interfaces.Select(n => n.CurrentMac));
    }

    [Fact]
    public void ConfigurePod_refuses_a_bad_link_mac_as_invalid_argument()
    {
        var supervisor = new AppSupervisor(enabled: true);
        var request = new ConfigurePodRequest { Hostname = "pod" };
        request.Interfaces.Add(Renamed("02:00:ac:10:1c:02", "template"));
        var e = Assert.Throws<GrpcException>(() => supervisor.ConfigurePod(request));
        Assert.Equal(GrpcException.InvalidArgument, e.Status);
        Assert.Equal("'template' is not a MAC address (six hex bytes separated by ':').", e.Message);
    }

    [Fact]
    public void Empty_hosts_and_resolv_conf_keep_their_meaning()
    {
        PodConfig pod = PodConfig.Create("netpod", "", "");
        Assert.Equal("", pod.ResolvConf); // an empty file: the host gave no DNS
        Assert.Equal("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tnetpod\n", pod.Hosts);
        Assert.Equal("nameserver 10.0.0.53\n", PodConfig.Create("", "", "nameserver 10.0.0.53\n").ResolvConf);
    }

    [Fact]
    public void ConfigurePod_refuses_a_bad_network_as_invalid_argument_before_touching_anything()
    {
        // Validation only: a valid network here would configure this host's own namespace.
        var supervisor = new AppSupervisor(enabled: true);
        var request = new ConfigurePodRequest { Hostname = "pod" };
        request.Interfaces.Add(Nic("02:00:ac:10:1c:02", 0, "fd00::2/64"));
        var e = Assert.Throws<GrpcException>(() => supervisor.ConfigurePod(request));
        Assert.Equal(GrpcException.InvalidArgument, e.Status);
        Assert.Equal("The address of the interface 02:00:ac:10:1c:02 'fd00::2/64' is IPv6, which is not supported yet.", e.Message);
    }
}

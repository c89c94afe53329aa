using System.Text;
using System.Text.Json.Nodes;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1.Networking;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>rkt's networking contract without a VM: network lists and configurations, CNI results,
/// net-info.json, the DNS flags; and one real CNI round trip (ptp + host-local) in a namespace.</summary>
public sealed class NetworkingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rkt-kvm-net-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string LocalConfig(params (string File, string Json)[] confs)
    {
        var netd = Directory.CreateDirectory(Path.Join(_dir, "etc", "net.d")).FullName;
        foreach (var (file, json) in confs) File.WriteAllText(Path.Join(netd, file), json);
        return Path.Join(_dir, "etc");
    }

    private string Stage1Rootfs => Path.Join(_dir, "stage1-rootfs");

    [Fact]
    public void DefaultIsRktsDefaultNetworkAndNoneHasNoNetworks()
    {
        var nets = NetworkConfig.Load(NetworkList.Parse(null), null, Stage1Rootfs);
        var only = Assert.Single(nets);
        Assert.Equal("default", only.Name);
        Assert.Equal("ptp", only.Type);
        Assert.Equal("172.16.28.0/24", JsonNode.Parse(only.Bytes)!["ipam"]!["subnet"]!.GetValue<string>());
        Assert.Empty(NetworkConfig.Load(NetworkList.Parse("none"), null, Stage1Rootfs));
    }

    [Fact]
    public void NamedNetworksComeFromNetDInFileOrderWithDefaultRestrictedAdded()
    {
        var config = LocalConfig(
            ("20-b.conf", """{"name":"b","type":"bridge"}"""),
            ("10-a.conf", """{"name":"a","type":"ptp"}"""),
            ("30-a-again.conf", """{"name":"a","type":"macvlan"}"""),
            ("notes.txt", "not a network"));
        var nets = NetworkConfig.Load(NetworkList.Parse("b,a"), config, Stage1Rootfs);
        Assert.Equal(["a", "b", "default-restricted"], nets.Select(n => n.Name));
        Assert.Equal("ptp", nets[0].Type); // the first file of a name wins
        Assert.Equal(["a", "b", "default"], NetworkConfig.Load(NetworkList.Parse("all"), config, Stage1Rootfs).Select(n => n.Name));
        // A user's "default" replaces the built-in one.
        var own = LocalConfig(("99-mine.conf", """{"name":"default","type":"bridge"}"""));
        Assert.Equal("bridge", Assert.Single(NetworkConfig.Load(NetworkList.Default, own, Stage1Rootfs)).Type);
    }

    [Fact]
    public void TheStage1ImagesCopyOfTheDefaultNetworkIsUsed()
    {
        var path = Path.Join(Stage1Rootfs, NetworkConfig.DefaultPath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, """{"name":"default","type":"ptp","ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}""");
        Assert.Contains("10.1.2.0/24", Encoding.UTF8.GetString(Assert.Single(NetworkConfig.Load(NetworkList.Default, null, Stage1Rootfs)).Bytes));
    }

    [Theory]
    [InlineData("nosuch", "networks not found: nosuch")]
    [InlineData("a,nosuch,other", "networks not found: nosuch, other")]
    public void AnUnknownNetworkIsAnErrorNamingIt(string net, string expected)
    {
        var config = LocalConfig(("10-a.conf", """{"name":"a","type":"ptp"}"""));
        Assert.Contains(expected, Assert.Throws<Stage1Exception>(() => NetworkConfig.Load(NetworkList.Parse(net), config, Stage1Rootfs)).Message);
    }

    [Theory]
    [InlineData("{not json", "is not valid JSON")]
    [InlineData("[1,2]", "is not a JSON object")]
    [InlineData("""{"type":"ptp"}""", "has no \"name\"")]
    [InlineData("""{"name":"a"}""", "has no plugin \"type\"")]
    [InlineData("""{"name":"a","type":"../../bin/sh"}""", "is not a plugin name")]
    [InlineData("""{"name":7,"type":"ptp"}""", "\"name\" must be a string")]
    public void AMalformedConfigurationIsAClearError(string json, string expected)
    {
        var config = LocalConfig(("10-a.conf", json));
        var e = Assert.Throws<Stage1Exception>(() => NetworkConfig.Load(NetworkList.Parse("all"), config, Stage1Rootfs));
        Assert.Contains("10-a.conf", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void ResultsOfEveryCniVersionAreRead()
    {
        var v03 = CniResult.Parse("""
            {"cniVersion":"0.3.1","interfaces":[{"name":"eth0","mac":"be:fc:85:b2:68:47","sandbox":"/x"}],
             "ips":[{"version":"6","address":"fd00::2/64"},{"version":"4","interface":0,"address":"172.16.28.2/24","gateway":"172.16.28.1"}],
             "dns":{"nameservers":["10.0.0.53"],"search":["pod.local"],"options":["ndots:2"]}}
            """, "ptp");
        var ip = Assert.Single(v03.Ips);
        Assert.Equal("172.16.28.2/24", ip.Cidr);
        Assert.Equal("172.16.28.1", ip.Gateway!.ToString());
        Assert.Equal("255.255.255.0", ip.Mask.ToString());
        Assert.Equal("# x\nnameserver 10.0.0.53\nsearch pod.local\noptions ndots:2\n", CniResult.ResolvConf(v03.Dns, "x"));
        var v02 = CniResult.Parse("""{"ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1"},"dns":{}}""", "bridge");
        Assert.Equal("255.255.0.0", Assert.Single(v02.Ips).Mask.ToString());
        Assert.True(v02.Dns.IsEmpty);
        Assert.Contains("not an address with a prefix length", Assert.Throws<Stage1Exception>(() => CniResult.Parse("""{"ips":[{"address":"10.0.0.1"}]}""", "x")).Message);
        Assert.Contains("not JSON", Assert.Throws<Stage1Exception>(() => CniResult.Parse("oops", "x")).Message);
    }

    [Fact]
    public void PluginErrorsAreTheSpecsMessage()
    {
        Assert.Equal("failed to allocate for range 0: no IP addresses available in range set: 10.0.0.2-10.0.0.2",
            CniPlugin.ErrorMessage(new HostCommandResult(1, """{"code":999,"msg":"failed to allocate for range 0: no IP addresses available in range set: 10.0.0.2-10.0.0.2"}""", "")));
        Assert.Equal("bad: detail", CniPlugin.ErrorMessage(new HostCommandResult(1, """{"code":7,"msg":"bad","details":"detail"}""", "")));
        Assert.Equal("boom", CniPlugin.ErrorMessage(new HostCommandResult(2, "", "boom\nmore")));
        Assert.Equal("exit status 3", CniPlugin.ErrorMessage(new HostCommandResult(3, "", "")));
    }

    [Fact]
    public void AMissingPluginNamesThePackage()
    {
        var e = Assert.Throws<Stage1Exception>(() => new CniPlugin([_dir]).Find("ptp"));
        Assert.Contains("CNI plugin \"ptp\" not found", e.Message);
        Assert.Contains("containernetworking-plugins", e.Message);
    }

    [Fact]
    public void NetInfoIsRktsFormatAndShowsAsRktDoes()
    {
        var path = Path.Join(_dir, "net-info.json");
        Assert.Empty(NetInfo.Load(path)); // no file: no networks
        NetInfo.Save(path, [new("default", "/p/net/99-default.conf", "/usr/lib/cni", "eth0", "172.16.28.2", "", "255.255.255.0"),
                            new("b", "/p/net/20-b.conf", "/usr/lib/cni", "eth1", "10.1.0.5", "IP=10.1.0.5", "255.255.0.0")]);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsArray();
        Assert.Equal(["netName", "netConf", "pluginPath", "ifName", "ip", "args", "mask"], json[0]!.AsObject().Select(p => p.Key));
        var back = NetInfo.Load(path);
        Assert.Equal("default:ip4=172.16.28.2, b:ip4=10.1.0.5", NetInfo.Describe(back));
        File.WriteAllText(path, "{garbage");
        Assert.Empty(NetInfo.Load(path));
    }

    [Fact]
    public void DnsFlagsBecomeStage0FilesAndTheConfMode()
    {
        var none = new DnsRequest();
        Assert.Null(none.ConfMode);
        var dns = new DnsRequest();
        dns.Apply("dns", "10.0.0.53,10.0.0.54");
        dns.Apply("dns-search", "a.example");
        dns.Apply("dns-opt", "ndots:1");
        dns.Apply("hosts-entry", "10.0.0.7=db,db.local");
        Assert.Equal("resolv=stage0,hosts=stage0", dns.ConfMode);
        dns.WriteStage0Files(_dir);
        Assert.Equal("# Generated by rkt-kvm run\nnameserver 10.0.0.53\nnameserver 10.0.0.54\nsearch a.example\noptions ndots:1\n", File.ReadAllText(Path.Join(_dir, "etc", "rkt-resolv.conf")));
        Assert.EndsWith("10.0.0.7\tdb db.local\n", File.ReadAllText(Path.Join(_dir, "etc", "rkt-hosts")));
        var host = new DnsRequest();
        host.Apply("dns", "host");
        host.Apply("hosts-entry", "host");
        Assert.Equal("resolv=host,hosts=host", host.ConfMode);
        Assert.Throws<Stage0.CommandLine.UsageException>(() => new DnsRequest().Apply("dns", "not-an-ip"));
        Assert.Throws<Stage0.CommandLine.UsageException>(() => new DnsRequest().Apply("hosts-entry", "db"));
        var mixed = new DnsRequest();
        mixed.Apply("dns", "host");
        Assert.Throws<Stage0.CommandLine.UsageException>(() => mixed.Apply("dns", "10.0.0.1"));
    }

    [Fact]
    public void TeardownOfAPodThatNeverRanDoesNothing()
    {
        var uuid = Guid.NewGuid().ToString();
        var podDir = Directory.CreateDirectory(Path.Join(_dir, uuid)).FullName;
        var network = new PodNetwork(new PodDirectory(podDir), uuid, new CniPlugin([_dir]));
        network.Teardown();
        network.Teardown();
        Assert.Empty(Directory.GetFileSystemEntries(podDir));
    }

    /// <summary>
    /// The real thing on this host, no VM: a pod joins a ptp network (host-local IPAM on a subnet of
    /// its own), gets its namespace, veth, tap and redirects; teardown, run twice, leaves no
    /// namespace, veth, lease or masquerade rule.
    /// </summary>
    [SkippableFact]
    public void SetupAndTeardownLeaveNothingBehind()
    {
        Skip.IfNot(Environment.UserName == "root" && File.Exists("/dev/net/tun") && File.Exists("/usr/lib/cni/ptp"),
            "needs root, /dev/net/tun and Debian's containernetworking-plugins");
        var uuid = Guid.NewGuid().ToString();
        var name = "rkt-kvm-test-" + uuid[..8];
        var config = LocalConfig(("10-t.conf", $$$"""{"cniVersion":"0.3.1","name":"{{{name}}}","type":"ptp","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.211.{{{Random.Shared.Next(0, 250)}}}.0/24","routes":[{"dst":"0.0.0.0/0"}]}}"""));
        var podDir = Directory.CreateDirectory(Path.Join(_dir, uuid)).FullName;
        var pod = new PodDirectory(podDir);
        var network = new PodNetwork(pod, uuid, CniPlugin.FromEnvironment());
        string before = HostState(name, uuid);
        var setup = network.Setup(NetworkList.Parse($"{name}:X=1"), config);
        try
        {
            var nic = setup.Nics[0];
            Assert.Equal(2, setup.Nics.Count); // the user's network, then default-restricted as rkt adds it
            Assert.Equal(("eth0", "tap0"), (nic.IfName, nic.Tap));
            Assert.Matches("^([0-9a-f]{2}:){5}[0-9a-f]{2}$", nic.Mac);
            Assert.StartsWith("10.211.", Assert.Single(nic.Addresses));
            Assert.Contains(nic.Routes, r => r.Destination == "0.0.0.0/0" && r.Gateway is not null);
            Assert.Null(nic.Routes[0].Gateway); // on-link routes first, so the gateway is reachable when the default route is added
            Assert.Equal($"{name}:ip4={nic.Addresses[0].Split('/')[0]}, default-restricted:ip4={setup.NetInfo[1].Ip}", NetInfo.Describe(NetInfo.Load(pod.NetInfo)));
            Assert.Equal("X=1", setup.NetInfo[0].Args);
            Assert.Contains($"cni-{uuid}", HostCommand.Check("ip", ["netns", "list"]));
            Assert.Contains("tap0", HostCommand.Check("ip", ["-n", $"cni-{uuid}", "link", "show", "tap0"]));
            Assert.Contains("mirred", HostCommand.Check("tc", ["-n", $"cni-{uuid}", "filter", "show", "dev", "eth0", "ingress"]));
            var during = HostState(name, uuid).Split('\n');
            Assert.Contains($"cni-{uuid}", during[0]); // what the filter keeps sees the pod's namespace, veth, lease and rules
            Assert.Contains("veth", during[1]);
            Assert.NotEmpty(during[2]);
            Assert.Contains(during[3..], l => l.Contains("MASQUERADE") || l.Contains("CNI-"));
        }
        finally
        {
            network.Teardown();
            network.Teardown(); // idempotent
        }
        Assert.Equal(before, HostState(name, uuid));
        Assert.True(File.Exists(pod.NetInfo)); // kept for `list` until the pod is removed, as rkt does
        Assert.False(File.Exists(Path.Join(podDir, "netns")));
        Directory.Delete(Path.Join("/var/lib/cni/networks", name), recursive: true); // host-local keeps a network's (empty) lease directory
    }

    /// <summary>What a leaked pod network would leave: its namespace, veths into it, leases of the test network, masquerade rules.
    /// Only what names this pod or its network counts: other test assemblies make namespaces and veths in parallel.</summary>
    private static string HostState(string network, string uuid)
    {
        var leases = Path.Join("/var/lib/cni/networks", network);
        bool Ours(string line) => line.Contains(uuid) || line.Contains(network);
        return string.Join("\n",
            string.Join(" ", HostCommand.Check("ip", ["netns", "list"]).Split('\n').Where(Ours)),
            string.Join(" ", HostCommand.Check("ip", ["-o", "link", "show"]).Split('\n').Where(l => l.Contains("veth") && Ours(l)).Select(l => l.Split(':')[1])),
            Directory.Exists(leases) ? string.Join(" ", Directory.GetFiles(leases).Select(Path.GetFileName).Where(f => f is not ("lock" or null) && !f.StartsWith("last_reserved_ip"))) : "",
            string.Join("\n", HostCommand.Check("iptables-save", ["-t", "nat"]).Split('\n').Where(l => l.StartsWith("-A") && Ours(l))));
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.GuestAgent;
using Rkt.Kvm.GuestAgent.Apps;
using Rkt.Kvm.GuestAgent.Network;

namespace Rkt.Kvm.Agent.Tests;

/// <summary>A throw-away network namespace (`ip netns add`) with a veth pair, and a way to run code in it: a
/// thread that setns()es into it (the network namespace is per thread, and netlink sockets take the namespace
/// of the thread that opens them).</summary>
public sealed class TestNetns : IDisposable
{
    public const string Mac = "02:00:ac:10:1c:02";

    public string Name { get; } = "rkt-agent-" + Guid.NewGuid().ToString("N")[..10];

    [DllImport("libc", SetLastError = true)]
    private static extern int setns(int fd, int nstype);

    [DllImport("libc")]
    private static extern uint geteuid();

    private const int CLONE_NEWNET = 0x40000000;

    /// <summary>Why netns tests cannot run here, or null.</summary>
    public static string? Unavailable()
    {
        if (!OperatingSystem.IsLinux()) return "not Linux";
        if (geteuid() != 0) return "needs root (ip netns add, setns)";
        if (!File.Exists("/usr/sbin/ip") && !File.Exists("/sbin/ip") && !File.Exists("/usr/bin/ip")) return "needs iproute2 (ip)";
        return null;
    }

    /// <summary>A namespace with veth0 (<see cref="Mac"/>, down, as a fresh virtio-net NIC) and its peer veth1 (up).</summary>
    public TestNetns(bool withVeth = true)
    {
        Ip($"netns add {Name}");
        if (withVeth) AddVeth("veth0", Mac);
    }

    public void AddVeth(string name, string mac)
    {
        Ip($"-n {Name} link add {name} address {mac} type veth peer name {name}p");
        Ip($"-n {Name} link set {name}p up");
    }

    public string Ip(string arguments)
    {
        var info = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries)) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        string output = p.StandardOutput.ReadToEnd(), error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? output : throw new InvalidOperationException($"ip {arguments}: exit {p.ExitCode}: {error}");
    }

    /// <summary>Lines of `ip -n NAME …`, trimmed.</summary>
    public string[] Lines(string arguments) => Ip($"-n {Name} {arguments}").Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>How often the link's carrier went on or off (sysfs of the namespace, through `ip netns exec`).</summary>
    public int CarrierChanges(string link) => int.Parse(Ip($"netns exec {Name} cat /sys/class/net/{link}/carrier_changes").Trim(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Runs <paramref name="action"/> on a new thread inside the namespace; rethrows what it threw.</summary>
    public T Run<T>(Func<T> action)
    {
        T result = default!;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using (var ns = File.OpenHandle($"/run/netns/{Name}"))
                    if (setns((int)ns.DangerousGetHandle(), CLONE_NEWNET) != 0) throw new InvalidOperationException($"setns: errno {Marshal.GetLastPInvokeError()}");
                result = action();
            }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        return result;
    }

    public void Run(Action action) => Run(() => { action(); return 0; });

    public void Dispose()
    {
        try { Ip($"netns del {Name}"); } catch (InvalidOperationException) { }
    }
}

/// <summary>The agent's network code applied inside a network namespace this test makes, checked with `ip`.</summary>
public class PodNetworkNetnsTests
{
    private static ConfigurePodRequest Request(string hostname = "pod")
    {
        var request = new ConfigurePodRequest { Hostname = hostname };
        var (nics, routes) = PodNetworkParseTests.Typical();
        request.Interfaces.Add(nics);
        request.Routes.Add(routes);
        return request;
    }

    private static PodNetwork Typical() => PodNetwork.Parse(Request().Interfaces, Request().Routes);

    [SkippableFact]
    public void Apply_brings_lo_and_the_nic_up_with_its_mtu_address_and_exactly_the_given_routes()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns();
        Assert.Contains("state DOWN", ns.Lines("-o link show lo")[0]);
        ns.Run(() => Typical().Apply(TimeSpan.FromSeconds(2)));

        Assert.Matches("<LOOPBACK,UP,LOWER_UP>", ns.Lines("-o link show lo")[0]);
        Assert.Contains("inet 127.0.0.1/8", string.Join('\n', ns.Lines("-4 -o addr show dev lo")));
        string veth = ns.Lines("-o link show veth0")[0];
        Assert.Matches(@"<BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 ", veth);
        Assert.Contains("link/ether " + TestNetns.Mac, veth);
        Assert.Matches(@"^\d+: veth0 +inet 172\.16\.28\.2/24 (brd \S+ )?scope global noprefixroute veth0", Assert.Single(ns.Lines("-4 -o addr show dev veth0")));
        // No kernel prefix route: the main table holds exactly what the host asked for, in its scopes.
        Assert.Equal(["172.16.28.0/24 dev veth0 proto boot scope link", "default via 172.16.28.1 dev veth0 proto boot scope global"],
            ns.Lines("-d -4 route show table main").Select(l => l.Replace("unicast ", "")).Order(StringComparer.Ordinal));
    }

    [SkippableFact]
    public void A_netlink_error_names_the_request_and_the_errno()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns();
        ns.Run(() => Typical().Apply(TimeSpan.FromSeconds(2)));
        var e = Assert.Throws<NetlinkException>(() => ns.Run(() => Typical().Apply(TimeSpan.FromSeconds(2))));
        Assert.Equal("netlink RTM_NEWADDR 172.16.28.2/24 on veth0: File exists (errno 17)", e.Message);

        // A gateway the earlier routes do not reach: the kernel says so, naming the route.
        ns.AddVeth("veth2", "02:00:ac:10:1d:02");
        var request = new ConfigurePodRequest();
        request.Interfaces.Add(new NetworkInterface { Mac = "02:00:ac:10:1d:02", Addresses = { "172.16.29.2/24" } });
        request.Routes.Add(new NetworkRoute { Destination = "0.0.0.0/0", Gateway = "172.16.29.1", Mac = "02:00:ac:10:1d:02" });
        e = Assert.Throws<NetlinkException>(() => ns.Run(() => PodNetwork.Parse(request.Interfaces, request.Routes).Apply(TimeSpan.Zero)));
        Assert.Equal("netlink RTM_NEWROUTE 0.0.0.0/0 via 172.16.29.1 on veth2: Network is unreachable (errno 101)", e.Message);
    }

    [SkippableFact]
    public void A_mac_that_no_link_has_fails_after_the_wait_and_one_that_appears_during_it_is_found()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns(withVeth: false);
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<LinkNotFoundException>(() => ns.Run(() => Typical().Apply(TimeSpan.FromMilliseconds(300))));
        Assert.InRange(clock.ElapsedMilliseconds, 300, 5000);
        Assert.Equal("No network link has the MAC 02:00:ac:10:1c:02 (waited 300 ms; links: lo 00:00:00:00:00:00).", e.Message);
        Assert.Contains("<LOOPBACK,UP,LOWER_UP>", ns.Lines("-o link show lo")[0]); // only lo changed

        // The driver still probing: the NIC shows up while the agent waits.
        var late = Task.Run(async () => { await Task.Delay(200); ns.AddVeth("veth0", TestNetns.Mac); });
        ns.Run(() => Typical().Apply(TimeSpan.FromSeconds(10)));
        late.Wait();
        Assert.Single(ns.Lines("-4 -o addr show dev veth0"));
    }

    [SkippableFact]
    public void ConfigurePod_applies_the_network_once_repeats_are_idempotent_and_changes_are_refused()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns();
        var supervisor = new AppSupervisor(enabled: true);
        ns.Run(() => supervisor.ConfigurePod(Request()));
        Assert.Single(ns.Lines("-4 -o addr show dev veth0"));

        // The same network again (other hostname, MAC in capitals): nothing to do, and no EEXIST.
        var same = Request("other");
        same.Interfaces[0].Mac = same.Interfaces[0].Mac.ToUpperInvariant();
        ns.Run(() => supervisor.ConfigurePod(same));

        var different = Request();
        different.Interfaces[0].Mtu = 1400;
        var e = Assert.Throws<GrpcException>(() => ns.Run(() => supervisor.ConfigurePod(different)));
        Assert.Equal(GrpcException.FailedPrecondition, e.Status);
        Assert.StartsWith("The pod's network is already configured (lo up; 02:00:ac:10:1c:02 mtu 1450 172.16.28.2/24;", e.Message);
        e = Assert.Throws<GrpcException>(() => ns.Run(() => supervisor.ConfigurePod(new ConfigurePodRequest())));
        Assert.Equal(GrpcException.FailedPrecondition, e.Status);
        Assert.Contains("mtu 1450", ns.Lines("-o link show veth0")[0]);
    }

    private const string TemplateMac = "02:00:ac:10:00:99";

    /// <summary>The typical request for a NIC that still has the template's MAC.</summary>
    private static ConfigurePodRequest Restored(string hostname = "pod")
    {
        var request = Request(hostname);
        request.Interfaces[0].LinkMac = TemplateMac;
        return request;
    }

    [SkippableFact]
    public void Apply_finds_the_link_by_link_mac_gives_it_the_mac_and_configures_it_as_that_nic()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns(withVeth: false);
        ns.AddVeth("veth0", TemplateMac);
        PodNetwork network = PodNetwork.Parse(Restored().Interfaces, Restored().Routes);
        ns.Run(() => network.Apply(TimeSpan.FromSeconds(2)));

        string veth = ns.Lines("-o link show veth0")[0];
        Assert.Contains("link/ether " + TestNetns.Mac + " ", veth);
        Assert.Matches(@"<BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 ", veth);
        Assert.Matches(@"^\d+: veth0 +inet 172\.16\.28\.2/24 ", Assert.Single(ns.Lines("-4 -o addr show dev veth0")));
        // The routes that name the NIC's MAC went out of the renamed link.
        Assert.Equal(["172.16.28.0/24 dev veth0 proto boot scope link", "default via 172.16.28.1 dev veth0 proto boot scope global"],
            ns.Lines("-d -4 route show table main").Select(l => l.Replace("unicast ", "")).Order(StringComparer.Ordinal));
    }

    [SkippableFact]
    public void A_link_mac_on_a_link_that_is_up_is_set_after_bringing_it_down_and_the_other_nic_is_left_alone()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns(withVeth: false);
        ns.AddVeth("veth0", TemplateMac);
        ns.AddVeth("veth1", "02:00:ac:10:1d:02");
        ns.Ip($"-n {ns.Name} link set veth0 up");
        int carrierChanges = ns.CarrierChanges("veth0");
        var request = Restored();
        request.Interfaces.Add(new NetworkInterface { Mac = "02:00:ac:10:1d:02", Addresses = { "172.16.29.2/24" } });
        ns.Run(() => PodNetwork.Parse(request.Interfaces, request.Routes).Apply(TimeSpan.FromSeconds(2)));
        Assert.Contains("link/ether " + TestNetns.Mac + " ", ns.Lines("-o link show veth0")[0]);
        Assert.Contains(",UP,", ns.Lines("-o link show veth0")[0]);
        // veth could take the address while up; the carrier going off and on again shows it was taken down first
        // (a driver without IFF_LIVE_ADDR_CHANGE refuses a running link's new address with EBUSY).
        Assert.Equal(carrierChanges + 2, ns.CarrierChanges("veth0"));
        Assert.Contains("link/ether 02:00:ac:10:1d:02 ", ns.Lines("-o link show veth1")[0]);
        Assert.Single(ns.Lines("-4 -o addr show dev veth1"));
    }

    [SkippableFact]
    public void A_link_mac_that_no_link_has_is_named_in_the_error_and_nothing_but_lo_changes()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns(); // veth0 already has the pod's MAC, not the template's
        var e = Assert.Throws<LinkNotFoundException>(() => ns.Run(() => PodNetwork.Parse(Restored().Interfaces, Restored().Routes).Apply(TimeSpan.Zero)));
        Assert.StartsWith($"No network link has the MAC {TemplateMac} (the link MAC of the interface {TestNetns.Mac}; waited 0 ms; links: ", e.Message);
        Assert.Contains("state DOWN", ns.Lines("-o link show veth0")[0]);
        Assert.Empty(ns.Lines("-4 -o addr show dev veth0"));
    }

    [SkippableFact]
    public void ConfigurePod_with_a_link_mac_applies_once_and_a_repeat_with_or_without_it_is_the_same_network()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns(withVeth: false);
        ns.AddVeth("veth0", TemplateMac);
        var supervisor = new AppSupervisor(enabled: true);
        ns.Run(() => supervisor.ConfigurePod(Restored()));
        Assert.Contains("link/ether " + TestNetns.Mac + " ", ns.Lines("-o link show veth0")[0]);

        // No link has the template's MAC any more, yet the repeats are no-ops rather than "not found" or EEXIST.
        ns.Run(() => supervisor.ConfigurePod(Restored("again")));
        ns.Run(() => supervisor.ConfigurePod(Request("plain")));
        var different = Restored();
        different.Interfaces[0].Mtu = 1400;
        Assert.Equal(GrpcException.FailedPrecondition, Assert.Throws<GrpcException>(() => ns.Run(() => supervisor.ConfigurePod(different))).Status);
        Assert.Single(ns.Lines("-4 -o addr show dev veth0"));
    }

    [SkippableFact]
    public void ConfigurePod_without_interfaces_brings_only_lo_up()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns();
        var supervisor = new AppSupervisor(enabled: true);
        ns.Run(() => supervisor.ConfigurePod(new ConfigurePodRequest { Hostname = "none" }));
        Assert.Contains("<LOOPBACK,UP,LOWER_UP>", ns.Lines("-o link show lo")[0]);
        Assert.Contains("state DOWN", ns.Lines("-o link show veth0")[0]);
        Assert.Empty(ns.Lines("-4 route show table main"));
        ns.Run(() => supervisor.ConfigurePod(new ConfigurePodRequest { Hostname = "again" })); // same (loopback only): fine
    }

    [SkippableFact]
    public void ConfigurePod_reports_a_missing_nic_as_failed_precondition_and_a_netlink_failure_as_internal_then_refuses()
    {
        Skip.If(TestNetns.Unavailable() is not null, TestNetns.Unavailable());
        using var ns = new TestNetns(withVeth: false);
        var supervisor = new AppSupervisor(enabled: true);
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<GrpcException>(() => ns.Run(() => supervisor.ConfigurePod(Request())));
        Assert.Equal(GrpcException.FailedPrecondition, e.Status);
        Assert.StartsWith("No network link has the MAC 02:00:ac:10:1c:02 (waited 2000 ms;", e.Message);
        Assert.InRange(clock.ElapsedMilliseconds, 2000, 10_000);

        // Nothing but lo changed, so a retry once the NIC exists works; here it fails half-way instead.
        ns.AddVeth("veth0", TestNetns.Mac);
        ns.Ip($"-n {ns.Name} addr add 172.16.28.2/24 dev veth0");
        e = Assert.Throws<GrpcException>(() => ns.Run(() => supervisor.ConfigurePod(Request())));
        Assert.Equal(GrpcException.Internal, e.Status);
        Assert.Equal("Configuring the pod's network failed: netlink RTM_NEWADDR 172.16.28.2/24 on veth0: File exists (errno 17).", e.Message);
        e = Assert.Throws<GrpcException>(() => ns.Run(() => supervisor.ConfigurePod(Request())));
        Assert.Equal(GrpcException.FailedPrecondition, e.Status);
        Assert.Contains("half configured (netlink RTM_NEWADDR 172.16.28.2/24 on veth0: File exists (errno 17))", e.Message);
    }
}

using System.Diagnostics;
using System.Net.Http;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// Pod networking end to end through rkt-kvm only: rkt's default network (ptp, host-local IPAM,
/// masquerade) in the pod's own namespace, the VM's virtio-net NIC on a tap there, ports, DNS and
/// hosts entries, --net=none, and teardown. Traffic goes only between this host and its own pods.
/// Three pod VMs: a server pod, a client pod that reaches it, a --net=none pod.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PodNetworkTests
{
    private static readonly Regex Ip4 = new(@"default:ip4=(172\.16\.28\.\d+)");

    [SkippableFact]
    public void DefaultNetwork_HostAndPodsReachEachOther_PortsDnsHosts_AndNothingLeftAfterRm()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var image = HttpImage(cli);
        int hostPort = 20000 + Random.Shared.Next(0, 10000);

        // A server app (busybox httpd on the declared port "http") and a client app that checks the pod's side.
        var (run, uuid) = cli.Start("run", "--dns=10.0.0.53", "--dns-search=pod.test", "--hosts-entry=10.9.9.9=db.test",
            $"--port=http:{hostPort}",
            image, "--name=server", "--exec=/bin/sh", "--", "-c", "mkdir -p /srv && echo hello-from-pod > /srv/index.html && exec httpd -f -p 8080 -h /srv", "---",
            image, "--name=client", "--exec=/bin/sh", "--", "-c",
            "gw=$(ip route | awk '/^default/ {print $3}'); ping -c 1 -W 10 $gw >/dev/null && echo GATEWAY-REACHED $gw; " +
            "ip -o addr show dev eth0 | awk '{print \"ADDR\", $4}'; cat /etc/resolv.conf /etc/hosts; ip -o link | awk '{print \"LINK\", $2}'", "---");
        cli.WaitReady(uuid);

        // list and status show the pod's address on rkt's default network, as rkt does.
        var status = cli.Status(uuid);
        var ip = Ip4.Match(status["networks"]);
        Assert.True(ip.Success, $"status: networks={status["networks"]}");
        Assert.Contains($"default:ip4={ip.Groups[1].Value}", cli.Run("list", "--no-legend").Stdout);
        var netInfo = JsonNode.Parse(File.ReadAllText(Path.Join(cli.PodDir(uuid), "net-info.json")))!.AsArray();
        Assert.Equal("eth0", netInfo[0]!["ifName"]!.GetValue<string>());
        Assert.Equal("255.255.255.0", netInfo[0]!["mask"]!.GetValue<string>());
        Assert.Contains($"cni-{uuid}", Host("ip", "netns", "list"));
        Assert.Contains($"netns cni-{uuid}", cli.NetworkLeftovers()); // what the leftover check looks for is really there while the pod runs

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        // The host reaches the pod at the address list shows ...
        Assert.Equal("hello-from-pod\n", Retry(() => http.GetStringAsync($"http://{ip.Groups[1].Value}:8080/index.html").GetAwaiter().GetResult()));
        // ... and through the forwarded host port.
        Assert.Equal("hello-from-pod\n", Retry(() => http.GetStringAsync($"http://127.0.0.1:{hostPort}/index.html").GetAwaiter().GetResult()));

        // The client app reached the gateway and sees the DNS and hosts entries; the VM has lo and eth0 with the pod's address.
        var clientOut = WaitFor(() => cli.OutputOf(run), o => o.Contains("[client] LINK"), TimeSpan.FromMinutes(2));
        Assert.Matches(@"\[client\] GATEWAY-REACHED 172\.16\.28\.1", clientOut);
        Assert.Contains($"[client] ADDR {ip.Groups[1].Value}/24", clientOut);
        Assert.Contains("[client] nameserver 10.0.0.53", clientOut);
        Assert.Contains("[client] search pod.test", clientOut);
        Assert.Matches(@"\[client\] 10\.9\.9\.9\s+db\.test", clientOut);

        // A second pod on the default network reaches the first one.
        var (rc, stdout, stderr) = cli.Run("run", RktKvmCli.Busybox, "--exec=/bin/sh", "--", "-c", $"wget -q -O - http://{ip.Groups[1].Value}:8080/index.html", "---");
        Assert.True(rc == 0, $"second pod: {rc}\n{stdout}\n{stderr}");
        Assert.Contains("hello-from-pod", stdout);

        Assert.Equal(0, cli.Run("stop", uuid).ExitCode);
        Assert.True(run.WaitForExit(TimeSpan.FromMinutes(2)), "the pod did not stop");
        // Exited pods keep showing their networks until removed, as in rkt.
        Assert.Contains($"default:ip4={ip.Groups[1].Value}", cli.Status(uuid)["networks"]);
        var pods = Regex.Matches(cli.Run("list", "--full", "--no-legend").Stdout, @"^[0-9a-f-]{36}", RegexOptions.Multiline).Select(m => m.Value).ToList();
        Assert.Equal(2, pods.Count);
        Assert.Equal(0, cli.Run("gc", "--grace-period=0s").ExitCode);
        Assert.Empty(cli.Run("list", "--no-legend").Stdout.Trim());
        Assert.Empty(cli.NetworkLeftovers());
    }

    [SkippableFact]
    public void NetNone_HasOnlyLoopback_AndNoNamespace()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        using var cli = new RktKvmCli();
        var (rc, stdout, stderr) = cli.Run("run", "--net=none", RktKvmCli.Busybox, "--exec=/bin/sh", "--", "-c",
            "ip -o link | awk '{print \"LINK\", $2}'; ping -c 1 -W 5 127.0.0.1 >/dev/null && echo LOOPBACK-OK", "---");
        Assert.True(rc == 0, $"{rc}\n{stdout}\n{stderr}");
        Assert.Contains("LINK lo:", stdout);
        Assert.DoesNotContain("eth0", stdout);
        Assert.Contains("LOOPBACK-OK", stdout);
        var uuid = Regex.Match(cli.Run("list", "--full", "--no-legend").Stdout, @"^([0-9a-f-]{36})", RegexOptions.Multiline).Groups[1].Value;
        Assert.Equal("", cli.Status(uuid)["networks"]);
        Assert.False(File.Exists(Path.Join(cli.PodDir(uuid), "net-info.json")));
        Assert.Empty(cli.NetworkLeftovers());
    }

    /// <summary>
    /// Networks that cannot be set up fail the pod before its VM starts: one clear line from stage1,
    /// rkt's exit, the pod removed, and no namespace, lease or rule left for it. No VM boots here.
    /// </summary>
    [Theory]
    [InlineData("nosuch", null, "networks not found: nosuch")]
    [InlineData("broken", """{"name":"broken","type":"ptp",""", "is not valid JSON")]
    [InlineData("noplugin", """{"cniVersion":"0.3.1","name":"noplugin","type":"nosuchplugin"}""", "CNI plugin \"nosuchplugin\" not found")]
    [InlineData("full", """{"cniVersion":"0.3.1","name":"full","type":"ptp","ipam":{"type":"host-local","subnet":"10.214.0.0/24","rangeStart":"10.214.0.9","rangeEnd":"10.214.0.9"}}""", "no IP addresses available")]
    public void BadNetworks_FailThePodBeforeItsVm_WithOneLine_AndLeaveNothing(string net, string? conf, string expected)
    {
        using var cli = new RktKvmCli();
        var config = Directory.CreateDirectory(Path.Join(cli.Root, "etc", "net.d")).FullName;
        var name = $"{net}-{Guid.NewGuid():N}"[..20];
        if (conf is not null) File.WriteAllText(Path.Join(config, "10-test.conf"), conf.Replace($"\"name\":\"{net}\"", $"\"name\":\"{name}\""));
        // The one address of "full" is already taken by someone else.
        var leases = Path.Join("/var/lib/cni/networks", name);
        if (net == "full") { Directory.CreateDirectory(leases); File.WriteAllText(Path.Join(leases, "10.214.0.9"), "someone-else\neth0"); }
        try
        {
            var (rc, stdout, stderr) = cli.Run($"--local-config={Path.GetDirectoryName(config)}", "run", $"--net={(conf is null ? net : name)}", RktKvmCli.Busybox, "--exec=/bin/true");
            Assert.True(rc != 0, stdout + stderr);
            var stage1Lines = stderr.Split('\n').Where(l => l.StartsWith("stage1-kvm", StringComparison.Ordinal)).ToList();
            Assert.True(stage1Lines.Count == 1 && stage1Lines[0].Contains(expected), stderr);
            Assert.Contains("did not start", stderr);
            Assert.Empty(cli.Run("list", "--no-legend").Stdout.Trim());
            Assert.NotEmpty(cli.KnownPods);
            Assert.Empty(cli.NetworkLeftovers());
        }
        finally
        {
            if (Directory.Exists(leases)) Directory.Delete(leases, recursive: true);
        }
    }

    /// <summary>The busybox image with a declared port ("http", tcp 8080), as --port needs.</summary>
    private static string HttpImage(RktKvmCli cli)
    {
        var dir = Directory.CreateDirectory(Path.Join(cli.Root, "http-aci")).FullName;
        Host("tar", "-xzf", TestEnvironment.BusyboxAci, "-C", dir);
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Join(dir, "manifest")))!.AsObject();
        manifest["name"] = "rkt-kvm.local/busybox-http";
        manifest["app"]!["ports"] = new JsonArray(new JsonObject { ["name"] = "http", ["protocol"] = "tcp", ["port"] = 8080 });
        File.WriteAllText(Path.Join(dir, "manifest"), manifest.ToJsonString());
        var aci = Path.Join(cli.Root, "busybox-http.aci");
        Host("tar", "-czf", aci, "-C", dir, "manifest", "rootfs");
        var (rc, _, err) = cli.Run("image", "import", aci);
        Assert.True(rc == 0, err);
        return "rkt-kvm.local/busybox-http";
    }

    private static string Host(string program, params string[] args) => RktKvmCli.HostTool(program, args);

    /// <summary>A pod's first connection may race the guest's ARP; a few tries within a minute.</summary>
    private static T Retry<T>(Func<T> action)
    {
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (true)
        {
            try { return action(); }
            catch (Exception) when (DateTime.UtcNow < deadline) { Thread.Sleep(1000); }
        }
    }

    private static string WaitFor(Func<string> read, Func<string, bool> done, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        string text;
        while (!done(text = read()) && DateTime.UtcNow < deadline) Thread.Sleep(500);
        return text;
    }
}

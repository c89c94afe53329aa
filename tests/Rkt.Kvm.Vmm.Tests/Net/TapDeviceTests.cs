using Rkt.Kvm.Vmm.Devices.VirtioNet;
using Tmds.Linux;

namespace Rkt.Kvm.Vmm.Tests.Net;

/// <summary>Opening taps: by name inside another network namespace (the VMM stays in its own), an existing tap, an inherited fd.</summary>
public sealed class TapDeviceTests(NetnsFixture fixture) : IClassFixture<NetnsFixture>
{
    private static string NetnsOf(string path) => new FileInfo(path).LinkTarget!;

    [SkippableFact]
    public void A_tap_opened_in_a_namespace_lives_there_while_the_process_stays_in_its_own()
    {
        var netns = fixture.Require();
        string processBefore = NetnsOf("/proc/self/ns/net"), threadBefore = NetnsOf("/proc/thread-self/ns/net");
        using var tap = TapDevice.Open("tns0", netns.Path);
        Assert.Equal("tns0", tap.Name);
        Assert.Equal(processBefore, NetnsOf("/proc/self/ns/net"));
        Assert.Equal(threadBefore, NetnsOf("/proc/thread-self/ns/net"));
        Assert.Contains("tun type tap pi off vnet_hdr on", TestNetns.Run("ip", "-n", netns.Name, "-d", "link", "show", "tns0"));
        Assert.Throws<InvalidOperationException>(() => TestNetns.Run("ip", "link", "show", "tns0")); // not in ours
    }

    [SkippableFact]
    public void A_tap_made_beforehand_by_ip_tuntap_is_attached_and_outlives_the_device()
    {
        var netns = fixture.Require();
        netns.Ip("tuntap", "add", "dev", "tpre0", "mode", "tap");
        try
        {
            using (var tap = TapDevice.Open("tpre0", netns.Path))
            {
                Assert.Equal("tpre0", tap.Name);
                // The persistent tap was made without vnet_hdr; attaching set it.
                Assert.Contains("pi off vnet_hdr on persist on", TestNetns.Run("ip", "-n", netns.Name, "-d", "link", "show", "tpre0"));
            }
            Assert.Contains("tpre0", TestNetns.Run("ip", "-n", netns.Name, "link", "show", "tpre0"));
        }
        finally
        {
            netns.Ip("tuntap", "del", "dev", "tpre0", "mode", "tap");
        }
    }

    [SkippableFact]
    public void An_inherited_tap_fd_is_adopted_and_anything_else_refused()
    {
        var netns = fixture.Require();
        using var original = TapDevice.Open("tfd0", netns.Path);
        int copy = LibC.dup(original.Handle.Number);
        Assert.True(copy >= 0);
        using (var adopted = TapDevice.Adopt(copy)) Assert.Equal("tfd0", adopted.Name);

        using var devNull = File.OpenHandle("/dev/null");
        var e = Assert.Throws<TapException>(() => TapDevice.Adopt((int)devNull.DangerousGetHandle()));
        Assert.Matches(@"^File descriptor \d+ is not an attached tap: .+\.$", e.Message);
    }

    [SkippableFact]
    public void Failures_are_one_sentence_naming_what_failed()
    {
        fixture.Require();
        var e = Assert.Throws<TapException>(() => TapDevice.Open("t0", "/nonexistent/netns"));
        Assert.Equal("Cannot open network namespace /nonexistent/netns: No such file or directory (errno 2).", e.Message);
        e = Assert.Throws<TapException>(() => TapDevice.Open("t0", "/etc/hostname"));
        Assert.StartsWith("Cannot enter the network namespace /etc/hostname: ", e.Message);
        Assert.Contains("not a valid interface name", Assert.Throws<TapException>(() => TapDevice.Open("way-too-long-name0")).Message);
    }
}

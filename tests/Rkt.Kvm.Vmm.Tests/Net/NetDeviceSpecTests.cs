using Rkt.Kvm.Vmm.Cli;
using Rkt.Kvm.Vmm.Devices.VirtioNet;

namespace Rkt.Kvm.Vmm.Tests.Net;

/// <summary><c>--net</c>: the typed option, its validation against the VMM's limits, and where NICs sit on the machine.</summary>
public class NetDeviceSpecTests
{
    [Theory]
    [InlineData("tap=tap0")]
    [InlineData("tap=tap0,netns=/var/run/netns/cni-1234,mac=02:00:00:aa:bb:cc,mtu=1500")]
    [InlineData("fd=7")]
    [InlineData("fd=7,mac=02:00:00:aa:bb:cc,mtu=9000")]
    public void Argument_survives_parse_then_build(string text) =>
        Assert.Equal(text, NetDeviceSpec.Parse(text).ToArgument());

    [Fact]
    public void Parse_reads_every_field_and_normalises_the_mac()
    {
        var spec = NetDeviceSpec.Parse("mtu=1400,mac=02:AB:cd:00:11:22,netns=/run/netns/x,tap=eth-pod");
        Assert.Equal(new NetDeviceSpec { Tap = "eth-pod", Netns = "/run/netns/x", Mac = "02:ab:cd:00:11:22", Mtu = 1400 }, spec);
        Assert.Equal(new NetDeviceSpec { Fd = 3 }, NetDeviceSpec.Parse("fd=3"));
    }

    [Theory]
    [InlineData("", "key=value")]
    [InlineData("tap=a,fd=3", "exactly one of tap=, fd= and isolated")]
    [InlineData("mac=02:00:00:00:00:01", "exactly one of tap=, fd= and isolated")]
    [InlineData("fd=3,netns=/x", "netns= only goes with tap=")]
    [InlineData("tap=a,mac=02:00:00:00:00", "not six hex bytes")]
    [InlineData("tap=a,mac=02:00:00:00:00:0g", "not six hex bytes")]
    [InlineData("tap=a,mtu=-1", "not a whole number")]
    [InlineData("tap=a,speed=10", "unknown key 'speed'")]
    [InlineData("tap=a,tap=b", "gives tap twice")]
    [InlineData("tap=a,netns=/x,y", "key=value")]
    public void Parse_refuses_with_one_line(string text, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => NetDeviceSpec.Parse(text));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_value_with_a_comma_cannot_be_built()
    {
        Assert.Throws<ArgumentException>(() => new NetDeviceSpec { Tap = "a", Netns = "/x,y" }.ToArgument());
    }

    [Fact]
    public void Nics_survive_the_vmm_command_line_in_order()
    {
        var line = new VmmCommandLine
        {
            Kernel = "/k",
            Net = [new NetDeviceSpec { Tap = "a", Netns = "/n" }, new NetDeviceSpec { Fd = 9, Mac = "02:00:00:00:00:09", Mtu = 1280 }],
        };
        var args = line.ToArguments();
        Assert.Equal(["--kernel", "/k", "--net", "tap=a,netns=/n", "--net", "fd=9,mac=02:00:00:00:00:09,mtu=1280"], args);
        var parsed = VmmCommandLine.Parse(args);
        Assert.Equal(line.Net, parsed.Net);
        Assert.Equal(args, parsed.ToArguments());
        // What the VMM itself reads (no netns here: VmmOptions checks that the file exists).
        Assert.Equal([new NetDeviceSpec { Tap = "a" }, line.Net[1]],
            VmmOptions.Parse(["--kernel", "/k", "--net=tap=a", "--net", "fd=9,mac=02:00:00:00:00:09,mtu=1280"]).Machine.NetDevices);
    }

    private static MachineConfig WithNics(params NetDeviceSpec[] nics) => new() { KernelPath = "/k", NetDevices = nics };

    [Theory]
    [InlineData("mac=03:00:00:00:00:01", "multicast")]
    [InlineData("mac=00:00:00:00:00:00", "all zero")]
    [InlineData("mtu=67", "MTU must be between 68 and 65535")]
    [InlineData("mtu=65536", "MTU must be between 68 and 65535")]
    public void Machine_config_refuses_bad_nic_settings(string extra, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => WithNics(NetDeviceSpec.Parse($"tap=t0,{extra}")).Validate());
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Machine_config_refuses_too_many_nics_duplicates_and_bad_names()
    {
        var five = Enumerable.Range(0, 5).Select(i => new NetDeviceSpec { Tap = $"t{i}" }).ToArray();
        Assert.Contains("at most 4", Assert.Throws<ArgumentException>(() => WithNics(five).Validate()).Message);
        Assert.Contains("given twice", Assert.Throws<ArgumentException>(() => WithNics(new NetDeviceSpec { Tap = "t" }, new NetDeviceSpec { Tap = "t" }).Validate()).Message);
        Assert.Contains("given twice", Assert.Throws<ArgumentException>(() => WithNics(new NetDeviceSpec { Fd = 5 }, new NetDeviceSpec { Fd = 5 }).Validate()).Message);
        Assert.Contains("two NICs", Assert.Throws<ArgumentException>(() => WithNics(new NetDeviceSpec { Tap = "a", Mac = "02:00:00:00:00:01" }, new NetDeviceSpec { Tap = "b", Mac = "02:00:00:00:00:01" }).Validate()).Message);
        Assert.Contains("standard", Assert.Throws<ArgumentException>(() => WithNics(new NetDeviceSpec { Fd = 1 }).Validate()).Message);
        Assert.Contains("1-15 bytes", Assert.Throws<ArgumentException>(() => WithNics(new NetDeviceSpec { Tap = "a-very-long-tap-name" }).Validate()).Message);
        Assert.Contains("'/'", Assert.Throws<ArgumentException>(() => WithNics(new NetDeviceSpec { Tap = "a/b" }).Validate()).Message);
        Assert.Contains("does not exist", Assert.Throws<ArgumentException>(() => WithNics(new NetDeviceSpec { Tap = "a", Netns = "/nonexistent/netns" }).Validate()).Message);
        // The same tap name in two namespaces is two taps.
        WithNics(new NetDeviceSpec { Tap = "t", Netns = "/proc/self/ns/net" }, new NetDeviceSpec { Tap = "t" }).Validate();
        WithNics(Enumerable.Range(0, 4).Select(i => new NetDeviceSpec { Tap = $"t{i}" }).ToArray()).Validate();
    }

    [Fact]
    public void Nic_slots_follow_the_others_and_their_irqs_collide_with_nothing()
    {
        var taken = new HashSet<int> { 0, 1, 2, 4, Machine.RtcIrq }; // PIT, i8042, cascade, serial, RTC
        foreach (int slot in new[] { Machine.RngSlot, Machine.VsockSlot, Machine.P9Slot }) Assert.True(taken.Add(Machine.VirtioSlot(slot).Irq));
        for (int nic = 0; nic < MachineConfig.MaxNetDevices; nic++)
        {
            var (address, irq) = Machine.VirtioSlot(Machine.NetSlot(nic));
            Assert.Equal(0xC000_4000UL + (ulong)nic * 0x1000, address);
            Assert.True(taken.Add(irq), $"NIC {nic} IRQ {irq} is taken");
            Assert.InRange(irq, 9, 15);
        }
        Assert.Equal([5, 6, 7], new[] { Machine.RngSlot, Machine.VsockSlot, Machine.P9Slot }.Select(s => Machine.VirtioSlot(s).Irq));
    }

    [Fact]
    public void Guest_cmdline_names_the_nics_in_order_after_the_other_devices()
    {
        string cmdline = Machine.GuestCmdline(pvmHost: false, null, vsock: true, p9: true, nics: 2).ToString();
        int p9 = cmdline.IndexOf("virtio_mmio.device=4K@0xc0003000:7", StringComparison.Ordinal);
        int eth0 = cmdline.IndexOf("virtio_mmio.device=4K@0xc0004000:9", StringComparison.Ordinal);
        int eth1 = cmdline.IndexOf("virtio_mmio.device=4K@0xc0005000:10", StringComparison.Ordinal);
        Assert.True(p9 >= 0 && eth0 > p9 && eth1 > eth0, cmdline);
        Assert.DoesNotContain("0xc0006000", cmdline);
    }

    [Fact]
    public void Random_macs_are_locally_administered_unicast()
    {
        for (int i = 0; i < 100; i++)
        {
            var mac = VirtioNetDevice.RandomMac();
            Assert.Equal(0x02, mac[0]);
            Assert.Null(VirtioNetDevice.InvalidMacReason(mac));
        }
    }
}

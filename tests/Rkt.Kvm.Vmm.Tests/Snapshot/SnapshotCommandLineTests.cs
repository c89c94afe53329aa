using Rkt.Kvm.Vmm.Cli;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary><c>--restore</c> and the isolated NIC a template VM is made with, from the typed command line to the machine configuration.</summary>
public class SnapshotCommandLineTests
{
    [Fact]
    public void Restore_survives_build_then_parse()
    {
        var line = new VmmCommandLine { Kernel = "/k", MemoryMiB = 512, Restore = "/var/lib/rkt-kvm/templates/abc.snapshot" };
        var args = line.ToArguments();
        Assert.Equal(["--kernel", "/k", "--memory", "512", "--restore", "/var/lib/rkt-kvm/templates/abc.snapshot"], args);
        var parsed = VmmCommandLine.Parse(args);
        Assert.Equal("/var/lib/rkt-kvm/templates/abc.snapshot", parsed.Restore);
        Assert.Equal(line with { Exports = [], Net = [] }, parsed with { Exports = [], Net = [] });
        Assert.Equal(args, parsed.ToArguments());
    }

    [Fact]
    public void Restore_is_left_out_when_not_given_and_read_in_either_form()
    {
        Assert.DoesNotContain("--restore", new VmmCommandLine { Kernel = "/k" }.ToArguments());
        Assert.Null(VmmCommandLine.Parse(["--kernel", "/k"]).Restore);
        Assert.Equal("/t/a.snap", VmmCommandLine.Parse(["--kernel", "/k", "--restore=/t/a.snap"]).Restore);
    }

    [Fact]
    public void The_vmm_passes_restore_to_the_machine()
    {
        Assert.Equal("/t/a.snap", VmmOptions.Parse(["--kernel", "/k", "--restore", "/t/a.snap"]).Machine.RestorePath);
        Assert.Null(VmmOptions.Parse(["--kernel", "/k"]).Machine.RestorePath);
    }

    [Fact]
    public void Isolated_parses_alone_and_with_mac_and_mtu()
    {
        Assert.Equal(new NetDeviceSpec { Isolated = true }, NetDeviceSpec.Parse("isolated"));
        Assert.Equal(new NetDeviceSpec { Isolated = true, Mac = "02:00:00:aa:bb:cc", Mtu = 1400 }, NetDeviceSpec.Parse("mtu=1400,mac=02:00:00:AA:BB:CC,isolated"));
        Assert.False(NetDeviceSpec.Parse("tap=t0").Isolated);
    }

    [Theory]
    [InlineData("isolated")]
    [InlineData("isolated,mac=02:00:00:aa:bb:cc")]
    [InlineData("isolated,mtu=9000")]
    [InlineData("isolated,mac=02:00:00:aa:bb:cc,mtu=1500")]
    public void Isolated_survives_parse_then_build(string text) => Assert.Equal(text, NetDeviceSpec.Parse(text).ToArgument());

    [Theory]
    [InlineData("isolated,tap=x", "exactly one of tap=, fd= and isolated")]
    [InlineData("tap=x,isolated", "exactly one of tap=, fd= and isolated")]
    [InlineData("isolated,fd=3", "exactly one of tap=, fd= and isolated")]
    [InlineData("isolated,netns=/x", "netns= only goes with tap=")]
    [InlineData("isolated,isolated", "gives isolated twice")]
    [InlineData("isolated=1", "unknown key 'isolated'")]
    public void Isolated_with_another_source_is_refused(string text, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => NetDeviceSpec.Parse(text));
        Assert.Contains(expected, e.Message);
        Assert.Contains(text, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void An_isolated_nic_survives_the_vmm_command_line_and_is_a_valid_machine_nic()
    {
        var line = new VmmCommandLine { Kernel = "/k", Net = [new NetDeviceSpec { Isolated = true, Mac = "02:00:00:00:00:01" }, new NetDeviceSpec { Isolated = true }] };
        var args = line.ToArguments();
        Assert.Equal(["--kernel", "/k", "--net", "isolated,mac=02:00:00:00:00:01", "--net", "isolated"], args);
        Assert.Equal(line.Net, VmmCommandLine.Parse(args).Net);
        var machine = VmmOptions.Parse(args).Machine;
        Assert.Equal(line.Net, machine.NetDevices);
        machine.Validate();
    }

    [Fact]
    public void Machine_config_still_refuses_a_nic_without_a_source()
    {
        var e = Assert.Throws<ArgumentException>(() => new MachineConfig { KernelPath = "/k", NetDevices = [new NetDeviceSpec { Mac = "02:00:00:00:00:01" }] }.Validate());
        Assert.Contains("needs tap=, fd= or isolated", e.Message);
    }

    [Fact]
    public void Machine_config_checks_an_isolated_nics_mac_and_mtu()
    {
        Assert.Contains("multicast", Assert.Throws<ArgumentException>(() => new MachineConfig { KernelPath = "/k", NetDevices = [NetDeviceSpec.Parse("isolated,mac=03:00:00:00:00:01")] }.Validate()).Message);
        Assert.Contains("MTU", Assert.Throws<ArgumentException>(() => new MachineConfig { KernelPath = "/k", NetDevices = [NetDeviceSpec.Parse("isolated,mtu=67")] }.Validate()).Message);
    }
}

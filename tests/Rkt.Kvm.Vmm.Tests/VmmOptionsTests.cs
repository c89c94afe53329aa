using Rkt.Kvm.Vmm.Cli;

namespace Rkt.Kvm.Vmm.Tests;

public class VmmOptionsTests
{
    [Fact]
    public void Parses_every_option_in_both_spellings()
    {
        var o = VmmOptions.Parse(["--kernel", "k", "--initrd=i", "--cmdline", "quiet x=1", "--memory", "1G", "--cpus=2",
            "--console", "none", "--console-log", "c.log", "--pvm", "off", "--kvm-device", "/dev/x", "--debug"]);
        Assert.Equal("k", o.Machine.KernelPath);
        Assert.Equal("i", o.Machine.InitrdPath);
        Assert.Equal("quiet x=1", o.Machine.ExtraCmdline);
        Assert.Equal(1024ul, o.Machine.MemoryMiB);
        Assert.Equal(2, o.Machine.Cpus);
        Assert.False(o.ConsoleToStdout);
        Assert.Equal("c.log", o.ConsoleLogPath);
        Assert.Equal(PvmMode.Off, o.Machine.Pvm);
        Assert.Equal("/dev/x", o.Machine.KvmDevicePath);
        Assert.True(o.Debug);
    }

    [Fact]
    public void Vsock_and_eventfd_options()
    {
        var o = VmmOptions.Parse(["--kernel", "k", "--vsock", "/tmp/vm.sock", "--vsock-cid", "42", "--kvm-eventfds", "ioeventfd"]);
        Assert.Equal("/tmp/vm.sock", o.Machine.VsockSocketPath);
        Assert.Equal(42ul, o.Machine.GuestCid);
        Assert.True(o.Machine.UseIoeventfd);
        Assert.False(o.Machine.UseIrqfd);
        var defaults = VmmOptions.Parse(["--kernel", "k"]);
        Assert.Null(defaults.Machine.VsockSocketPath);
        Assert.Null(defaults.Machine.OwnerPid);
        Assert.Equal(4321, VmmOptions.Parse(["--kernel", "k", "--owner-pid", "4321"]).Machine.OwnerPid);
        Assert.Throws<ArgumentException>(() => VmmOptions.Parse(["--kernel", "k", "--owner-pid", "-1"]));
        Assert.Null(defaults.Machine.OwnerPidfd);
        Assert.Equal(7, VmmOptions.Parse(["--kernel", "k", "--owner-pidfd", "7"]).Machine.OwnerPidfd);
        // One owner, named once; and never stdin, stdout or stderr.
        Assert.Contains("give one", Assert.Throws<ArgumentException>(() => VmmOptions.Parse(["--kernel", "k", "--owner-pid", "5", "--owner-pidfd", "7"])).Message);
        Assert.Contains("not a pidfd", Assert.Throws<ArgumentException>(() => VmmOptions.Parse(["--kernel", "k", "--owner-pidfd", "2"])).Message);
        Assert.True(defaults.Machine.UseIoeventfd && defaults.Machine.UseIrqfd);
    }

    [Theory]
    [InlineData("--vsock-cid", "2")]            // 0-2 are reserved (hypervisor, local, host)
    [InlineData("--vsock-cid", "x")]
    [InlineData("--kvm-eventfds", "maybe")]
    [InlineData("--vsock", "/no/such/dir/vm.sock")]
    [InlineData("--cpus", "-1")]
    public void Bad_vsock_and_eventfd_values_are_refused(string option, string value) =>
        Assert.Throws<ArgumentException>(() => VmmOptions.Parse(["--kernel", "k", "--vsock", "/tmp/vm.sock", option, value]));

    [Theory]
    [InlineData("128", 128ul)]
    [InlineData("512M", 512ul)]
    [InlineData("512MiB", 512ul)]
    [InlineData("2g", 2048ul)]
    public void Memory_sizes(string text, ulong mib) => Assert.Equal(mib, VmmOptions.ParseMemory(text));

    [Theory]
    [InlineData("--cpus", "0")]
    [InlineData("--cpus", "9")]
    [InlineData("--cpus", "two")]
    [InlineData("--memory", "1T")]
    [InlineData("--memory", "8")]
    [InlineData("--memory", "-5")]
    [InlineData("--pvm", "maybe")]
    [InlineData("--console", "tty")]
    public void Bad_values_are_one_line_errors(string option, string value)
    {
        var e = Assert.Throws<ArgumentException>(() => VmmOptions.Parse(["--kernel", "k", option, value]));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Kernel_is_required_and_unknown_arguments_are_refused()
    {
        Assert.Throws<ArgumentException>(() => VmmOptions.Parse([]));
        Assert.Throws<ArgumentException>(() => VmmOptions.Parse(["--kernel", "k", "--frobnicate"]));
        Assert.Throws<ArgumentException>(() => VmmOptions.Parse(["--kernel"]));
        Assert.True(VmmOptions.Parse(["--help"]).ShowHelp);
    }
}

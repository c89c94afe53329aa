using Rkt.Kvm.Vmm.Cli;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>The typed command line: what a VMM's starter builds is what the VMM parses.</summary>
public class VmmCommandLineTests
{
    private static readonly VmmCommandLine Everything = new()
    {
        Kernel = "/k",
        Initrd = "/i",
        Cmdline = "quiet x=1",
        MemoryMiB = 384,
        Cpus = 2,
        Console = VmmConsole.None,
        ConsoleLog = "/run/c.log",
        Pvm = PvmMode.Off,
        Seccomp = SeccompAction.Log,
        TestFault = VmmTestFault.VcpuForbiddenSyscall,
        User = new VmmUser(0x7A00_0001, 0x7A00_0001),
        KvmDevice = "/dev/x",
        Vsock = "/run/vm.sock",
        VsockCid = 42,
        KvmEventFds = KvmEventFds.Irqfd,
        Exports = [new("app", "/srv/app", true), new("vol", "/srv/vol", false), new("odd", "/srv/a,ro", false)],
        Net = [new() { Tap = "tap0", Netns = "/var/run/netns/cni-1", Mac = "02:00:00:00:00:01", Mtu = 1500 }, new() { Fd = 7 }],
        Control = "/run/control.sock",
        OwnerPid = 4321,
        OwnerPidfd = 9,
        Debug = true,
        Quiet = true,
    };

    [Fact]
    public void Every_option_survives_build_then_parse()
    {
        var args = Everything.ToArguments();
        var parsed = VmmCommandLine.Parse(args);
        Assert.Equal(Everything with { Exports = [], Net = [] }, parsed with { Exports = [], Net = [] });
        Assert.Equal(Everything.Exports, parsed.Exports);
        Assert.Equal(Everything.Net, parsed.Net);
        Assert.Equal(args, parsed.ToArguments());
    }

    [Theory]
    [InlineData("kill", SeccompAction.Kill)]
    [InlineData("log", SeccompAction.Log)]
    [InlineData("off", SeccompAction.Off)]
    public void Seccomp_takes_kill_log_or_off_and_defaults_to_kill(string value, SeccompAction action)
    {
        Assert.Equal(action, VmmCommandLine.Parse(["--kernel", "/k", "--seccomp", value]).Seccomp);
        Assert.Equal(SeccompAction.Kill, VmmCommandLine.Parse(["--kernel", "/k"]).Seccomp);
        var e = Assert.Throws<ArgumentException>(() => VmmCommandLine.Parse(["--kernel", "/k", "--seccomp", "trap"]));
        Assert.Contains("--seccomp must be kill, log or off", e.Message);
        Assert.Equal(action, VmmOptions.Parse(["--kernel", "/k", "--seccomp", value]).Machine.LockDown);
    }

    [Theory]
    [InlineData("0:1000")]
    [InlineData("1000:0")]
    [InlineData("4294967295:1000")]
    [InlineData("1000")]
    [InlineData("a:b")]
    [InlineData("-1:5")]
    [InlineData("1000:1000:1")]
    public void User_must_be_an_unprivileged_uid_and_gid(string value)
    {
        var e = Assert.Throws<ArgumentException>(() => VmmCommandLine.Parse(["--kernel", "/k", "--user", value]));
        Assert.StartsWith("--user must", e.Message);
    }

    [Fact]
    public void User_reaches_the_machine_and_defaults_to_none()
    {
        Assert.Null(VmmOptions.Parse(["--kernel", "/k"]).Machine.User);
        Assert.Equal(new VmmUser(2049000000, 2049000001), VmmOptions.Parse(["--kernel", "/k", "--user=2049000000:2049000001"]).Machine.User);
    }

    [Fact]
    public void Test_fault_is_off_unless_named_and_reaches_the_machine()
    {
        Assert.Equal(VmmTestFault.None, VmmOptions.Parse(["--kernel", "/k"]).Machine.TestFault);
        Assert.Equal(VmmTestFault.VcpuForbiddenSyscall, VmmOptions.Parse(["--kernel", "/k", "--test-fault=vcpu-forbidden-syscall"]).Machine.TestFault);
        Assert.Equal(VmmTestFault.VcpuClassForbiddenSyscall, VmmOptions.Parse(["--kernel", "/k", "--test-fault=vcpu-thread-filter"]).Machine.TestFault);
        Assert.Equal(["--kernel", "/k", "--test-fault", "vcpu-thread-filter"],
            new VmmCommandLine { Kernel = "/k", TestFault = VmmTestFault.VcpuClassForbiddenSyscall }.ToArguments());
        var e = Assert.Throws<ArgumentException>(() => VmmCommandLine.Parse(["--kernel", "/k", "--test-fault", "oops"]));
        Assert.Contains("--test-fault must be vcpu-forbidden-syscall or vcpu-thread-filter", e.Message);
    }

    [Fact]
    public void Defaults_are_left_out_of_the_argv()
    {
        Assert.Equal(["--kernel", "/k"], new VmmCommandLine { Kernel = "/k" }.ToArguments());
        Assert.Equal(new VmmCommandLine { Kernel = "/k" } with { Exports = [], Net = [] }, VmmCommandLine.Parse(["--kernel", "/k"]) with { Exports = [], Net = [] });
    }

    [Fact]
    public void The_built_argv_is_what_the_VMM_reads()
    {
        // Without the paths VmmOptions checks on this host.
        var line = Everything with { Vsock = null, Control = null, Exports = [], Net = [], OwnerPidfd = null };
        var o = VmmOptions.Parse(line.ToArguments());
        Assert.Equal(("/k", "/i", "quiet x=1", 384ul, 2), (o.Machine.KernelPath, o.Machine.InitrdPath, o.Machine.ExtraCmdline, o.Machine.MemoryMiB, o.Machine.Cpus));
        Assert.Equal((PvmMode.Off, "/dev/x", 42ul, false, true, 4321), (o.Machine.Pvm, o.Machine.KvmDevicePath, o.Machine.GuestCid, o.Machine.UseIoeventfd, o.Machine.UseIrqfd, o.Machine.OwnerPid));
        Assert.False(o.ConsoleToStdout);
        Assert.Equal("/run/c.log", o.ConsoleLogPath);
        Assert.True(o.Debug && o.Quiet);
    }

    [Theory]
    [InlineData("a=/x", "a", "/x", false)]
    [InlineData("a=/x,ro", "a", "/x", true)]
    [InlineData("a=/x,rw", "a", "/x", false)]
    [InlineData("a=/x,y,ro", "a", "/x,y", true)]
    public void Exports(string text, string name, string path, bool readOnly)
    {
        var export = P9ExportSpec.Parse(text);
        Assert.Equal(new P9ExportSpec(name, path, readOnly), export);
        Assert.Equal(export, P9ExportSpec.Parse(export.ToArgument()));
    }

    [Theory]
    [InlineData(new[] { "--kernel", "k", "--cpus" }, "--cpus needs a value.")]
    [InlineData(new[] { "--kernel", "k", "--frobnicate" }, "unknown argument '--frobnicate'.")]
    [InlineData(new[] { "--initrd", "i" }, "--kernel is required.")]
    [InlineData(new[] { "--kernel", "k", "--console=tty" }, "--console must be stdout or none, not 'tty'.")]
    [InlineData(new[] { "--kernel", "k", "--pvm", "maybe" }, "--pvm must be auto, on or off, not 'maybe'.")]
    [InlineData(new[] { "--kernel", "k", "--kvm-eventfds", "x" }, "--kvm-eventfds must be on, off, ioeventfd or irqfd, not 'x'.")]
    [InlineData(new[] { "--kernel", "k", "--owner-pid", "-1" }, "--owner-pid must be a whole number, not '-1'.")]
    [InlineData(new[] { "--kernel", "k", "--memory", "1T" }, "--memory must be a size like 128, 512M or 2G, not '1T'.")]
    [InlineData(new[] { "--kernel", "k", "--9p-export", "=/x" }, "--9p-export must be NAME=PATH[,ro], not '=/x'.")]
    public void Syntax_errors_are_one_sentence(string[] args, string message) =>
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => VmmCommandLine.Parse(args)).Message);

    [Fact]
    public void Help_needs_no_kernel() => Assert.True(VmmCommandLine.Parse(["-h"]).Help);

    [Theory]
    [InlineData(new[] { "rkt-kvm-vmm", "--kernel", "k", "--vsock", "/run/p/vm.sock" }, "/run/p/vm.sock")]
    [InlineData(new[] { "rkt-kvm-vmm", "--vsock=/run/p/vm.sock", "--from-a-newer-vmm" }, "/run/p/vm.sock")]
    [InlineData(new[] { "rkt-kvm-vmm", "-c", "read x", "--vsock", "/s" }, "/s")]
    [InlineData(new[] { "rkt-kvm-vmm", "--kernel", "k" }, null)]
    [InlineData(new[] { "rkt-kvm-vmm", "--vsock" }, null)]
    public void A_running_VMM_s_vsock_is_found_leniently(string[] argv, string? vsock) => Assert.Equal(vsock, VmmCommandLine.FindVsock(argv));
}

using Rkt.Kvm.Stage1.Entrypoints;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>The argv shapes rkt 1.30's stage0 really passes (STAGE1-ABI.md), and what a VM refuses.</summary>
public sealed class ArgumentTests
{
    private const string Uuid = "6f1c4d2e-3a5b-4c7d-8e9f-0a1b2c3d4e5f";

    [Fact]
    public void Run_AsStage0PassesIt()
    {
        var run = RunArguments.Parse(["--debug", "--net=default", "--local-config=/etc/rkt", "--hostname=web", "--mds-token=x",
            "--dns-conf-mode=resolv=default,hosts=default", "--disable-seccomp", "--mutable", "--some-future-flag=1", Uuid]);
        Assert.Equal(Uuid, run.Uuid);
        Assert.True(run.Debug);
        Assert.True(run.Mutable);
        Assert.False(run.Interactive);
        Assert.Equal("default", run.Networks.ToString());
        Assert.Equal("/etc/rkt", run.LocalConfig);
        Assert.Equal("default", run.DnsMode("resolv"));
        Assert.Equal("web", run.Hostname);
        Assert.Equal("resolv=default,hosts=default", run.DnsConfMode);
        Assert.True(RunArguments.Parse(["--net=none", Uuid]).Networks.None);
        Assert.Equal("stage0", RunArguments.Parse(["--net=none", "--dns-conf-mode=resolv=stage0,hosts=host", Uuid]).DnsMode("resolv"));
        Assert.Equal("host", RunArguments.Parse(["--net=none", "--dns-conf-mode=resolv=stage0,hosts=host", Uuid]).DnsMode("hosts"));
        var named = RunArguments.Parse(["--net=mybridge:IP=10.0.0.2,default", Uuid]).Networks;
        Assert.Equal("IP=10.0.0.2", named.ArgsOf("mybridge"));
        Assert.True(named.Wants("default") && named.Wants("mybridge") && !named.Wants("other"));
        Assert.True(RunArguments.Parse(["--net=all", Uuid]).Networks.Wants("anything"));
        Assert.False(RunArguments.Parse(["--debug=false", "--net=none", Uuid]).Debug);
    }

    [Theory]
    [InlineData("--net=host", "--net=host is not supported")]
    [InlineData("--net=default,host", "--net=host is not supported")]
    [InlineData("--net=none,default", "--net=none cannot be combined")]
    [InlineData("--net=a,a", "network a is given twice")]
    [InlineData("--net=Bad_Name", "is not a valid network name")]
    [InlineData("--private-users=", "--private-users is not supported")]
    [InlineData("--private-users", "--private-users is not supported")]
    [InlineData("--ipc=parent", "--ipc=parent is not supported")]
    [InlineData("--ipc=weird", "expected auto, private or parent")]
    public void Run_RefusesWhatAVmCannotDo(string flag, string expected)
    {
        var e = Assert.Throws<Stage1Exception>(() => RunArguments.Parse(flag.StartsWith("--net") ? [flag, Uuid] : ["--net=default", flag, Uuid]));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Run_NeedsAUuidLast()
    {
        Assert.Contains("pod UUID", Assert.Throws<Stage1Exception>(() => RunArguments.Parse(["--net=none"])).Message);
        Assert.Contains("pod UUID", Assert.Throws<Stage1Exception>(() => RunArguments.Parse(["--net=none", "../../etc"])).Message);
        Assert.Contains("bad flag syntax", Assert.Throws<Stage1Exception>(() => RunArguments.Parse(["---net=none", Uuid])).Message);
    }

    [Fact]
    public void Enter_TakesTheCommandAfterDoubleDash()
    {
        var enter = EnterArguments.Parse(["--pid=1234", "--appname=web", "--", "/bin/sh", "-c", "echo --not-a-flag"]);
        Assert.Equal(1234, enter.Pid);
        Assert.Equal("web", enter.App);
        Assert.Equal(["/bin/sh", "-c", "echo --not-a-flag"], enter.Command);
        Assert.Equal(["/bin/sh"], EnterArguments.Parse(["--pid=1", "--appname=web"]).Command);
        Assert.Throws<Stage1Exception>(() => EnterArguments.Parse(["--pid=x", "--appname=web"]));
        Assert.Throws<Stage1Exception>(() => EnterArguments.Parse(["--pid=1", "--appname=../x"]));
    }

    [Fact]
    public void Gc_TakesLocalConfigAsTwoArguments()
    {
        var gc = GcArguments.Parse(["--debug", "--local-config", "/etc/rkt", Uuid]);
        Assert.Equal("/etc/rkt", gc.LocalConfig);
        Assert.Equal(Uuid, gc.Uuid);
        Assert.True(gc.Debug);
        Assert.Equal("/etc/rkt", GcArguments.Parse(["--local-config=/etc/rkt", Uuid]).LocalConfig);
    }

    [Fact]
    public void StopAndAppEntrypoints()
    {
        Assert.True(StopArguments.Parse(["--force", Uuid]).Force);
        Assert.False(StopArguments.Parse([Uuid]).Force);
        var add = AppArguments.Parse(["--debug=false", $"--uuid={Uuid}", "--app=web"], "app/add");
        Assert.Equal(("web", Uuid, false), (add.App, add.Uuid, add.Debug));
        Assert.Null(AppArguments.Parse(["--debug=true", "--app=web"], "app/start").Uuid);
        Assert.Throws<Stage1Exception>(() => AppArguments.Parse(["--debug=maybe", "--app=web"], "app/stop").Debug);
        Assert.Throws<Stage1Exception>(() => AppArguments.Parse(["--debug=false"], "app/rm"));
    }
}

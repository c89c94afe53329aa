using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Commands.Pods;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1.Entrypoints;
using Rkt.Kvm.Stage1.Manifests;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>Terminals and attach on the command lines: rkt's attach modes, enter's own tty/stdin choices,
/// the stream-mode annotations stage0 writes, and what is refused.</summary>
public sealed class TerminalArgumentTests
{
    [Fact]
    public void Attach_modes_become_the_stage1_flags_rkt_passes()
    {
        Assert.Equal(["--action=list"], AttachMode.ToStage1Flags("list"));
        Assert.Equal(["--action=auto-attach"], AttachMode.ToStage1Flags("auto"));
        Assert.Equal(["--action=custom-attach", "--tty-in=true", "--tty-out=true", "--stdin=false", "--stdout=false", "--stderr=false"], AttachMode.ToStage1Flags("tty"));
        Assert.Equal(["--action=custom-attach", "--tty-in=false", "--tty-out=false", "--stdin=true", "--stdout=false", "--stderr=true"], AttachMode.ToStage1Flags("stdin,stderr"));
        Assert.Contains("cannot be attached at once", Assert.Throws<UsageException>(() => AttachMode.ToStage1Flags("tty-in,stdout")).Message);
        Assert.Contains("unknown endpoint \"stdio\"", Assert.Throws<UsageException>(() => AttachMode.ToStage1Flags("stdio")).Message);
    }

    [Fact]
    public void Stage1_attach_parses_rkts_argv_and_refuses_nonsense()
    {
        var custom = AttachArguments.Parse(["--action=custom-attach", "--tty-in=false", "--tty-out=false", "--stdin=true", "--stdout=true", "--stderr=false", "--app=web", "--debug=false"]);
        Assert.Equal(("custom-attach", "web", false, true, true, false), (custom.Action, custom.App, custom.TtyIn, custom.Stdin, custom.Stdout, custom.Stderr));
        Assert.Equal("list", AttachArguments.Parse(["--action=list", "--app=web", "--debug=true"]).Action);
        Assert.Contains("--action must be", Assert.Throws<Stage1Exception>(() => AttachArguments.Parse(["--action=detach", "--app=web"])).Message);
        Assert.Contains("--app must name an app", Assert.Throws<Stage1Exception>(() => AttachArguments.Parse(["--action=list", "--app=../x"])).Message);
        Assert.Contains("at least one endpoint", Assert.Throws<Stage1Exception>(() => AttachArguments.Parse(["--action=custom-attach", "--app=web"])).Message);
        Assert.Contains("cannot be attached at once", Assert.Throws<Stage1Exception>(() => AttachArguments.Parse(["--action=custom-attach", "--tty-in=true", "--stdout=true", "--app=web"])).Message);
    }

    [Fact]
    public void Enter_takes_rkts_argv_and_our_optional_tty_and_stdin_choices()
    {
        var rkt = EnterArguments.Parse(["--pid=42", "--appname=web", "--", "/bin/ls", "-l"]);
        Assert.Equal((42, "web", (bool?)null, (bool?)null), (rkt.Pid, rkt.App, rkt.Tty, rkt.Stdin));
        Assert.Equal(["/bin/ls", "-l"], rkt.Command);
        var ours = EnterArguments.Parse(["--pid=42", "--appname=web", "--tty=true", "--stdin=false"]);
        Assert.Equal((true, false), (ours.Tty, ours.Stdin));
        Assert.Equal(["/bin/sh"], ours.Command);
    }

    [Fact]
    public void Interactive_marks_the_one_apps_streams_and_refuses_two_apps()
    {
        var request = RunRequest.Parse(["--interactive", "example.com/app", "--exec=/bin/sh"]);
        Assert.True(request.Interactive);
        Assert.All(StreamModes.Streams, s => Assert.Equal(StreamModes.Interactive, request.Apps[0].StreamModes[s]));
        Assert.Contains("--interactive supports only one app", Assert.Throws<UsageException>(() => RunRequest.Parse(["--interactive", "a.com/x", "b.com/y"])).Message);

        var tty = RunRequest.Parse(["example.com/app", "--stdin=tty", "--stdout=tty", "--stderr=tty"]);
        Assert.Equal("tty", tty.Apps[0].StreamModes["stdin"]);
        Assert.Contains("the mode is one of", Assert.Throws<UsageException>(() => RunRequest.Parse(["example.com/app", "--stdin=log"])).Message);
        Assert.Throws<UsageException>(() => RunRequest.Parse(["example.com/app", "--stdout=bogus"]));
    }

    [Fact]
    public void Stream_modes_default_as_rkts_and_are_read_from_the_app_annotations()
    {
        var image = new ImageRef("example.com/app", "sha512-0", []);
        var plain = new RuntimeApp("web", image, null, false, [], []);
        Assert.Equal((StreamModes.Null, StreamModes.Log), (StreamModes.Of(plain, "stdin"), StreamModes.Of(plain, "stdout")));
        var tty = plain with { Annotations = [new(StreamModes.Annotation("stdin"), "tty")] };
        Assert.Equal("tty", StreamModes.Of(tty, "stdin"));
        Assert.False(StreamModes.IsValid("stdin", "log"));
        Assert.True(StreamModes.IsValid("stderr", "log"));
    }
}

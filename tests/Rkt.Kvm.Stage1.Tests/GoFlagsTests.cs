using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1.Entrypoints;
using Rkt.Kvm.Stage1.Flags;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>
/// The one Go-flag parser, in rkt-kvm's dialect (rkt's stage0: cobra/pflag) and in stage1's (Go's flag). The
/// syntax is the same on both sides; interspersing, unknown flags and the wording of errors are not.
/// </summary>
public sealed class GoFlagsTests
{
    private const string Uuid = "6f1c4d2e-3a5b-4c7d-8e9f-0a1b2c3d4e5f";
    private static readonly FlagSpec Dir = new("dir", "a value flag");
    private static readonly FlagSpec Debug = new("debug", "a boolean", IsBool: true);

    public static TheoryData<string> Dialects => ["stage0", "stage1"];

    private static GoFlagDialect Of(string dialect) => dialect == "stage0" ? Stage0Flags.Verb : GoFlagDialect.Stage1;

    private static GoFlags Parse(string dialect, params string[] argv) => GoFlags.Parse(argv, Of(dialect), Dir, Debug);

    // Booleans: both of rkt's sides read them with strconv.ParseBool (rkt-kvm took only true and false).
    [Theory]
    [InlineData("true", true)] [InlineData("TRUE", true)] [InlineData("True", true)] [InlineData("1", true)] [InlineData("t", true)] [InlineData("T", true)]
    [InlineData("false", false)] [InlineData("FALSE", false)] [InlineData("False", false)] [InlineData("0", false)] [InlineData("f", false)] [InlineData("F", false)]
    public void Booleans_take_go_spellings_on_both_sides(string value, bool expected)
    {
        Assert.Equal(expected, Parse("stage0", $"--debug={value}").Bool("debug"));
        Assert.Equal(expected, Parse("stage1", $"--debug={value}").Bool("debug"));
        // stage1 reads a flag it did not declare the same way, when asked.
        Assert.Equal(expected, Parse("stage1", $"--force={value}", Uuid).Bool("force"));
    }

    [Theory]
    [MemberData(nameof(Dialects))]
    public void A_bare_boolean_is_true_and_never_takes_the_next_argument(string dialect)
    {
        var f = Parse(dialect, "--debug", "false");
        Assert.True(f.Bool("debug"));
        Assert.Equal(["false"], f.Positional);
        Assert.False(Parse(dialect).Bool("debug"));
    }

    [Fact]
    public void A_bad_boolean_is_refused_in_each_sides_words()
    {
        Assert.Equal("flag --debug takes true or false, not \"maybe\"",
            Assert.Throws<UsageException>(() => Parse("stage0", "--debug=maybe")).Message);
        // stage1 keeps flags it did not declare and reads their value when asked, as Go would on Set.
        var kept = Parse("stage1", "--force=maybe", Uuid);
        Assert.Equal("invalid boolean value \"maybe\" for flag --force", Assert.Throws<Stage1Exception>(() => kept.Bool("force")).Message);
        Assert.Equal("invalid boolean value \"maybe\" for flag --debug", Assert.Throws<Stage1Exception>(() => Parse("stage1", "--debug=maybe")).Message);
    }

    // --flag value and --flag=value: a declared value flag takes either, on both sides.
    [Theory]
    [MemberData(nameof(Dialects))]
    public void A_declared_value_flag_takes_the_next_argument_or_what_follows_the_equals_sign(string dialect)
    {
        Assert.Equal("/x", Parse(dialect, "--dir", "/x").Get("dir"));
        Assert.Equal("/x", Parse(dialect, "--dir=/x").Get("dir"));
        Assert.Equal("", Parse(dialect, "--dir=").Get("dir"));
        Assert.Equal("a=b", Parse(dialect, "--dir=a=b").Get("dir"));
        Assert.Equal("-x", Parse(dialect, "--dir", "-x").Get("dir")); // as Go: the next argument, whatever it is
        Assert.Empty(Parse(dialect, "--dir", "/x").Positional);
    }

    [Fact]
    public void A_value_flag_last_on_the_line_is_refused_in_each_sides_words()
    {
        Assert.Equal("flag --dir needs a value", Assert.Throws<UsageException>(() => Parse("stage0", "--dir")).Message);
        Assert.Equal("flag needs an argument: -dir", Assert.Throws<Stage1Exception>(() => Parse("stage1", "-dir")).Message);
        Assert.Equal("flag needs an argument: --local-config", Assert.Throws<Stage1Exception>(() => GcArguments.Parse(["--local-config"])).Message);
    }

    [Fact]
    public void A_kept_unknown_flag_never_takes_the_next_argument()
    {
        // stage1 cannot know an undeclared flag's type; rkt's stage0 writes such flags as --name=value.
        var f = Parse("stage1", "--hostname", "web", Uuid);
        Assert.True(f.Has("hostname"));
        Assert.Null(f.Get("hostname"));
        Assert.Equal(["web", Uuid], f.Positional);
        Assert.Equal("web", Parse("stage1", "--hostname=web", Uuid).Get("hostname"));
    }

    // One dash is two, as in Go's flag (rkt-kvm declares no pflag shorthands); three dashes are bad syntax.
    [Theory]
    [MemberData(nameof(Dialects))]
    public void One_dash_reads_as_two(string dialect)
    {
        var f = Parse(dialect, "-dir", "/x", "-debug");
        Assert.Equal("/x", f.Get("dir"));
        Assert.True(f.Bool("debug"));
        Assert.Equal("/y", Parse(dialect, "-dir=/y").Get("dir"));
    }

    [Theory]
    [InlineData("---dir=/x")]
    [InlineData("--=x")]
    [InlineData("-=x")]
    [InlineData("---")]
    public void Bad_flag_syntax_is_refused_on_both_sides(string arg)
    {
        Assert.Equal($"bad flag syntax: {arg}", Assert.Throws<UsageException>(() => Parse("stage0", arg)).Message);
        Assert.Equal($"bad flag syntax: {arg}", Assert.Throws<Stage1Exception>(() => Parse("stage1", arg)).Message);
    }

    // "--" ends the flags and is dropped, on both sides; a verb with its own grammar gets it back.
    [Fact]
    public void Double_dash_ends_the_flags()
    {
        var stage1 = Parse("stage1", "--debug", "--", "--dir=/x", "cmd");
        Assert.True(stage1.SawDoubleDash);
        Assert.Null(stage1.Get("dir"));
        Assert.Equal(["--dir=/x", "cmd"], stage1.Positional);

        var stage0 = Parse("stage0", "a", "--", "--debug", "b");
        Assert.True(stage0.SawDoubleDash);
        Assert.False(stage0.Bool("debug"));
        Assert.Equal(["a", "--debug", "b"], stage0.Positional);

        var leading = GoFlags.Parse(["--debug", "--", "x"], Stage0Flags.Leading, Dir, Debug);
        Assert.False(leading.SawDoubleDash);
        Assert.True(leading.Bool("debug"));
        Assert.Equal(["--", "x"], leading.Positional);
    }

    [Theory]
    [MemberData(nameof(Dialects))]
    public void The_last_of_a_repeated_flag_wins(string dialect)
    {
        Assert.Equal("/b", Parse(dialect, "--dir=/a", "--dir", "/b").Get("dir"));
        Assert.False(Parse(dialect, "--debug", "--debug=false").Bool("debug"));
    }

    // Unknown flags: refused by rkt-kvm (as pflag), kept by stage1 (the contract), the end of the flags for a
    // verb with its own grammar.
    [Fact]
    public void Unknown_flags_are_refused_kept_or_left_to_the_verb()
    {
        Assert.Equal("unknown flag --bogus", Assert.Throws<UsageException>(() => Parse("stage0", "--bogus")).Message);
        Assert.Equal("unknown flag --bogus", Assert.Throws<UsageException>(() => Parse("stage0", "x", "--bogus=1")).Message);

        var kept = Parse("stage1", "--some-future-flag=1", "--bare", Uuid);
        Assert.Equal("1", kept.Get("some-future-flag"));
        Assert.True(kept.Has("bare"));
        Assert.Equal([Uuid], kept.Positional);

        var leading = GoFlags.Parse(["--dir", "/x", "--exec=/bin/sh", "--debug", "img"], Stage0Flags.Leading, Dir, Debug);
        Assert.Equal("/x", leading.Get("dir"));
        Assert.False(leading.Bool("debug"));
        Assert.Equal(["--exec=/bin/sh", "--debug", "img"], leading.Positional);
        Assert.Equal(["-it", "UUID"], GoFlags.Parse(["-it", "UUID"], Stage0Flags.Leading, Dir, Debug).Positional);
    }

    // Positional arguments: rkt's stage0 (pflag) reads flags after them; stage1 (Go's flag) stops at the first.
    [Fact]
    public void Stage0_intersperses_flags_and_stage1_stops_at_the_first_argument()
    {
        var stage0 = Parse("stage0", "a", "--debug", "b", "--dir", "/x", "c");
        Assert.True(stage0.Bool("debug"));
        Assert.Equal("/x", stage0.Get("dir"));
        Assert.Equal(["a", "b", "c"], stage0.Positional);

        var stage1 = Parse("stage1", "--dir=/x", Uuid, "--debug");
        Assert.Equal("/x", stage1.Get("dir"));
        Assert.False(stage1.Has("debug"));
        Assert.Equal([Uuid, "--debug"], stage1.Positional);
    }

    [Fact]
    public void A_lone_dash_and_the_empty_string_are_arguments()
    {
        Assert.Equal(["-", ""], Parse("stage0", "-", "--debug", "").Positional);
        Assert.Equal(["-", "--debug"], Parse("stage1", "-", "--debug").Positional);
    }

    [Theory]
    [MemberData(nameof(Dialects))]
    public void Defaults_fill_in_only_what_is_absent(string dialect)
    {
        FlagSpec[] specs = [new("format", "", Default: "text"), new("pretty-print", "", IsBool: true, Default: "true")];
        var absent = GoFlags.Parse([], Of(dialect), specs);
        Assert.Equal("text", absent.Get("format"));
        Assert.True(absent.Bool("pretty-print"));
        var given = GoFlags.Parse(["--format=json", "--pretty-print=false"], Of(dialect), specs);
        Assert.Equal("json", given.Get("format"));
        Assert.False(given.Bool("pretty-print"));
    }

    [Fact]
    public void Read_says_what_one_argument_is_and_how_many_it_spans()
    {
        FlagSpec[] specs = [Dir, Debug];
        Assert.Equal(new FlagToken(FlagTokenKind.Flag, "dir", "/x", Dir, 2), GoFlags.Read(["--dir", "/x"], 0, specs, Stage0Flags.Verb));
        Assert.Equal(new FlagToken(FlagTokenKind.Flag, "dir", "/x", Dir, 1), GoFlags.Read(["--dir=/x"], 0, specs, Stage0Flags.Verb));
        Assert.Equal(new FlagToken(FlagTokenKind.Flag, "debug", null, Debug, 1), GoFlags.Read(["--debug", "x"], 0, specs, Stage0Flags.Verb));
        Assert.Equal(new FlagToken(FlagTokenKind.Flag, "other", "1", null, 1), GoFlags.Read(["-other=1"], 0, specs, Stage0Flags.Verb));
        Assert.Equal(FlagTokenKind.Positional, GoFlags.Read(["img"], 0, specs, Stage0Flags.Verb).Kind);
        Assert.Equal(FlagTokenKind.DoubleDash, GoFlags.Read(["--"], 0, specs, Stage0Flags.Verb).Kind);
    }

    [Fact]
    public void Run_validates_stage0s_flags_without_a_pod_uuid()
    {
        RunArguments.Validate(["--net=default", "--local-config=/etc/rkt", "--debug", "--mutable", "--hostname=web"]);
        // The same refusal, word for word, as stage1 run gives for the same flags.
        var early = Assert.Throws<Stage1Exception>(() => RunArguments.Validate(["--net=host"])).Message;
        Assert.Equal(Assert.Throws<Stage1Exception>(() => RunArguments.Parse(["--net=host", Uuid])).Message, early);
        Assert.Contains("--net=host is not supported", early);
        Assert.Throws<ArgumentException>(() => RunArguments.Validate(["--net=default", Uuid]));
    }

    [Fact]
    public void Run_reads_its_flags_with_the_same_syntax()
    {
        var request = RunRequest.Parse(["example.com/app", "-exec=/bin/sh", "--user", "0", "--interactive=1", "--no-overlay=F"]);
        Assert.Equal(("/bin/sh", "0"), (request.Apps[0].Exec, request.Apps[0].User));
        Assert.True(request.Interactive);
        Assert.False(request.NoOverlay);
        Assert.Equal("unknown flag --bogus", Assert.Throws<UsageException>(() => RunRequest.Parse(["example.com/app", "--bogus"])).Message);
        Assert.Equal("flag --exec needs a value", Assert.Throws<UsageException>(() => RunRequest.Parse(["example.com/app", "--exec"])).Message);
        Assert.Equal("flag --interactive takes true or false, not \"yes\"", Assert.Throws<UsageException>(() => RunRequest.Parse(["--interactive=yes"])).Message);
    }
}

using System.Buffers.Binary;
using System.Globalization;
using Google.Protobuf;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Stage1.Manifests;

namespace Rkt.Kvm.Stage1.Entrypoints.Supervision;

/// <summary>
/// The one contract between stage1 <c>run</c> (root: the pod's cgroup, network and VM) and the pod
/// supervisor it starts once the VM is up (<c>rkt-kvm-stage1 supervise</c>, the pod's own
/// unprivileged user: everything that talks to the guest's agent). Both sides are this binary;
/// every message crosses here and only here.
/// <list type="bullet">
/// <item>The command line: <see cref="SupervisorArguments"/>.</item>
/// <item>run → supervisor, on the plan pipe: the <see cref="SupervisorPlan"/> (length-prefixed), then
/// <see cref="RunNotice"/> lines (stop, the VMM's exit). The pipe's end also means the VM is gone: run ended.</item>
/// <item>supervisor → run, on the report pipe: <see cref="SupervisorReport"/> lines, which run checks
/// as it checks any input from a less trusted process, and turns into the pod's files.</item>
/// </list>
/// </summary>
internal static class SupervisorContract
{
    public const string Entrypoint = Runtime.PodRuntime.SupervisorEntrypoint;
    /// <summary>Longest report line run reads; longer ones are refused.</summary>
    public const int MaxReportLine = 1024;
}

/// <summary><c>rkt-kvm-stage1 supervise UUID --plan-fd N --report-fd M</c>: the UUID first, so gc finds the process by it.</summary>
internal sealed record SupervisorArguments(string Uuid, int PlanFd, int ReportFd)
{
    public IReadOnlyList<string> ToArgs() =>
        [SupervisorContract.Entrypoint, Uuid, "--plan-fd", PlanFd.ToString(CultureInfo.InvariantCulture), "--report-fd", ReportFd.ToString(CultureInfo.InvariantCulture)];

    /// <summary>Parses what follows the entrypoint's name.</summary>
    public static SupervisorArguments Parse(IReadOnlyList<string> argv)
    {
        if (argv.Count != 5 || argv[1] != "--plan-fd" || argv[3] != "--report-fd"
            || !int.TryParse(argv[2], NumberStyles.None, CultureInfo.InvariantCulture, out int plan)
            || !int.TryParse(argv[4], NumberStyles.None, CultureInfo.InvariantCulture, out int report) || plan < 3 || report < 3)
            throw new Stage1Exception("usage: rkt-kvm-stage1 supervise UUID --plan-fd N --report-fd M (started by run, not by hand)");
        return new SupervisorArguments(Entrypoints.PodUuid.Require(argv[0], "supervise"), plan, report);
    }
}

/// <summary>
/// What the supervisor does with the agent, decided by run (which alone reads the pod's network
/// and writes the pod's files): the pod's configuration, the apps to add and start in manifest
/// order (an immutable pod's; a mutable pod starts with none), and which of them, if any, is
/// interactive (<c>run --interactive</c>).
/// </summary>
internal sealed record SupervisorPlan(bool Mutable, string? InteractiveApp, ConfigurePodRequest Configure, IReadOnlyList<AddAppRequest> Apps)
{
    /// <summary>A plan larger than this is refused: app manifests and DNS files are kilobytes.</summary>
    public const int MaxBytes = 16 << 20;

    /// <summary>Four bytes of length, then the plan: so the supervisor reads exactly the plan, and the pipe stays free for the notice.</summary>
    public byte[] Serialize()
    {
        using var body = new MemoryStream();
        var output = new CodedOutputStream(body, leaveOpen: true);
        output.WriteBool(Mutable);
        output.WriteString(InteractiveApp ?? "");
        output.WriteMessage(Configure);
        output.WriteInt32(Apps.Count);
        foreach (var app in Apps) output.WriteMessage(app);
        output.Flush();
        if (body.Length > MaxBytes) throw new Stage1Exception($"the pod's plan is {body.Length} bytes, more than the {MaxBytes} a supervisor takes");
        var framed = new byte[4 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(framed, (int)body.Length);
        body.GetBuffer().AsSpan(0, (int)body.Length).CopyTo(framed.AsSpan(4));
        return framed;
    }

    /// <summary>Reads one framed plan, and nothing after it.</summary>
    public static SupervisorPlan ReadFrom(Stream stream)
    {
        var length = new byte[4];
        stream.ReadExactly(length);
        int size = BinaryPrimitives.ReadInt32LittleEndian(length);
        if (size <= 0 || size > MaxBytes) throw new Stage1Exception($"supervise: a plan of {size} bytes");
        var body = new byte[size];
        stream.ReadExactly(body);
        var input = new CodedInputStream(body);
        bool mutable = input.ReadBool();
        string interactive = input.ReadString();
        var configure = new ConfigurePodRequest();
        input.ReadMessage(configure);
        int count = input.ReadInt32();
        if (count < 0 || count > 4096) throw new Stage1Exception($"supervise: a plan of {count} apps");
        var apps = new List<AddAppRequest>(count);
        for (int i = 0; i < count; i++)
        {
            var app = new AddAppRequest();
            input.ReadMessage(app);
            apps.Add(app);
        }
        if (!input.IsAtEnd) throw new Stage1Exception("supervise: the plan has bytes after its last app");
        return new SupervisorPlan(mutable, interactive.Length == 0 ? null : interactive, configure, apps);
    }
}

/// <summary>
/// run → supervisor, lines on the plan pipe after the plan: <c>stop</c> (the pod was asked to stop:
/// a pipe keeps a stop that comes before the supervisor is listening, where a signal would kill it)
/// and <c>vm-exited &lt;how&gt;</c> (the VMM has exited; the last line run sends).
/// </summary>
internal static class RunNotice
{
    public const string Stop = "stop\n";
    private const string VmExitedPrefix = "vm-exited ";

    public static string VmExited(string how) => VmExitedPrefix + how.ReplaceLineEndings(" ") + "\n";

    /// <summary>One line (without its newline): a stop, how the VMM ended, or neither (false, null).</summary>
    public static (bool Stop, string? VmExited) Parse(string line) =>
        line == "stop" ? (true, null)
        : line.StartsWith(VmExitedPrefix, StringComparison.Ordinal) ? (false, line[VmExitedPrefix.Length..])
        : (false, null);
}

/// <summary>supervisor → run: one line each. run writes the pod's files from them; the supervisor writes none of those.</summary>
internal abstract record SupervisorReport
{
    /// <summary>An app exited with this code: run writes <c>rkt/status/&lt;app&gt;</c> at once.</summary>
    public sealed record AppExited(string App, int Code) : SupervisorReport;
    /// <summary>The apps are started (immutable) or the pod is ready for them (mutable): run marks the supervisor ready and tells systemd.</summary>
    public sealed record Ready : SupervisorReport;
    /// <summary>A line of the pod's timeline (<c>stage1-kvm/timeline</c>).</summary>
    public sealed record TimelineEntry(string Name, double Value) : SupervisorReport;
    /// <summary>The pod's result, the supervisor's last report: without it, run treats the pod as failed.</summary>
    public sealed record Result(int Code) : SupervisorReport;

    public string Format() => this switch
    {
        AppExited e => string.Create(CultureInfo.InvariantCulture, $"exit {e.App} {e.Code}\n"),
        Ready => "ready\n",
        TimelineEntry t => string.Create(CultureInfo.InvariantCulture, $"timeline {t.Name} {t.Value:R}\n"),
        Result r => string.Create(CultureInfo.InvariantCulture, $"result {r.Code}\n"),
        _ => throw new InvalidOperationException(GetType().Name),
    };

    /// <summary>One report line (without its newline), checked: a valid app name, a timeline name of
    /// lower-case letters, digits and '-', finite numbers, exit codes 0-255. Anything else throws <see cref="FormatException"/>.</summary>
    public static SupervisorReport Parse(string line)
    {
        if (line.Length > SupervisorContract.MaxReportLine) throw new FormatException($"a report line of {line.Length} characters");
        var parts = line.Split(' ');
        return parts switch
        {
            ["ready"] => new Ready(),
            ["exit", var app, var code] when AcName.IsValidName(app) => new AppExited(app, ExitCode(code)),
            ["timeline", var name, var value] when IsTimelineName(name) => new TimelineEntry(name, Number(value)),
            ["result", var code] => new Result(ExitCode(code)),
            _ => throw new FormatException($"not a report: \"{(line.Length > 80 ? line[..80] + "…" : line)}\""),
        };
    }

    private static int ExitCode(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int code) && code <= 255 ? code : throw new FormatException($"not an exit code: {text}");

    private static double Number(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) ? v : throw new FormatException($"not a number: {text}");

    private static bool IsTimelineName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-');
}

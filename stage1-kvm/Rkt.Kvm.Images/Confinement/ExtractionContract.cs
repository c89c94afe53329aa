using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Images.Confinement;

/// <summary>
/// What one extraction writes: its archives in order, each with its layout, layer and name for
/// errors, and the policy. The same plan runs in-process or in the confined child
/// (<see cref="PlannedExtraction"/>), so both write the same tree.
/// </summary>
public sealed record ExtractionPlan
{
    public required IReadOnlyList<PlannedArchive> Archives { get; init; }
    public bool AllowDevices { get; init; }
    public long MaxBytes { get; init; } = new ExtractionPolicy().MaxBytes;
    public int MaxEntries { get; init; } = new ExtractionPolicy().MaxEntries;
    /// <summary>The bomb guard on the archives' uncompressed bytes, all together (unpacking a user's archive;
    /// a render applies blobs its import already measured).</summary>
    public bool LimitBytes { get; init; }
    /// <summary>For an ACI rendered with its dependencies: each image's level and whitelist (<see cref="AciEntryFilters"/>).</summary>
    public IReadOnlyList<AciLayer>? AciLayers { get; init; }

    [JsonIgnore]
    public ExtractionPolicy Policy => new() { AllowDevices = AllowDevices, MaxBytes = MaxBytes, MaxEntries = MaxEntries };
}

/// <param name="AciImage">the image of <see cref="ExtractionPlan.AciLayers"/> whose entry filter applies, if any.</param>
public sealed record PlannedArchive(ArchiveLayout Layout, int Layer, string What, int? AciImage = null);

[JsonSerializable(typeof(ExtractionPlan))]
[JsonSourceGenerationOptions(UseStringEnumConverter = true)]
internal sealed partial class ExtractionPlanJson : JsonSerializerContext;

/// <summary>
/// The one contract between <c>rkt-kvm</c> and the confined child it re-executes for an
/// extraction (<see cref="ExtractionSandbox"/> starts it, <see cref="ExtractionChild"/> is it):
/// <list type="bullet">
/// <item>argv: <c>rkt-kvm __extract [--debug] [--test-hook=escape|pause]</c> (a hidden verb, not in help);</item>
/// <item>fd 0: the plan, one line of JSON; then (only under the pause hook) a byte that lets the child go on;</item>
/// <item>fd 1: the report, lines of <c>progress N</c>, <c>hook TEXT</c>, then <c>ok</c> or
/// <c>error KIND ENTRY MESSAGE</c> (tab-separated, escaped); fd 2: the parent's stderr (its log);</item>
/// <item>fd 3: the destination directory (O_PATH), which becomes <c>/rootfs</c> in the child's root;
/// fd 4 onwards: the plan's archives, open for reading.</item>
/// </list>
/// Exit status 0 with <c>ok</c>, 1 with an error line; anything else is a crash.
/// </summary>
public static class ExtractionContract
{
    public const string Verb = "__extract";
    public const int PlanFd = 0, ReportFd = 1, RootFd = 3, FirstArchiveFd = 4;
    /// <summary>Where the destination appears inside the child's root.</summary>
    public const string RootInChild = "/rootfs";

    /// <summary>Test-only faults the product never asks for: <c>escape</c> makes the locked-down child
    /// try host paths and a network socket; <c>pause</c> holds it until the parent has looked at it.</summary>
    public enum TestHook { None, Escape, Pause }

    public sealed record Arguments(bool Debug, TestHook Hook);

    public static IReadOnlyList<string> ToArgs(Arguments a)
    {
        var args = new List<string> { Verb };
        if (a.Debug) args.Add("--debug");
        if (a.Hook != TestHook.None) args.Add("--test-hook=" + a.Hook.ToString().ToLowerInvariant());
        return args;
    }

    /// <summary>Parses what follows the verb; anything else is refused.</summary>
    public static Arguments Parse(IReadOnlyList<string> args)
    {
        bool debug = false;
        var hook = TestHook.None;
        foreach (var arg in args)
        {
            if (arg == "--debug") debug = true;
            else if (arg.StartsWith("--test-hook=", StringComparison.Ordinal)
                     && Enum.TryParse<TestHook>(arg["--test-hook=".Length..], ignoreCase: true, out var h) && h != TestHook.None) hook = h;
            else throw new ArgumentException($"{Verb}: unknown argument \"{arg}\"");
        }
        return new Arguments(debug, hook);
    }

    public static string PlanLine(ExtractionPlan plan) => JsonSerializer.Serialize(plan, ExtractionPlanJson.Default.ExtractionPlan) + "\n";

    public static ExtractionPlan ReadPlan(string line) =>
        JsonSerializer.Deserialize(line, ExtractionPlanJson.Default.ExtractionPlan) ?? throw new ArgumentException("empty extraction plan");

    public const string Ok = "ok", Progress = "progress ", Hook = "hook ", Error = "error\t";

    /// <summary>How an error crosses: its kind (image, unsafe-entry, io, internal), the refused entry, the message.</summary>
    public static string ErrorLine(Exception e) => e switch
    {
        UnsafeEntryException u => Error + "unsafe-entry\t" + Escape(u.Entry) + "\t" + Escape(u.Message),
        ImageException => Error + "image\t\t" + Escape(e.Message),
        IOException => Error + "io\t\t" + Escape(e.Message),
        _ => Error + "internal\t\t" + Escape($"{e.GetType().Name}: {e.Message}"),
    };

    /// <summary>The exception the parent throws for an error line: the same type and message as in-process.</summary>
    public static Exception ParseError(string line)
    {
        var parts = line.Split('\t');
        if (parts.Length != 4) return new ImageException("the extraction process sent a malformed report: " + line);
        string message = Unescape(parts[3]);
        return parts[1] switch
        {
            "unsafe-entry" => UnsafeEntryException.Rebuilt(Unescape(parts[2]), message),
            "image" => new ImageException(message),
            "io" => new IOException(message),
            _ => new ImageException("extraction failed: " + message),
        };
    }

    /// <summary>Backslash, tab, CR and LF escaped: one field of one line, whatever an entry's name holds.</summary>
    internal static string Escape(string s) =>
        s.Replace("\\", "\\\\").Replace("\t", "\\t").Replace("\n", "\\n").Replace("\r", "\\r");

    internal static string Unescape(string s)
    {
        var b = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '\\' || i + 1 == s.Length) { b.Append(s[i]); continue; }
            b.Append(s[++i] switch { 't' => '\t', 'n' => '\n', 'r' => '\r', var c => c });
        }
        return b.ToString();
    }
}

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// Command-line flags the way rkt's stage0 (Go's flag package) writes them: <c>--name=value</c>,
/// <c>-name=value</c>, bare <c>--name</c> for booleans, and <c>--name value</c> only for the flags a
/// caller declares as taking a separate value (gc's <c>--local-config DIR</c>). Parsing stops at the
/// first non-flag or after <c>--</c>. Unknown flags are kept, not refused: a newer stage0 may pass
/// flags an older stage1 does not know, and the contract says to ignore them.
/// </summary>
public sealed class GoFlags
{
    private readonly Dictionary<string, string?> _flags;

    private GoFlags(Dictionary<string, string?> flags, IReadOnlyList<string> positional, bool sawDoubleDash)
    {
        _flags = flags;
        Positional = positional;
        SawDoubleDash = sawDoubleDash;
    }

    /// <summary>Arguments after the flags (for enter: the command after <c>--</c>).</summary>
    public IReadOnlyList<string> Positional { get; }

    public bool SawDoubleDash { get; }

    public static GoFlags Parse(IReadOnlyList<string> argv, params string[] separateValueFlags)
    {
        var flags = new Dictionary<string, string?>(StringComparer.Ordinal);
        int i = 0;
        bool doubleDash = false;
        for (; i < argv.Count; i++)
        {
            var arg = argv[i];
            if (arg == "--") { doubleDash = true; i++; break; }
            if (arg.Length < 2 || arg[0] != '-') break;
            var body = arg.StartsWith("--", StringComparison.Ordinal) ? arg[2..] : arg[1..];
            if (body.Length == 0 || body[0] is '-' or '=') throw new Stage1Exception($"bad flag syntax: {arg}");
            int eq = body.IndexOf('=');
            if (eq >= 0) flags[body[..eq]] = body[(eq + 1)..];
            else if (separateValueFlags.Contains(body))
                flags[body] = i + 1 < argv.Count ? argv[++i] : throw new Stage1Exception($"flag needs an argument: {arg}");
            else flags[body] = null;
        }
        return new GoFlags(flags, argv.Skip(i).ToList(), doubleDash);
    }

    public bool Has(string name) => _flags.ContainsKey(name);

    public string? Get(string name) => _flags.TryGetValue(name, out var v) ? v : null;

    /// <summary>Go's boolean syntax: bare flag = true; =true/false/1/0/t/f.</summary>
    public bool Bool(string name) => _flags.TryGetValue(name, out var value) && ParseBool(value, name);

    /// <summary>Go's <c>strconv.ParseBool</c>, null (a bare flag) being true.</summary>
    public static bool ParseBool(string? value, string name) => value switch
    {
        null or "true" or "TRUE" or "True" or "1" or "t" or "T" => true,
        "false" or "FALSE" or "False" or "0" or "f" or "F" => false,
        _ => throw new Stage1Exception($"invalid boolean value \"{value}\" for flag --{name}"),
    };
}

namespace Rkt.Kvm.Stage1.Flags;

/// <summary>A flag a command declares. A declared non-boolean flag takes its value as <c>--name=value</c>
/// or <c>--name value</c>; a boolean one is <c>--name</c> or <c>--name=BOOL</c>, never <c>--name BOOL</c>
/// (Go's flag and pflag alike: the next argument may be an image or a UUID).</summary>
public sealed record FlagSpec(string Name, string Help = "", bool IsBool = false, string? Default = null);

/// <summary>What a dialect does with a flag nobody declared.</summary>
public enum UnknownFlags
{
    /// <summary>An error, as both pflag (rkt's stage0) and Go's flag do.</summary>
    Refuse,

    /// <summary>Kept, with the value after <c>=</c> or none: the stage1 contract says to ignore flags a newer
    /// stage0 may pass. Such a flag never takes the next argument as its value, since its type is unknown;
    /// rkt's stage0 writes every such flag as <c>--name=value</c>.</summary>
    Keep,

    /// <summary>Flags end before it: it, a <c>--</c>, and everything after are left as positional arguments
    /// for a verb with its own grammar (run's per-image flags and <c>-- ARGS ---</c>, enter's <c>-it</c>).</summary>
    EndFlags,
}

/// <summary>What one argument is, as <see cref="GoFlags.Read"/> reads it.</summary>
public enum FlagTokenKind { Positional, DoubleDash, Flag }

/// <summary>One flag (or argument) read from <c>argv[i]</c>; <see cref="Width"/> is 2 when it took the next
/// argument as its value. <see cref="Spec"/> is null for a flag nobody declared.</summary>
public readonly record struct FlagToken(FlagTokenKind Kind, string Name, string? Value, FlagSpec? Spec, int Width);

/// <summary>
/// How one side of rkt reads Go-style flags. The syntax is the same on both sides (<see cref="GoFlags.Read"/>);
/// what differs is what differs between rkt's own two sides, and how each side's errors read:
/// <list type="bullet">
/// <item><see cref="Interspersed"/>: rkt's stage0 parses with cobra/pflag, where flags may follow positional
/// arguments (<c>rkt list --full</c>, <c>rkt status UUID --wait</c>); rkt's stage1 entrypoints parse with Go's
/// <c>flag</c>, which stops at the first non-flag, so the pod UUID (or enter's command) ends the flags.</item>
/// <item><see cref="Unknown"/>: pflag refuses unknown flags; a stage1 must ignore them (a newer stage0 may pass
/// flags an older stage1 does not know); stage0 verbs with their own grammar end their flags at one.</item>
/// <item>The messages and the exception: each side's users (and tests) know its wording, and stage0 reports
/// a <c>UsageException</c> where stage1 reports a <see cref="Stage1Exception"/>.</item>
/// </list>
/// </summary>
public sealed record GoFlagDialect
{
    public required bool Interspersed { get; init; }
    public required UnknownFlags Unknown { get; init; }
    /// <summary>The exception that carries this side's message.</summary>
    public required Func<string, Exception> Error { get; init; }
    /// <summary>(the argument as written, the flag's name) → message, for a value flag last on the line.</summary>
    public required Func<string, string, string> MissingValueMessage { get; init; }
    /// <summary>(name, value) → message, for a boolean that <c>strconv.ParseBool</c> would refuse.</summary>
    public required Func<string, string, string> InvalidBoolMessage { get; init; }
    /// <summary>name → message, for <see cref="UnknownFlags.Refuse"/> (Go's wording unless set).</summary>
    public Func<string, string> UnknownFlagMessage { get; init; } = name => $"flag provided but not defined: -{name}";

    /// <summary>rkt's stage1 entrypoints: Go's <c>flag</c>, stopping at the first non-flag, keeping unknown flags.</summary>
    public static GoFlagDialect Stage1 { get; } = new()
    {
        Interspersed = false,
        Unknown = UnknownFlags.Keep,
        Error = message => new Stage1Exception(message),
        MissingValueMessage = (arg, _) => $"flag needs an argument: {arg}",
        InvalidBoolMessage = (name, value) => $"invalid boolean value \"{value}\" for flag --{name}",
    };

    public Exception UnknownFlag(string name) => Error(UnknownFlagMessage(name));

    /// <summary>Go's <c>strconv.ParseBool</c>, as both Go's flag and pflag apply it; null (a bare flag) is true.</summary>
    public bool ParseBool(string? value, string name) => value switch
    {
        null or "true" or "TRUE" or "True" or "1" or "t" or "T" => true,
        "false" or "FALSE" or "False" or "0" or "f" or "F" => false,
        _ => throw Error(InvalidBoolMessage(name, value)),
    };
}

/// <summary>
/// Command-line flags read the way Go programs read them, for rkt-kvm (our stage0) and for every stage1
/// entrypoint: <c>--name=value</c>, <c>-name=value</c> (one dash is two, as in Go's flag; rkt-kvm declares
/// no pflag shorthands), <c>--name value</c> for a declared non-boolean flag, bare <c>--name</c> for a
/// boolean, <c>--</c> ending the flags, the last of a repeated flag winning. <c>---name</c>, <c>--=v</c> and
/// <c>-=v</c> are bad syntax; <c>-</c> and the empty string are arguments. Where rkt's two sides differ,
/// a <see cref="GoFlagDialect"/> says how.
/// </summary>
public sealed class GoFlags
{
    private readonly Dictionary<string, string?> _values;
    private readonly GoFlagDialect _dialect;

    private GoFlags(Dictionary<string, string?> values, List<string> positional, bool sawDoubleDash, GoFlagDialect dialect)
    {
        _values = values;
        Positional = positional;
        SawDoubleDash = sawDoubleDash;
        _dialect = dialect;
    }

    /// <summary>The arguments that are not flags: all of them (interspersed), or everything from the first
    /// one on (stage1: for enter, the command after <c>--</c>).</summary>
    public IReadOnlyList<string> Positional { get; }

    /// <summary>Whether a <c>--</c> ended the flags (it is not among <see cref="Positional"/>).</summary>
    public bool SawDoubleDash { get; }

    public static GoFlags Parse(IReadOnlyList<string> argv, GoFlagDialect dialect, params IReadOnlyCollection<FlagSpec> specs)
    {
        var values = new Dictionary<string, string?>(StringComparer.Ordinal);
        var positional = new List<string>();
        bool doubleDash = false;
        int i = 0;
        while (i < argv.Count)
        {
            var token = Read(argv, i, specs, dialect);
            if (token.Kind == FlagTokenKind.DoubleDash)
            {
                if (dialect.Unknown == UnknownFlags.EndFlags) break; // the verb's grammar gives "--" its meaning
                doubleDash = true;
                i++;
                break;
            }
            if (token.Kind == FlagTokenKind.Positional)
            {
                if (!dialect.Interspersed) break;
                positional.Add(argv[i++]);
                continue;
            }
            if (token.Spec is null)
            {
                if (dialect.Unknown == UnknownFlags.EndFlags) break;
                if (dialect.Unknown == UnknownFlags.Refuse) throw dialect.UnknownFlag(token.Name);
            }
            values[token.Name] = token.Value;
            i += token.Width;
        }
        positional.AddRange(argv.Skip(i));
        foreach (var spec in specs)
            if (spec.Default is not null) values.TryAdd(spec.Name, spec.Default);
        return new GoFlags(values, positional, doubleDash, dialect);
    }

    /// <summary>
    /// Reads <c>argv[i]</c> (and its value, when it is a declared non-boolean flag written without <c>=</c>).
    /// Refuses bad syntax, a missing value and, for a declared boolean, a value that is not one; whether an
    /// undeclared flag is allowed is the caller's to say. For callers with a grammar of their own (run's
    /// per-image flags, finding the verb among the global flags) as much as for <see cref="Parse"/>.
    /// </summary>
    public static FlagToken Read(IReadOnlyList<string> argv, int i, IReadOnlyCollection<FlagSpec> specs, GoFlagDialect dialect)
    {
        var arg = argv[i];
        if (arg == "--") return new(FlagTokenKind.DoubleDash, "", null, null, 1);
        if (arg.Length < 2 || arg[0] != '-') return new(FlagTokenKind.Positional, "", null, null, 1);
        var body = arg[(arg[1] == '-' ? 2 : 1)..];
        if (body.Length == 0 || body[0] is '-' or '=') throw dialect.Error($"bad flag syntax: {arg}");
        int eq = body.IndexOf('=');
        var name = eq < 0 ? body : body[..eq];
        var value = eq < 0 ? null : body[(eq + 1)..];
        var spec = specs.FirstOrDefault(s => s.Name == name);
        if (spec is { IsBool: false } && value is null)
            return i + 1 < argv.Count
                ? new(FlagTokenKind.Flag, name, argv[i + 1], spec, 2)
                : throw dialect.Error(dialect.MissingValueMessage(arg, name));
        if (spec is { IsBool: true } && value is not null) dialect.ParseBool(value, name);
        return new(FlagTokenKind.Flag, name, value, spec, 1);
    }

    public bool Has(string name) => _values.ContainsKey(name);

    /// <summary>The flag's value, its default, or null (absent, or given bare).</summary>
    public string? Get(string name) => _values.GetValueOrDefault(name);

    /// <summary>A boolean flag: absent is false, bare is true, else <c>strconv.ParseBool</c> of its value.</summary>
    public bool Bool(string name) => _values.TryGetValue(name, out var value) && _dialect.ParseBool(value, name);
}

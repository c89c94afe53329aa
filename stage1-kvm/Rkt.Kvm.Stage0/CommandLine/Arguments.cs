namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>A flag a command accepts. Value flags take "--x=v" or "--x v"; bool flags take
/// "--x" or Go's "--x=true|false", as rkt users type them.</summary>
public sealed record FlagSpec(string Name, string Help, bool IsBool = false, string? Default = null);

/// <summary>Arguments after Go-style flag parsing: flags anywhere, "--" ends them.</summary>
public sealed class Arguments
{
    private readonly Dictionary<string, string> _flags;

    private Arguments(Dictionary<string, string> flags, List<string> positional)
    {
        _flags = flags;
        Positional = positional;
    }

    public IReadOnlyList<string> Positional { get; }

    public static Arguments Parse(IEnumerable<string> args, IReadOnlyCollection<FlagSpec> specs)
    {
        var flags = new Dictionary<string, string>(StringComparer.Ordinal);
        var positional = new List<string>();
        using var it = args.GetEnumerator();
        bool flagsDone = false;
        while (it.MoveNext())
        {
            var arg = it.Current;
            if (flagsDone || !arg.StartsWith('-') || arg == "-") { positional.Add(arg); continue; }
            if (arg == "--") { flagsDone = true; continue; }
            var body = arg.TrimStart('-');
            var eq = body.IndexOf('=');
            var name = eq < 0 ? body : body[..eq];
            var spec = specs.FirstOrDefault(s => s.Name == name) ?? throw new UsageException($"unknown flag --{name}");
            string value;
            if (eq >= 0) value = body[(eq + 1)..];
            else if (spec.IsBool) value = "true";
            else if (it.MoveNext()) value = it.Current;
            else throw new UsageException($"flag --{name} needs a value");
            if (spec.IsBool && value is not ("true" or "false")) throw new UsageException($"flag --{name} takes true or false, not \"{value}\"");
            flags[name] = value;
        }
        foreach (var spec in specs.Where(s => s.Default is not null && !flags.ContainsKey(s.Name))) flags[spec.Name] = spec.Default!;
        return new Arguments(flags, positional);
    }

    /// <summary>Leading flags of <paramref name="specs"/> are parsed; everything from the first
    /// other argument on is positional, untouched.</summary>
    public static Arguments ParseLeading(IReadOnlyList<string> args, IReadOnlyCollection<FlagSpec> specs)
    {
        int i = 0;
        for (; i < args.Count; i++)
        {
            var body = args[i].StartsWith("--", StringComparison.Ordinal) ? args[i][2..] : null;
            var name = body?.Split('=', 2)[0];
            var spec = specs.FirstOrDefault(s => s.Name == name);
            if (spec is null) break;
            if (!spec.IsBool && !body!.Contains('=')) i++; // "--dir VALUE"
        }
        var parsed = Parse(args.Take(Math.Min(i, args.Count)), specs);
        return new Arguments(parsed._flags, [.. args.Skip(i)]);
    }

    public string? Get(string name) => _flags.GetValueOrDefault(name);

    public bool Bool(string name) => _flags.GetValueOrDefault(name) == "true";

    /// <summary>Exactly <paramref name="count"/> positional arguments, or a usage error.</summary>
    public IReadOnlyList<string> Expect(int count, string usage) =>
        Positional.Count == count ? Positional : throw new UsageException($"usage: {usage}");
}

/// <summary>A command line the user got wrong; printed as one line, exit 254 like rkt.</summary>
public sealed class UsageException(string message) : Exception(message);

using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Cli.Cli;

/// <summary>
/// One verb of rkt-kvm. New verbs (run, list, status, …) implement this and are added to
/// <see cref="CommandTable"/>; a verb with sub-verbs (image) is a <see cref="CommandGroup"/>.
/// </summary>
public interface ICommand
{
    string Name { get; }
    string Summary { get; }
    string Usage { get; }
    IReadOnlyList<FlagSpec> Flags { get; }
    /// <summary>True for verbs with their own command-line grammar (run: per-image flags and
    /// <c>-- args ---</c>): only leading global flags are parsed, the rest arrive as positional.</summary>
    bool RawArguments => false;
    int Run(CommandContext context, Arguments args);
}

/// <summary>A leaf verb: its name, one-line summary and usage, given once.</summary>
public abstract class Command(string name, string summary, string usage) : ICommand
{
    public string Name => name;
    public string Summary => summary;
    public string Usage => usage;
    public virtual IReadOnlyList<FlagSpec> Flags => [];
    public virtual bool RawArguments => false;
    public abstract int Run(CommandContext context, Arguments args);
}

/// <summary>What every command gets: the store under --dir, the output streams, and how to
/// show progress (bars on a terminal, plain lines otherwise).</summary>
public sealed class CommandContext(string dataDir, TextWriter stdout, TextWriter stderr, bool stderrIsTerminal, string localConfig = CommandContext.DefaultLocalConfig)
{
    /// <summary>rkt's default <c>--local-config</c>.</summary>
    public const string DefaultLocalConfig = "/etc/rkt";

    public string DataDir { get; } = dataDir;
    /// <summary>rkt's local configuration directory: stage1 reads network configurations from its <c>net.d/</c>.</summary>
    public string LocalConfig { get; } = localConfig;
    public TextWriter Out { get; } = stdout;
    public TextWriter Err { get; } = stderr;
    public bool StderrIsTerminal { get; } = stderrIsTerminal;
    public ImageStore Store => field ??= new ImageStore(DataDir);
    /// <summary>rkt's global <c>--insecure-options</c>.</summary>
    public Images.Registry.InsecureOptions Insecure { get; init; }
}

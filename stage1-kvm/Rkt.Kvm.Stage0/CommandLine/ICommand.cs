using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Stage0.CommandLine;

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
    int Run(CommandContext context, GoFlags args);
}

/// <summary>A leaf verb: its name, one-line summary and usage, given once.</summary>
public abstract class Command(string name, string summary, string usage) : ICommand
{
    public string Name => name;
    public string Summary => summary;
    public string Usage => usage;
    public virtual IReadOnlyList<FlagSpec> Flags => [];
    public virtual bool RawArguments => false;
    public abstract int Run(CommandContext context, GoFlags args);
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
    public ImageStore Store => field ??= new ImageStore(DataDir) { Sandbox = Images.Confinement.ExtractionSandbox.ForThisProcess() };
    /// <summary>rkt's global <c>--insecure-options</c>.</summary>
    public Images.Registry.InsecureOptions Insecure { get; init; }
    /// <summary>rkt's <c>--system-config</c>: the vendor's configuration (auth.d/, trustedkeys/), read only.</summary>
    public string SystemConfig { get; init; } = DefaultSystemConfig;
    /// <summary>rkt's <c>--trust-keys-from-https</c>.</summary>
    public bool TrustKeysFromHttps { get; init; }
    /// <summary>Where a question to the user (a key's review) is answered: stdin when both it and
    /// stderr are terminals, as rkt asks only then; null otherwise.</summary>
    public TextReader? Terminal { get; init; }
    /// <summary>Tests' servers and CA (see <see cref="Images.Registry.TestNetwork"/>); never set by a user.</summary>
    internal Images.Registry.TestNetwork? TestNetwork { get; init; }

    /// <summary>rkt's default <c>--system-config</c>.</summary>
    public const string DefaultSystemConfig = "/usr/lib/rkt";

    /// <summary>rkt's trusted keys under <see cref="SystemConfig"/> and <see cref="LocalConfig"/>.</summary>
    public Images.Trust.TrustedKeyStore TrustedKeys => new(SystemConfig, LocalConfig);

    /// <summary>How key review talks to the user.</summary>
    public Images.Trust.KeyReviewConsole KeyReview => new(Out, Err, Terminal);

    /// <summary>The options of every remote fetch: the global and per-image <c>--insecure-options</c>,
    /// rkt's credentials (<c>auth.d/</c> of both configuration directories).</summary>
    public Images.Registry.RegistryOptions RemoteOptions(Images.Registry.InsecureOptions insecure = default) => new()
    {
        Insecure = Insecure | insecure, Auth = Images.Registry.AuthConfig.Load(SystemConfig, LocalConfig), Test = TestNetwork,
    };
}

using Rkt.Kvm.Stage0.Commands;
using Rkt.Kvm.Stage0.Commands.Pods;
using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Store;
using Serilog;
using Serilog.Events;

namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>
/// The rkt-kvm command line: global flags (--dir, --local-config, --debug), verb dispatch, logging set-up, and
/// rkt's error convention: one line on stderr and exit status 254.
/// </summary>
public static class CommandTable
{
    public const int ExitError = 254;

    public static readonly FlagSpec[] GlobalFlags =
    [
        new("dir", "data directory (image store, trees)", Default: ImageStore.DefaultDataDir),
        new("local-config", "local configuration directory (net.d/, auth.d/, trustedkeys/)", Default: CommandContext.DefaultLocalConfig),
        new("system-config", "system configuration directory (auth.d/, trustedkeys/), read only", Default: CommandContext.DefaultSystemConfig),
        new("trust-keys-from-https", "trust keys fetched over https without fingerprint review", IsBool: true),
        new("insecure-options", "security checks to turn off, as rkt names them: image (needed for docker:// images), http, tls, all-fetch, …", Default: ""),
        new("debug", "log debug output to stderr", IsBool: true),
        new("help", "show usage", IsBool: true),
    ];

    /// <summary>Every verb, as rkt names them.</summary>
    public static IReadOnlyList<ICommand> Commands { get; } =
    [
        new RunCommand(sandbox: false),
        new ListCommand(),
        new StatusCommand(),
        new StopCommand(),
        new RmCommand(),
        new GcCommand(),
        new EnterCommand("enter", "Run a command in an app of a running pod"),
        new AttachCommand(),
        new ConsoleCommand(),
        new PodCatManifestCommand(),
        new CommandGroup("app", "Operate on the apps of a pod",
            new RunCommand(sandbox: true),
            new AppAddCommand(),
            new AppStartCommand(),
            new AppStopCommand(),
            new AppRmCommand(),
            new AppListCommand(),
            new AppStatusCommand(),
            new EnterCommand("exec", "Run a command in an app of a running pod")),
        new ImportCommand("fetch", "Fetch an image by name (appc discovery), from a registry (docker://, oci://), or import a local image file", registry: true),
        new TrustCommand(),
        new CommandGroup("image", "Operate on images in the local store",
            new ImportCommand("import", "Import an ACI, OCI image layout (directory or tar) or docker archive"),
            new ListImagesCommand(),
            new RemoveImageCommand(),
            new CatManifestCommand(),
            new ExtractImageCommand(),
            new GcImagesCommand(),
            new BuildBusyboxCommand(),
            new BuildStage1Command()),
    ];

    /// <param name="terminal">stdin, when it and stderr are terminals: where a key's review is asked.</param>
    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr, bool stderrIsTerminal, TextReader? terminal = null) =>
        Run(argv, stdout, stderr, stderrIsTerminal, terminal, testNetwork: null);

    /// <summary>For tests: fetches reach their servers on 127.0.0.1 and trust their CA.</summary>
    internal static int Run(string[] argv, TextWriter stdout, TextWriter stderr, bool stderrIsTerminal, TextReader? terminal, Images.Registry.TestNetwork? testNetwork)
    {
        try
        {
            var (command, rest) = Dispatch(argv);
            var args = GoFlags.Parse(rest, command.RawArguments ? Stage0Flags.Leading : Stage0Flags.Verb, [.. command.Flags, .. GlobalFlags]);
            if (args.Bool("help")) { stdout.WriteLine(UsageOf(command)); return 0; }
            Log.Logger = new LoggerConfiguration()
                .MinimumLevel.Is(args.Bool("debug") ? LogEventLevel.Debug : LogEventLevel.Warning)
                .WriteTo.Console(standardErrorFromLevel: LogEventLevel.Verbose, outputTemplate: "rkt-kvm: {Message:lj}{NewLine}{Exception}")
                .CreateLogger();
            var context = new CommandContext(args.Get("dir")!, stdout, stderr, stderrIsTerminal, args.Get("local-config")!)
            {
                Insecure = Images.Registry.InsecureOptionsParser.Parse(args.Get("insecure-options")),
                SystemConfig = args.Get("system-config")!,
                TrustKeysFromHttps = args.Bool("trust-keys-from-https"),
                Terminal = terminal,
                TestNetwork = testNetwork,
            };
            return command.Run(context, args);
        }
        catch (Exception e) when (e is ImageException or UsageException or Stage1.Stage1Exception or IOException or UnauthorizedAccessException)
        {
            Log.Debug(e, "Failed");
            stderr.WriteLine($"rkt-kvm: {OneLine(e.Message)}");
            return ExitError;
        }
        catch (Exception e)
        {
            // A bug, not a user error: still one line (the stack trace with --debug), still 254.
            Log.Debug(e, "Unexpected failure");
            stderr.WriteLine($"rkt-kvm: internal error: {e.GetType().Name}: {OneLine(e.Message)}");
            return ExitError;
        }
        finally
        {
            Log.CloseAndFlush();
        }
    }

    /// <summary>Finds the verb (and sub-verb) among the arguments; the rest are its arguments.</summary>
    private static (ICommand Command, List<string> Remaining) Dispatch(string[] argv)
    {
        ICommand? command = null;
        var rest = new List<string>();
        for (int i = 0; i < argv.Length; i++)
        {
            var arg = argv[i];
            if (arg.StartsWith('-') && command is null or CommandGroup)
            {
                // Set aside for the verb's parse, with its value when it is "--dir DIR".
                int width = GoFlags.Read(argv, i, GlobalFlags, Stage0Flags.Verb).Width;
                rest.AddRange(argv.AsSpan(i, width));
                i += width - 1;
                continue;
            }
            if (command is null)
                command = Commands.FirstOrDefault(c => c.Name == arg) ?? throw new UsageException($"unknown command \"{arg}\"; commands: {string.Join(", ", Commands.Select(c => c.Name))}");
            else if (command is CommandGroup group)
                command = group.Find(arg) ?? throw new UsageException($"unknown command \"{group.Name} {arg}\"; try: {string.Join(", ", group.Commands.Select(c => c.Name))}");
            else rest.Add(arg);
        }
        return command switch
        {
            null => throw new UsageException($"usage: rkt-kvm [--dir=DIR] [--debug] <{string.Join('|', Commands.Select(c => c.Name))}> ..."),
            CommandGroup g => throw new UsageException($"usage: rkt-kvm {g.Usage}"),
            _ => (command, rest),
        };
    }

    private static string UsageOf(ICommand command) =>
        $"{command.Summary}\nusage: rkt-kvm {command.Usage}\n" + string.Concat(command.Flags.Select(f => $"  --{f.Name}{(f.IsBool ? "" : "=VALUE")}\t{f.Help}\n"));

    private static string OneLine(string message) => message.ReplaceLineEndings(" ");
}

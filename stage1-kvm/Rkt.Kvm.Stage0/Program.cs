using Rkt.Kvm.Images.Confinement;
using Rkt.Kvm.Stage0.CommandLine;
using Serilog;
using Serilog.Events;

// The confined side of an image extraction: rkt-kvm re-executes itself so (ExtractionSandbox); not a user's verb.
if (args.Length > 0 && args[0] == ExtractionContract.Verb)
{
    Log.Logger = new LoggerConfiguration()
        .MinimumLevel.Is(args.Contains("--debug") ? LogEventLevel.Debug : LogEventLevel.Warning)
        .WriteTo.Console(standardErrorFromLevel: LogEventLevel.Verbose, outputTemplate: "rkt-kvm: {Message:lj}{NewLine}{Exception}")
        .CreateLogger();
    try { return ExtractionChild.Run(args[1..]); }
    finally { Log.CloseAndFlush(); }
}

// As rkt, a key's fingerprint review is asked only when both stdin and stderr are terminals.
var terminal = Console.IsInputRedirected || Console.IsErrorRedirected ? null : Console.In;
return CommandTable.Run(args, Console.Out, Console.Error, stderrIsTerminal: !Console.IsErrorRedirected, terminal);

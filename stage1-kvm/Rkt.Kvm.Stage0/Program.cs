using Rkt.Kvm.Stage0.CommandLine;

// As rkt, a key's fingerprint review is asked only when both stdin and stderr are terminals.
var terminal = Console.IsInputRedirected || Console.IsErrorRedirected ? null : Console.In;
return CommandTable.Run(args, Console.Out, Console.Error, stderrIsTerminal: !Console.IsErrorRedirected, terminal);

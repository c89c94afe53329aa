using Rkt.Kvm.Cli.Cli;

return CommandTable.Run(args, Console.Out, Console.Error, stderrIsTerminal: !Console.IsErrorRedirected);

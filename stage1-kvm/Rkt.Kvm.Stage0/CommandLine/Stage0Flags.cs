namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>
/// How rkt-kvm reads its flags: stage1's Go-flag syntax (<see cref="GoFlags"/>), in the dialect of rkt's
/// stage0 (cobra/pflag): flags anywhere among the arguments, unknown flags refused, rkt-kvm's wording.
/// </summary>
public static class Stage0Flags
{
    /// <summary>A verb's command line: <c>rkt-kvm list --full</c> and <c>rkt-kvm status UUID --wait=1m</c> alike.</summary>
    public static GoFlagDialect Verb { get; } = new()
    {
        Interspersed = true,
        Unknown = UnknownFlags.Refuse,
        Error = message => new UsageException(message),
        MissingValueMessage = (_, name) => $"flag --{name} needs a value",
        InvalidBoolMessage = (name, value) => $"flag --{name} takes true or false, not \"{value}\"",
        UnknownFlagMessage = name => $"unknown flag --{name}",
    };

    /// <summary>A verb with its own grammar (<see cref="ICommand.RawArguments"/>): its leading global flags
    /// are read; from the first other argument on, everything is the verb's, as rkt's run disables pflag's
    /// interspersing to read its images and their flags itself.</summary>
    public static GoFlagDialect Leading { get; } = Verb with { Interspersed = false, Unknown = UnknownFlags.EndFlags };

    /// <summary>Exactly <paramref name="count"/> positional arguments, or a usage error.</summary>
    public static IReadOnlyList<string> Expect(this GoFlags args, int count, string usage) =>
        args.Positional.Count == count ? args.Positional : throw new UsageException($"usage: {usage}");
}

/// <summary>A command line the user got wrong; printed as one line, exit 254 like rkt.</summary>
public sealed class UsageException(string message) : Exception(message);

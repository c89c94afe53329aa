namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>A verb whose first argument picks a sub-verb ("image list").</summary>
public sealed class CommandGroup(string name, string summary, params ICommand[] commands) : ICommand
{
    public string Name => name;
    public string Summary => summary;
    public string Usage => $"{name} <{string.Join('|', commands.Select(c => c.Name))}> ...";
    public IReadOnlyList<FlagSpec> Flags => [];
    public IReadOnlyList<ICommand> Commands => commands;

    public int Run(CommandContext context, GoFlags args) => throw new InvalidOperationException("dispatched by CommandTable");

    public ICommand? Find(string verb) => commands.FirstOrDefault(c => c.Name == verb);
}

using Rkt.Kvm.Cli.Cli;
using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Cli.Commands;

/// <summary><c>image import FILE|DIR</c>, and <c>fetch FILE</c> as rkt users type it: prints the
/// image ID on stdout, as rkt fetch does.</summary>
public sealed class ImportCommand(string name, string summary)
    : Command(name, summary, $"{name} [--name=NAME] [--ref=REF] [--allow-devices] [--max-size=SIZE] FILE|DIR")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("name", "image name for an OCI or docker image (default: its repository)"),
        new("ref", "which image of an OCI layout or docker archive: ref name, repo:tag or digest"),
        new("allow-devices", "keep device nodes (refused by default)", IsBool: true),
        new("max-size", "refuse images that expand past this many bytes (K, M, G, T suffixes)", Default: "32G"),
    ];

    public override int Run(CommandContext context, Arguments args)
    {
        var source = args.Expect(1, $"rkt-kvm {Usage}")[0];
        var options = new ImportOptions(args.Get("name"), args.Get("ref"))
        {
            Policy = new() { AllowDevices = args.Bool("allow-devices"), MaxBytes = Sizes.Parse(args.Get("max-size")!, "--max-size") },
        };
        var image = ImportProgress.Run(context, progress => new ImageImporter(context.Store, progress).Import(source, options));
        context.Out.WriteLine(image.Id);
        return 0;
    }
}

using System.Text.Json;
using System.Text.Json.Nodes;
using Rkt.Kvm.Stage0.CommandLine;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary><c>image cat-manifest IMAGE</c>: the appc image manifest, pretty-printed as rkt does.</summary>
public sealed class CatManifestCommand() : Command("cat-manifest",
    "Print the appc image manifest of an image",
    "image cat-manifest [--pretty-print=false] IMAGE")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("pretty-print", "indent the JSON", IsBool: true, Default: "true")];

    public override int Run(CommandContext context, GoFlags args)
    {
        var image = context.Store.Resolve(args.Expect(1, $"rkt-kvm {Usage}")[0]);
        var node = JsonNode.Parse(context.Store.ReadManifest(image));
        context.Out.WriteLine(node!.ToJsonString(new JsonSerializerOptions { WriteIndented = args.Bool("pretty-print") }));
        return 0;
    }
}

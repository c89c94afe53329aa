using System.Text.Json;
using System.Text.Json.Nodes;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary><c>cat-manifest UUID</c>: the pod manifest, pretty-printed.</summary>
public sealed class PodCatManifestCommand() : Command("cat-manifest", "Print a pod's manifest", "cat-manifest UUID")
{
    public override int Run(CommandContext context, GoFlags args)
    {
        var pod = new PodStore(context.DataDir).Find(args.Expect(1, $"rkt-kvm {Usage}")[0]);
        var json = JsonNode.Parse(File.ReadAllBytes(pod.Directory.Manifest));
        context.Out.WriteLine(json!.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }
}

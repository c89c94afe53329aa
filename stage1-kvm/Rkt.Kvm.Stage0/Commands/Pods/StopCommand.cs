using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary><c>stop [--force] UUID…</c>: asks stage1 to shut each pod down and returns (as rkt,
/// without waiting); prints each UUID quoted.</summary>
public sealed class StopCommand() : Command("stop", "Stop running pods", "stop [--force] UUID...")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("force", "kill the pod's VM at once instead of stopping its apps", IsBool: true)];

    public override int Run(CommandContext context, GoFlags args) => EachPod.Run(context, args, Usage, (_, pod) =>
    {
        if (pod.State != "running")
        {
            context.Out.WriteLine($"pod \"{pod.Uuid}\" is already stopped");
            return null;
        }
        int rc = Stage1Invoker.Run(pod.Directory, "stop", args.Bool("force") ? ["--force", pod.Uuid] : [pod.Uuid]);
        if (rc != 0) return $"stopping pod \"{pod.Uuid}\" failed (stage1 stop exited {rc})";
        context.Out.WriteLine($"\"{pod.Uuid}\"");
        return null;
    });
}

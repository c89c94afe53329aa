using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary>The verbs that take several pods (stop, rm), as rkt does them: each UUID in turn,
/// a failure reported on its own line without stopping the others, 254 if any failed.</summary>
internal static class EachPod
{
    /// <summary><paramref name="act"/> returns an error line for the pod, or null when it succeeded.</summary>
    public static int Run(CommandContext context, GoFlags args, string usage, Func<PodStore, PodRef, string?> act)
    {
        if (args.Positional.Count == 0) throw new UsageException($"usage: rkt-kvm {usage}");
        var store = new PodStore(context.DataDir);
        int status = 0;
        foreach (var uuid in args.Positional)
        {
            if (act(store, store.Find(uuid)) is { } error)
            {
                context.Err.WriteLine($"rkt-kvm: {error}");
                status = CommandTable.ExitError;
            }
        }
        return status;
    }
}

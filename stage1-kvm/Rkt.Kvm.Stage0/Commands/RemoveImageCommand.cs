using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Images;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary><c>image rm IMAGE...</c>: removes each image, its tree and blobs no other image uses.</summary>
public sealed class RemoveImageCommand() : Command("rm",
    "Remove one or more images from the local store",
    "image rm IMAGE...")
{

    public override int Run(CommandContext context, GoFlags args)
    {
        if (args.Positional.Count == 0) throw new UsageException($"usage: rkt-kvm {Usage}");
        int failed = 0;
        var treesInUse = new PodStore(context.DataDir).TreesInUse();
        foreach (var name in args.Positional)
        {
            try
            {
                var image = context.Store.Resolve(name);
                context.Store.Remove(image, treesInUse);
                context.Out.WriteLine($"successfully removed image \"{image.Id}\"");
            }
            catch (ImageException e)
            {
                context.Err.WriteLine($"rkt-kvm: {e.Message}");
                failed++;
            }
        }
        return failed == 0 ? 0 : CommandTable.ExitError;
    }
}

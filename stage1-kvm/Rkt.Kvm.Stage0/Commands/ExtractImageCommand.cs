using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary><c>image extract IMAGE DIR</c>: renders the image (once, into the tree store) and
/// gives DIR its <c>manifest</c> and <c>rootfs/</c>, as hardlinks to the cached tree unless --copy.</summary>
public sealed class ExtractImageCommand() : Command("extract",
    "Render an image into a directory (manifest and rootfs/)",
    "image extract [--rootfs-only] [--overwrite] [--copy] IMAGE DIR")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("rootfs-only", "put the root filesystem itself in DIR, without the manifest", IsBool: true),
        new("overwrite", "replace DIR if it exists", IsBool: true),
        new("copy", "copy files instead of hardlinking them to the tree store (for a tree you will modify)", IsBool: true),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        var positional = args.Expect(2, $"rkt-kvm {Usage}");
        var image = context.Store.Resolve(positional[0]);
        var target = positional[1];
        if (args.Bool("overwrite") && Directory.Exists(target)) Directory.Delete(target, recursive: true);
        var mode = args.Bool("copy") ? ExportMode.Copy : ExportMode.Hardlink;
        new TreeStore(context.Store).Export(image, target, mode, args.Bool("rootfs-only"));
        return 0;
    }
}

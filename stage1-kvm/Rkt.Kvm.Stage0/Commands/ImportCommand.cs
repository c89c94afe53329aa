using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary><c>image import FILE|DIR</c>, and <c>fetch</c> as rkt users type it: a file, or (with
/// <paramref name="registry"/>) a <c>docker://</c> or <c>oci://</c> reference fetched from its
/// registry, or an appc name (<c>example.com/app:v1</c>) found by discovery and verified. Prints
/// the image ID on stdout, as rkt fetch does.</summary>
public sealed class ImportCommand(string name, string summary, bool registry = false)
    : Command(name, summary, registry
        ? $"{name} [--insecure-options=image[,http,tls]] [--pull-policy=never|new|update] [--quiet] [--signature=FILE] [--name=NAME] [--ref=REF] [--allow-devices] [--max-size=SIZE] NAME[:VERSION]|docker://[REGISTRY[:PORT]/]REPO[:TAG|@DIGEST]|https://HOST/PATH.aci|FILE|DIR"
        : $"{name} [--name=NAME] [--ref=REF] [--allow-devices] [--max-size=SIZE] FILE|DIR")
{
    private static readonly FlagSpec[] ImportFlags =
    [
        new("name", "image name for an OCI or docker image (default: its repository)"),
        new("ref", "which image of an OCI layout or docker archive: ref name, repo:tag or digest"),
        new("allow-devices", "keep device nodes (refused by default)", IsBool: true),
        new("max-size", "refuse images that expand past this many bytes (K, M, G, T suffixes)", Default: "32G"),
    ];

    private static readonly FlagSpec[] FetchFlags =
    [
        // rkt's fetch default: always ask the registry (layers already in the store are still not downloaded).
        new("pull-policy", "never: the store only; new: fetch what the store lacks; update: ask the registry again", Default: "update"),
        new("quiet", "print only the image ID", IsBool: true),
        new("signature", "local signature file of the image (default: the file or URL with .aci.asc)"),
    ];

    public override IReadOnlyList<FlagSpec> Flags { get; } = registry ? [.. ImportFlags, .. FetchFlags] : ImportFlags;

    public override int Run(CommandContext context, GoFlags args)
    {
        var source = args.Expect(1, $"rkt-kvm {Usage}")[0];
        var options = new ImportOptions(args.Get("name"), args.Get("ref"))
        {
            Policy = new() { AllowDevices = args.Bool("allow-devices"), MaxBytes = Sizes.Parse(args.Get("max-size")!, "--max-size") },
        };
        ImageRecord image;
        if (registry)
        {
            // As rkt tells them apart: a registry reference, a URL, an existing file or directory, else an image name to discover.
            bool remote = ImageReference.IsRegistryReference(source) || source.Contains("://", StringComparison.Ordinal) || RegistryImages.IsAppcName(source, out _);
            if (remote && (options.Name is not null || options.Reference is not null))
                throw new UsageException("--name and --ref apply to files; a remote image is named by its reference");
            image = RegistryImages.Find(context, source, InsecureOptions.None, PullPolicyParser.Parse(args.Get("pull-policy"), PullPolicy.Update),
                args.Bool("quiet"), options, args.Get("signature"));
        }
        else if (ImageReference.IsRegistryReference(source) || RegistryImages.IsAppcName(source, out _))
            throw new UsageException($"{Name} takes files and directories; fetch {source} with `rkt-kvm fetch`");
        else if (args.Bool("quiet")) image = new ImageImporter(context.Store).Import(source, options);
        else image = ImportProgress.Run(context, progress => new ImageImporter(context.Store, progress).Import(source, options));
        context.Out.WriteLine(image.Id);
        return 0;
    }
}

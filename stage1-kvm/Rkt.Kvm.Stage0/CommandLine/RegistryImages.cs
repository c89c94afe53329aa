using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Appc;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>
/// Turns an image argument into a stored image for every verb that takes one (<c>fetch</c>,
/// <c>run</c>, <c>app add</c>), as rkt tells them apart: a <c>docker://</c> or <c>oci://</c>
/// reference is fetched from its registry; anything else is looked for in the store (by ID or
/// name) unless the pull policy is <c>update</c>, then, if it is an appc name
/// (<c>example.com/app:v1</c>), found by meta discovery, its signature checked against the trusted
/// keys, and imported.
/// </summary>
public static class RegistryImages
{
    public static ImageRecord Find(CommandContext context, string image, InsecureOptions insecure, PullPolicy policy, bool quiet = false,
        ImportOptions? import = null)
    {
        import ??= new ImportOptions();
        if (ImageReference.IsRegistryReference(image))
        {
            var reference = ImageReference.Parse(image);
            return WithProgress(context, quiet, progress => new RegistryFetcher(context.Store, context.RemoteOptions(insecure), progress).Fetch(reference, policy, import));
        }
        if (policy != PullPolicy.Update && context.Store.TryResolve(image) is { } stored) return stored;
        if (!IsAppcName(image, out var app)) return context.Store.Resolve(image);
        var fetcher = (IImportProgress? progress) => new AppcFetcher(context.Store, context.TrustedKeys, context.RemoteOptions(insecure), context.KeyReview, progress)
        {
            TrustKeysFromHttps = context.TrustKeysFromHttps,
        };
        try { return WithProgress(context, quiet, progress => fetcher(progress).Fetch(app, policy, import)); }
        // For run and app add: the image was looked for in the store too, so say so.
        catch (DiscoveryException e) when (policy != PullPolicy.Update)
        {
            throw new ImageException($"no image \"{image}\" in the store, and fetching it failed: {e.Message}", e);
        }
    }

    /// <summary>
    /// rkt's guess between an appc name and a path (guessAppcOrPath): an existing file, an
    /// absolute path, anything with "./" or ending ".aci" is a path; an image ID or a URL is never a name.
    /// </summary>
    public static bool IsAppcName(string image, out AppImageName app)
    {
        app = null!;
        if (image.Contains("://", StringComparison.Ordinal) || image.StartsWith("sha512-", StringComparison.Ordinal)) return false;
        if (Path.IsPathRooted(image) || File.Exists(image) || Directory.Exists(image)) return false;
        if (!image.Contains(':') && (image.Contains("./", StringComparison.Ordinal) || image.EndsWith(".aci", StringComparison.Ordinal))) return false;
        return AppImageName.TryParse(image, out app, out _);
    }

    private static ImageRecord WithProgress(CommandContext context, bool quiet, Func<IImportProgress?, ImageRecord> fetch) =>
        quiet ? fetch(null) : ImportProgress.Run(context, progress => fetch(progress));
}

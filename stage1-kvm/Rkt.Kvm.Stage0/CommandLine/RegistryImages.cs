using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Appc;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>
/// Turns an image argument into a stored image for every verb that takes one (<c>fetch</c>,
/// <c>run</c>, <c>app add</c>), as rkt tells them apart (guessImageType): a <c>docker://</c> or
/// <c>oci://</c> reference is fetched from its registry; an http(s) URL (or <c>file://</c>) and an
/// existing file are ACIs whose signature is checked; anything else is looked for in the store
/// (by ID or name) unless the pull policy is <c>update</c>, then, if it is an appc name
/// (<c>example.com/app:v1</c>), found by meta discovery, its signature checked against the
/// trusted keys, and imported. appc images come with their dependencies, as rkt fetches them.
/// </summary>
public static class RegistryImages
{
    /// <param name="signature">rkt's <c>--signature</c>: a local signature file for a file or URL.</param>
    public static ImageRecord Find(CommandContext context, string image, InsecureOptions insecure, PullPolicy policy, bool quiet = false,
        ImportOptions? import = null, string? signature = null)
    {
        import ??= new ImportOptions();
        if (ImageReference.IsRegistryReference(image))
        {
            var reference = ImageReference.Parse(image);
            return WithProgress(context, quiet, progress => new RegistryFetcher(context.Store, context.RemoteOptions(insecure), progress).Fetch(reference, policy, import));
        }
        var fetcher = (IImportProgress? progress) => new AppcFetcher(context.Store, context.TrustedKeys, context.RemoteOptions(insecure), context.KeyReview, progress)
        {
            TrustKeysFromHttps = context.TrustKeysFromHttps,
        };
        if (image.Contains("://", StringComparison.Ordinal))
        {
            if (!Uri.TryCreate(image, UriKind.Absolute, out var url)) throw new ImageException($"\"{image}\" is not a valid URL");
            if (url.Scheme == "file") image = url.LocalPath;
            else return WithProgress(context, quiet, progress => fetcher(progress).FetchUrl(url, policy, import, signature));
        }
        bool named = IsAppcName(image, out var app);
        if (!named && (File.Exists(image) || Directory.Exists(image)))
        {
            if (File.Exists(image) && ImageImporter.IsAci(image))
                return WithProgress(context, quiet, progress => fetcher(progress).FetchFile(image, signature, policy, import));
            // As docker images: an OCI layout or docker archive carries no signature rkt could check.
            if (!(context.Insecure | insecure).HasFlag(InsecureOptions.Image))
                throw new ImageException($"{image} is not an ACI, and signature verification for OCI and docker images is not supported (try --insecure-options=image, or `rkt-kvm image import`)");
            return WithProgress(context, quiet, progress => new ImageImporter(context.Store, progress).Import(image, import));
        }
        if (signature is not null) throw new ImageException("--signature applies to image files and URLs; a name's signature is found by discovery");
        if (policy != PullPolicy.Update && context.Store.TryResolve(image) is { } stored) return stored;
        if (!named) return context.Store.Resolve(image);
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

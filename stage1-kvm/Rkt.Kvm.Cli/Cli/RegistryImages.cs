using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Cli.Cli;

/// <summary>
/// Turns an image argument into a stored image for every verb that takes one (<c>fetch</c>,
/// <c>run</c>, <c>app add</c>): a <c>docker://</c> or <c>oci://</c> reference is fetched from its
/// registry as the pull policy says, with rkt's credentials (<c>auth.d/</c> under the system
/// configuration, then <c>--local-config</c>); anything else is looked up in the store.
/// </summary>
public static class RegistryImages
{
    /// <summary>rkt's default <c>--system-config</c>.</summary>
    public const string SystemConfig = "/usr/lib/rkt";

    public static ImageRecord Find(CommandContext context, string image, InsecureOptions insecure, PullPolicy policy, bool quiet = false,
        ImportOptions? import = null)
    {
        if (!ImageReference.IsRegistryReference(image)) return context.Store.Resolve(image);
        var reference = ImageReference.Parse(image);
        var options = new RegistryOptions { Insecure = context.Insecure | insecure, Auth = DockerAuthConfig.Load(SystemConfig, context.LocalConfig) };
        import ??= new ImportOptions();
        if (quiet) return new RegistryFetcher(context.Store, options).Fetch(reference, policy, import);
        return ImportProgress.Run(context, progress => new RegistryFetcher(context.Store, options, progress).Fetch(reference, policy, import));
    }
}

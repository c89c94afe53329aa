using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Confinement;
using Rkt.Kvm.Images.Native;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Images.Store;
using Serilog;

namespace Rkt.Kvm.Images.Trees;

/// <summary>How a rendered tree reaches a pod's directory.</summary>
public enum ExportMode
{
    /// <summary>A farm of hardlinks to the cached tree (directories are made anew): tens of
    /// times faster than extracting, and no extra space, but files share inodes with the cache,
    /// so the result must be used read-only (the VM gets app rootfs read-only) or via overlay.</summary>
    Hardlink,

    /// <summary>An independent copy of every file (hardlinks within the image kept).</summary>
    Copy,
}

/// <summary>
/// rkt's tree store: each image is rendered once into <c>tree/ID/rootfs</c> (plus its
/// <c>manifest</c>), with modes, owners, times, links, device nodes, FIFOs and xattrs; pods
/// then get it through <see cref="Export"/>. Rendering goes to a scratch directory renamed into
/// place, under a per-image lock, so concurrent pods render an image once and never see half.
/// </summary>
public sealed class TreeStore(ImageStore store)
{
    internal const string TmpPrefix = "tmp-";
    private const string DoneMarker = ".rendered", ListingFile = "entries";
    // Resolved per use, not cached: the CLI configures Serilog after these types may be loaded.
    private static ILogger Log => Serilog.Log.ForContext<TreeStore>();

    public string TreePath(string id) => Path.Join(store.TreeDir, id);

    public bool IsCached(string id) => File.Exists(Path.Join(TreePath(id), DoneMarker));

    /// <summary>Renders the image into the cache if it is not there; returns its tree directory
    /// (holding <c>manifest</c> and <c>rootfs/</c>).</summary>
    public string Render(ImageRecord image)
    {
        using var storeLock = store.Lock(exclusive: false); // blobs stay while we read them
        Directory.CreateDirectory(store.TreeDir);
        using var treeLock = FileLock.Exclusive(TreePath(image.Id) + ".lock");
        var tree = TreePath(image.Id);
        if (IsCached(image.Id)) return tree;
        if (Directory.Exists(tree)) Directory.Delete(tree, recursive: true); // a render that died

        using var tmp = TempArea.Create(store.TreeDir, TmpPrefix);
        var rootfs = Path.Join(tmp.Path, "rootfs");
        Directory.CreateDirectory(rootfs);
        var (plan, blobs) = image.Format == "aci" && AciRenderList.Build(store, image) is { IsPlain: false } list
            ? WithDependencies(list)
            : (new ExtractionPlan
            {
                Archives = [.. image.Blobs.Select((blob, i) => new PlannedArchive(image.Format == "aci" ? ArchiveLayout.Aci : ArchiveLayout.Layer, i, What(image, i)))],
                AllowDevices = image.AllowDevices,
            }, image.Blobs.Select(store.BlobPath).ToList());
        PlannedExtraction.Run(store.Sandbox, plan, rootfs, blobs);
        TreeListing.Write(Path.Join(tmp.Path, ListingFile), TreeListing.Scan(rootfs));
        File.Copy(store.ManifestPath(image.Id), Path.Join(tmp.Path, "manifest"));
        File.WriteAllText(Path.Join(tmp.Path, DoneMarker), image.Id + "\n");
        Directory.Move(tmp.Path, tree);
        Log.Debug("Rendered {Image} into {Tree}", image.DisplayName, tree);
        return tree;
    }

    private static string What(ImageRecord image, int blob) => $"blob {image.Blobs[blob]} of {image.DisplayName}";

    /// <summary>An ACI and its dependencies, as appc's acirenderer renders them (see
    /// <see cref="AciRenderList"/>): each image's archive in list order, each path from the first
    /// image that has it. Devices are allowed where the image that brings them was imported with
    /// them (an import without --allow-devices refuses them).</summary>
    private (ExtractionPlan, List<string>) WithDependencies(AciRenderList list)
    {
        Log.Debug("Rendering {Image} with {Count} dependencies", list.Images[0].Record.DisplayName, list.Images.Count - 1);
        var plan = new ExtractionPlan
        {
            Archives = [.. list.Images.Select((image, i) => new PlannedArchive(ArchiveLayout.Aci, i, What(image.Record, 0), AciImage: i))],
            AllowDevices = list.Images.Any(i => i.Record.AllowDevices),
            AciLayers = list.Layers,
        };
        return (plan, list.Images.Select(i => store.BlobPath(i.Record.Blobs[0])).ToList());
    }

    /// <summary>
    /// Gives <paramref name="target"/> (absent or empty) the image's rendered tree, rendering it
    /// first if needed: <c>manifest</c> and <c>rootfs/</c>, or the rootfs alone.
    /// </summary>
    public void Export(ImageRecord image, string target, ExportMode mode, bool rootfsOnly)
    {
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new ImageException($"{target} is not empty");
        var tree = Render(image);
        using (store.Lock(exclusive: false))
        {
            var rootfsTarget = rootfsOnly ? target : Path.Join(target, "rootfs");
            Directory.CreateDirectory(target);
            if (!rootfsOnly) File.Copy(Path.Join(tree, "manifest"), Path.Join(target, "manifest"));
            var rootfs = Path.Join(tree, "rootfs");
            var entries = TreeListing.Read(Path.Join(tree, ListingFile)) ?? TreeListing.Scan(rootfs);
            new TreeCopier(mode).Copy(entries, rootfs, rootfsTarget);
        }
        store.MarkUsed(image.Id, DateTimeOffset.UtcNow);
    }

    internal IEnumerable<string> CachedIds() =>
        Directory.Exists(store.TreeDir)
            ? Directory.EnumerateDirectories(store.TreeDir).Select(p => Path.GetFileName(p)).Where(n => n.StartsWith("sha512-", StringComparison.Ordinal))
            : [];

    internal void DeleteTree(string id)
    {
        if (!Directory.Exists(store.TreeDir)) return;
        var path = TreePath(id);
        using var _ = FileLock.Exclusive(path + ".lock");
        if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        File.Delete(path + ".lock");
    }
}

using System.Formats.Tar;
using Rkt.Kvm.Images.Formats.Appc;
using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Images.Trees;

/// <summary>One image of a rendered ACI: <see cref="Level"/> 0 is the image itself, 1 its
/// dependencies, 2 theirs.</summary>
internal sealed record RenderImage(ImageRecord Record, ManifestSummary Manifest, int Level);

/// <summary>
/// How an ACI with dependencies is rendered, as appc's acirenderer does it (rkt's tree store
/// uses it):
/// <list type="bullet">
/// <item>The images form a flat list, the image first, each image followed by its dependencies
/// (the last one listed first) and theirs: for A depending on B then C, and C on D, the list is
/// A, C, D, B. A dependency is found in the store by its <c>imageID</c>, else by name and labels
/// (the latest import).</item>
/// <item>A path comes from the first image in the list that has it: the image's own files are on
/// top, then its dependencies', the last listed first. Nothing is taken below a path an earlier
/// image made something other than a directory.</item>
/// <item>An image's <c>pathWhitelist</c>, when not empty, keeps only the listed files (not
/// directories) of that image, and only the listed paths (directories too) of every image below
/// it; the whitelist of the highest image of a branch that has one wins.</item>
/// <item>The rendered image's manifest is the image's own.</item>
/// </list>
/// An image that appears again below itself is a cycle, refused.
/// </summary>
internal sealed class AciRenderList
{
    /// <summary>Images in one rendered tree: past this, a dependency graph is hostile.</summary>
    public const int MaxImages = 256;

    private AciRenderList(List<RenderImage> images) => Images = images;

    public IReadOnlyList<RenderImage> Images { get; }

    /// <summary>Whether rendering needs more than the image's own archive as it is.</summary>
    public bool IsPlain => Images.Count == 1 && Images[0].Manifest.PathWhitelist.Count == 0;

    public static AciRenderList Build(ImageStore store, ImageRecord top)
    {
        var stored = store.List();
        var list = new LinkedList<RenderImage>();
        list.AddFirst(new RenderImage(top, Manifest(store, top), 0));
        for (var node = list.First; node is not null; node = node.Next)
        {
            var image = node.Value;
            foreach (var dep in image.Manifest.Dependencies)
            {
                var record = Resolve(stored, dep, image.Record);
                var ancestors = Ancestors(node).Prepend(node.Value).ToList();
                if (ancestors.FindIndex(a => a.Record.Id == record.Id) is var at and >= 0)
                    throw new ImageException("dependency cycle: " + string.Join(" → ",
                        ancestors.Take(at + 1).Reverse().Select(a => a.Record.DisplayName).Append(record.DisplayName)));
                list.AddAfter(node, new RenderImage(record, Manifest(store, record), image.Level + 1));
                if (list.Count > MaxImages) throw new ImageException($"{top.DisplayName} renders more than {MaxImages} images with its dependencies");
            }
        }
        return new AciRenderList([.. list]);
    }

    /// <summary>What the entry filters need of each image, in list order: its level and pathWhitelist.</summary>
    public IReadOnlyList<AciLayer> Layers => [.. Images.Select(i => new AciLayer(i.Level, i.Manifest.PathWhitelist))];

    /// <summary>The images above <paramref name="node"/> in its branch, nearest first.</summary>
    private static IEnumerable<RenderImage> Ancestors(LinkedListNode<RenderImage> node)
    {
        int level = node.Value.Level;
        for (var up = node.Previous; up is not null && level > 0; up = up.Previous)
        {
            if (up.Value.Level >= level) continue;
            level = up.Value.Level;
            yield return up.Value;
        }
    }

    private static ManifestSummary Manifest(ImageStore store, ImageRecord record) =>
        ManifestSummary.Parse(store.ReadManifest(record), record.DisplayName);

    private static ImageRecord Resolve(IReadOnlyList<ImageRecord> stored, AciDependency dep, ImageRecord dependent)
    {
        var found = dep.ImageId is { } id
            ? stored.FirstOrDefault(i => i.Id.StartsWith(id, StringComparison.Ordinal))
            : stored.Where(i => i.Name == dep.ImageName && dep.Labels.All(l => i.Labels.TryGetValue(l.Key, out var v) && v == l.Value)).MaxBy(i => i.ImportTime);
        if (found is null)
            throw new ImageException($"{dependent.DisplayName} depends on {dep}{(dep.ImageId is { } i ? $" ({i[..19]}…)" : "")}, which is not in the store: fetch it with `rkt-kvm fetch {dep}`");
        if (found.Format != "aci") throw new ImageException($"{dependent.DisplayName} depends on {dep}, which is not an ACI ({found.Format})");
        if (dep.Size is { } size && size != found.Size)
            throw new ImageException($"{dependent.DisplayName} depends on {dep} of {size} bytes, but the stored one is {found.Size} bytes");
        return found;
    }
}

/// <summary>One image of an ACI render list as its entry filter sees it (see <see cref="AciRenderList"/>).</summary>
public sealed record AciLayer(int Level, IReadOnlyList<string> PathWhitelist);

/// <summary>
/// The entry filters of an ACI rendered with its dependencies (the rules of <see cref="AciRenderList"/>),
/// from each image's level and whitelist only, so a confined extraction can rebuild them. One
/// instance per render: it remembers which paths earlier images provided.
/// </summary>
internal sealed class AciEntryFilters(IReadOnlyList<AciLayer> layers)
{
    private readonly Dictionary<string, bool> _provided = new(StringComparer.Ordinal); // path → is a directory

    /// <summary>The entry filter for image <paramref name="index"/> of the list.</summary>
    public Func<string, TarEntryType, bool> Filter(int index)
    {
        var image = layers[index];
        var own = Whitelist(image);
        // The highest image above this one, in its branch, that has a whitelist.
        HashSet<string>? upper = null;
        int level = image.Level;
        for (int i = index - 1; i >= 0; i--)
        {
            if (layers[i].Level >= level) continue;
            level = layers[i].Level;
            if (Whitelist(layers[i]) is { } w) upper = w;
        }
        return (path, type) =>
        {
            if (path.Length == 0) return true; // the rootfs itself
            bool directory = type == TarEntryType.Directory;
            if (!directory && own is not null && !own.Contains(path)) return false;
            if (upper is not null && !upper.Contains(path)) return false;
            if (_provided.ContainsKey(path)) return false;
            for (var parent = Archive.EntryPath.Parent(path); parent.Length > 0; parent = Archive.EntryPath.Parent(parent))
                if (_provided.TryGetValue(parent, out var isDirectory) && !isDirectory) return false;
            _provided[path] = directory;
            return true;
        };
    }

    private static HashSet<string>? Whitelist(AciLayer layer) =>
        layer.PathWhitelist.Count == 0 ? null : new HashSet<string>(layer.PathWhitelist, StringComparer.Ordinal);
}

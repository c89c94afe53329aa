using Rkt.Kvm.Images.Formats.Appc;
using Rkt.Kvm.Images.Store;

namespace Rkt.Kvm.Images.Appc;

/// <summary>
/// rkt's fetchImageDeps: every image an appc image depends on, and theirs, found in the store
/// (by <c>imageID</c>, or by name and labels as the pull policy allows) or fetched by name (meta
/// discovery, signature, as any name fetch), among the images this fetch already prepared first.
/// A dependency must be the image its dependent asks for: its ID and size (the length of the tar
/// the ID hashes), when given, must match. A cycle, a mismatch, or a dependency that cannot be
/// found is one error, raised before anything is committed.
/// </summary>
internal sealed class DependencyFetcher(ImageStore store, Func<AppImageName, Found> fetchByName)
{
    /// <summary>Images in one dependency graph, the top one included: far more than any real image has.</summary>
    public const int MaxImages = 64;

    private readonly Dictionary<string, Found> _known = new(StringComparer.Ordinal);
    private readonly List<PreparedImport> _owned = [];
    private readonly List<PreparedImport> _order = [];

    /// <summary>The dependencies of <paramref name="top"/> this fetch prepared, in the order to
    /// commit them (each after its own dependencies). The caller commits or disposes them.</summary>
    public List<PreparedImport> Resolve(Found top)
    {
        _known[top.Record.Id] = top;
        try { Walk(top, [top]); }
        catch
        {
            foreach (var p in _owned) p.Dispose();
            throw;
        }
        return _order;
    }

    private void Walk(Found image, List<Found> chain)
    {
        foreach (var dep in image.Manifest.Dependencies)
        {
            var found = Find(dep, image);
            if (chain.FindIndex(c => c.Record.Id == found.Record.Id) is var at and >= 0)
                throw new ImageException("dependency cycle: " + string.Join(" → ", chain.Skip(at).Append(found).Select(f => f.Record.DisplayName)));
            if (_known.TryGetValue(found.Record.Id, out var seen) && seen != found) { Forget(found); continue; }
            if (seen is not null) continue; // a diamond: already walked
            if (_known.Count >= MaxImages) throw new ImageException($"{chain[0].Record.DisplayName} has more than {MaxImages - 1} dependencies in all");
            _known[found.Record.Id] = found;
            Walk(found, [.. chain, found]);
            if (found.Pending is not null) _order.Add(found.Pending);
        }
    }

    private Found Find(AciDependency dep, Found dependent)
    {
        Found found;
        try
        {
            found = (dep.ImageId is null ? null : ById(dep.ImageId)) ?? Prepared(dep) ?? Fetch(dep);
        }
        catch (ImageException e)
        {
            throw new ImageException($"dependency {dep} of {dependent.Record.DisplayName}: {e.Message}", e);
        }
        string? mismatch = null;
        if (dep.ImageId is { } id && !dep.MatchesId(found.Record.Id))
            mismatch = $"its image ID is {found.Record.Id[..19]}…, but {dependent.Record.DisplayName} asks for {id[..19]}…";
        else if (dep.Size is { } size && size != found.Record.Size)
            mismatch = $"it is {found.Record.Size} bytes, but {dependent.Record.DisplayName} asks for {size}";
        else if (found.Record.Name != dep.ImageName)
            mismatch = $"the image found is named {found.Record.Name}";
        if (mismatch is null) return found;
        Forget(found);
        throw new ImageException($"dependency {dep} of {dependent.Record.DisplayName}: {mismatch}");
    }

    /// <summary>rkt's ResolveKey: an image ID (or a prefix, as rkt shortens them) the store or this fetch holds.</summary>
    private Found? ById(string id)
    {
        if (_known.Values.FirstOrDefault(f => f.Record.Id.StartsWith(id, StringComparison.Ordinal)) is { } known) return known;
        var stored = store.List().FirstOrDefault(i => i.Id.StartsWith(id, StringComparison.Ordinal));
        return stored is null ? null : new Found(stored, ManifestSummary.Parse(store.ReadManifest(stored), stored.DisplayName), null);
    }

    /// <summary>An image this fetch prepared (not yet in the store) that has the name and labels.</summary>
    private Found? Prepared(AciDependency dep)
    {
        var app = new AppImageName(dep.ImageName, dep.Labels).WithPlatformDefaults();
        return _known.Values.FirstOrDefault(f => f.Pending is not null && f.Record.Name == app.Name && app.MatchesLabels(f.Record.Labels));
    }

    private Found Fetch(AciDependency dep)
    {
        var found = fetchByName(new AppImageName(dep.ImageName, dep.Labels));
        if (found.Pending is not null) _owned.Add(found.Pending);
        return found;
    }

    /// <summary>Drops a prepared image that will not be committed (a duplicate, or refused).</summary>
    private void Forget(Found found)
    {
        if (found.Pending is null || _known.ContainsKey(found.Record.Id) && _known[found.Record.Id] == found) return;
        _owned.Remove(found.Pending);
        found.Pending.Dispose();
    }
}

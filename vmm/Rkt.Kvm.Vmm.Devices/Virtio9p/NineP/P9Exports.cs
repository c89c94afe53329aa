using Rkt.Kvm.Posix;
namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>What the control socket shows of an export.</summary>
public sealed record P9ExportInfo(string Name, string Path, bool ReadOnly, int Fids);

/// <summary>
/// The exports a guest attaches to by aname, and the export-listing root (aname "" or "/") that
/// lists them. Thread-safe: the control socket adds and removes exports while requests run.
/// </summary>
internal sealed class P9Exports : IDisposable
{
    private readonly Dictionary<string, P9Export> _byName = new(StringComparer.Ordinal);

    /// <summary>The read-only root whose entries are the exports (see <see cref="P9Export.ExportListingRoot"/>).</summary>
    public P9Export Listing { get; } = P9Export.ExportListingRoot();

    /// <summary>With <paramref name="root"/> (an open directory, owned from here on, even on failure) the path only names it.</summary>
    public void Add(string name, string hostPath, bool readOnly, FileDescriptor? root = null)
    {
        try
        {
            P9Export.ValidateName(name);
            lock (_byName)
            {
                if (_byName.ContainsKey(name)) throw new ArgumentException($"Export '{name}' already exists.");
                _byName[name] = root is null ? P9Export.Open(name, hostPath, readOnly) : P9Export.FromDirectory(name, hostPath, readOnly, root);
                root = null;
            }
        }
        finally
        {
            root?.Dispose();
        }
    }

    /// <summary>Takes the export out of the table (new attaches and walks no longer find it); the caller closes it.</summary>
    public P9Export Remove(string name)
    {
        lock (_byName)
        {
            return _byName.Remove(name, out var export) ? export : throw new ArgumentException($"No export is named '{name}'.");
        }
    }

    public P9Export? Find(string name)
    {
        lock (_byName) return _byName.GetValueOrDefault(name);
    }

    /// <summary>The exports now, by name.</summary>
    public List<P9Export> Sorted()
    {
        lock (_byName) return [.. _byName.Values.OrderBy(e => e.Name, StringComparer.Ordinal)];
    }

    public P9.Qid ListingQid() => P9.Qid.Of(Listing.Root);

    /// <summary>Stops and closes every export; the caller closed the fids first.</summary>
    public void Dispose()
    {
        lock (_byName)
        {
            foreach (var e in _byName.Values) { e.CloseGate(); e.Root.Dispose(); }
            _byName.Clear();
        }
        Listing.Root.Dispose();
    }
}

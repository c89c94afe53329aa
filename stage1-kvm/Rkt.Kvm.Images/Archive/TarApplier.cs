using System.Formats.Tar;

namespace Rkt.Kvm.Images.Archive;

/// <summary>How entry names map onto the root: an ACI holds <c>manifest</c> and <c>rootfs/…</c>;
/// an OCI/docker layer is the root itself, with whiteout entries; a plain archive (an OCI
/// layout or docker save, tarred) is the root itself, whiteouts being ordinary names there.</summary>
public enum ArchiveLayout { Aci, Layer, Plain }

/// <summary>
/// Applies tar archives (an ACI, or an image's layers in order) to an <see cref="ITreeWriter"/>,
/// deciding for every entry whether it is safe against a <see cref="VirtualTree"/> of everything
/// applied before. Refusals name the entry; nothing is ever written through a symlink or above
/// the root, and OCI whiteouts remove only what lower layers wrote.
/// </summary>
public sealed class TarApplier(ITreeWriter writer, ExtractionPolicy policy)
{
    private const string WhiteoutPrefix = ".wh.", OpaqueWhiteout = ".wh..wh..opq";
    private const int MaxManifestBytes = 1 << 20;
    /// <summary>Parents an archive does not list are made as GNU tar and containerd make them:
    /// 0755, owned by root, stamped with the time of extraction.</summary>
    private readonly EntryMeta _implicitDirMeta = new((UnixFileMode)Convert.ToInt32("755", 8), 0, 0, DateTimeOffset.UtcNow, []);

    private long _entries;

    public VirtualTree Tree { get; } = new();

    /// <summary>Whether an ACI had its <c>rootfs</c> directory (entries under it count).</summary>
    public bool SawAciRootfs { get; private set; }

    /// <summary>The ACI's <c>manifest</c> bytes, once seen.</summary>
    public byte[]? AciManifest { get; private set; }

    /// <summary>For an ACI rendered with its dependencies: whether an entry (its path relative to
    /// the rootfs, its type) is taken from the archive being applied; null takes every entry.</summary>
    public Func<string, TarEntryType, bool>? Include { get; set; }

    private bool _manifestInArchive;

    public void Apply(Stream tar, ArchiveLayout layout, int layer, string what)
    {
        _manifestInArchive = false;
        using var reader = new TarReader(new MissingEndBlocks(tar), leaveOpen: true);
        while (Next(reader, what) is { } entry)
        {
            if (++_entries > policy.MaxEntries)
                throw new ImageException($"{what} has more than {policy.MaxEntries} entries");
            ApplyEntry(entry, layout, layer);
        }
    }

    /// <summary>Final checks once every archive is applied, then the writer's deferred work.</summary>
    public void Complete()
    {
        Tree.CheckAllSymlinks();
        writer.Complete();
    }

    private static TarEntry? Next(TarReader reader, string what)
    {
        try { return reader.GetNextEntry(copyData: false); }
        // InvalidOperationException: what TarReader throws for a PAX or GNU long-name block whose size field is too large.
        catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException or ArgumentException or OverflowException
                                      or InvalidOperationException)
        {
            throw new ImageException($"{what} is not a valid tar archive (truncated or corrupt): {e.Message}", e);
        }
        catch (NotSupportedException e) // an entry type TarReader cannot read, such as a GNU sparse file
        {
            throw new ImageException($"{what} uses a tar feature that is not supported: {e.Message}", e);
        }
    }

    private void ApplyEntry(TarEntry entry, ArchiveLayout layout, int layer)
    {
        var name = entry.Name;
        if (entry.EntryType == TarEntryType.GlobalExtendedAttributes) return;
        var rel = EntryPath.Normalize(name, name);
        if (layout == ArchiveLayout.Aci)
        {
            if (rel == "manifest") { ReadManifest(entry); return; }
            rel = AciRootfsPath(rel, name);
            SawAciRootfs = true;
            if (Include is not null && !Include(rel, entry.EntryType)) return;
        }
        else if (EntryPath.BaseName(rel).StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
        {
            Whiteout(rel, layer, name);
            return;
        }

        var meta = EntryMeta.From(entry);
        if (rel.Length == 0)
        {
            if (entry.EntryType != TarEntryType.Directory) throw new UnsafeEntryException(name, "the root must be a directory");
            writer.Directory("", meta);
            return;
        }

        Tree.CheckParents(rel, name);
        EnsureParents(rel, layer);
        var node = new Node(NodeKind.File, layer, name);
        switch (entry.EntryType)
        {
            case TarEntryType.Directory:
                if (Tree.TryGet(rel, out var old) && old.Kind != NodeKind.Directory) Replace(rel);
                writer.Directory(rel, meta);
                node = node with { Kind = NodeKind.Directory };
                break;
            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                if (entry.Length > policy.MaxBytes)
                    throw new UnsafeEntryException(name, $"it claims {entry.Length} bytes, past the size limit of {policy.MaxBytes}");
                Replace(rel);
                writer.File(rel, meta, entry.DataStream, entry.Length);
                break;
            case TarEntryType.SymbolicLink:
                var target = entry.LinkName;
                EntryPath.CheckText(target, name, "symlink target");
                if (target.Length == 0) throw new UnsafeEntryException(name, "symlink with an empty target");
                if (Tree.Escapes(EntryPath.Parent(rel), target))
                    throw new UnsafeEntryException(name, $"symlink target \"{target}\" points outside the root");
                Replace(rel);
                writer.Symlink(rel, target, meta);
                node = node with { Kind = NodeKind.Symlink, LinkTarget = target };
                break;
            case TarEntryType.HardLink:
                var existing = HardlinkTarget(entry, layout, rel);
                Replace(rel);
                writer.Hardlink(rel, existing.Path);
                node = node with { Kind = existing.Node.Kind, LinkTarget = existing.Node.LinkTarget };
                break;
            case TarEntryType.CharacterDevice or TarEntryType.BlockDevice:
                // A V7 header has no device numbers, yet TarReader reports the type it names.
                if (entry is not PosixTarEntry device)
                    throw new UnsafeEntryException(name, "device node in a V7 tar header, which cannot give its device numbers");
                if (!policy.AllowDevices)
                    throw new UnsafeEntryException(name, $"device node {device.DeviceMajor}:{device.DeviceMinor} not allowed (import with --allow-devices to keep it)");
                Replace(rel);
                writer.Special(rel, entry.EntryType == TarEntryType.CharacterDevice ? UnixSpecialKind.CharacterDevice : UnixSpecialKind.BlockDevice,
                    meta, device.DeviceMajor, device.DeviceMinor);
                node = node with { Kind = NodeKind.Special };
                break;
            case TarEntryType.Fifo:
                Replace(rel);
                writer.Special(rel, UnixSpecialKind.Fifo, meta, 0, 0);
                node = node with { Kind = NodeKind.Special };
                break;
            default:
                throw new UnsafeEntryException(name, $"unsupported entry type {entry.EntryType}");
        }
        Tree.Set(rel, node);
    }

    private static string AciRootfsPath(string rel, string name) => rel switch
    {
        "rootfs" => "",
        _ when rel.StartsWith("rootfs/", StringComparison.Ordinal) => rel["rootfs/".Length..],
        _ => throw new UnsafeEntryException(name, "an ACI holds only \"manifest\" and \"rootfs/\""),
    };

    private void ReadManifest(TarEntry entry)
    {
        if (_manifestInArchive) throw new UnsafeEntryException(entry.Name, "duplicate manifest");
        _manifestInArchive = true;
        if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile))
            throw new UnsafeEntryException(entry.Name, "the manifest must be a regular file");
        if (entry.Length > MaxManifestBytes) throw new UnsafeEntryException(entry.Name, $"manifest larger than {MaxManifestBytes} bytes");
        if (AciManifest is not null) return; // a dependency's: the rendered image has the upper image's manifest
        var bytes = new byte[entry.Length];
        entry.DataStream?.ReadExactly(bytes);
        AciManifest = bytes;
    }

    private (string Path, Node Node) HardlinkTarget(TarEntry entry, ArchiveLayout layout, string rel)
    {
        var name = entry.Name;
        EntryPath.CheckText(entry.LinkName, name, "hardlink target");
        var target = EntryPath.Normalize(entry.LinkName, name);
        if (layout == ArchiveLayout.Aci) target = AciRootfsPath(target, name);
        if (target == rel || target.Length == 0) throw new UnsafeEntryException(name, "hardlink to itself or to the root");
        Tree.CheckParents(target, name);
        if (!Tree.TryGet(target, out var node))
            throw new UnsafeEntryException(name, $"hardlink target \"{entry.LinkName}\" is not an earlier entry of the image");
        if (node.Kind == NodeKind.Directory) throw new UnsafeEntryException(name, "hardlink to a directory");
        return (target, node);
    }

    /// <summary>OCI whiteouts: ".wh.NAME" hides NAME from lower layers, ".wh..wh..opq" hides all
    /// of its directory's lower-layer content. Neither appears in the result.</summary>
    private void Whiteout(string rel, int layer, string name)
    {
        Tree.CheckParents(rel, name);
        var dir = EntryPath.Parent(rel);
        var baseName = EntryPath.BaseName(rel);
        if (baseName == OpaqueWhiteout)
        {
            foreach (var gone in Tree.RemoveChildrenBelowLayer(dir, layer)) writer.Remove(gone);
            return;
        }
        if (baseName.StartsWith(WhiteoutPrefix + WhiteoutPrefix, StringComparison.Ordinal)) return; // aufs metadata
        if (baseName.Length == WhiteoutPrefix.Length) throw new UnsafeEntryException(name, "whiteout without a name");
        var hidden = EntryPath.Combine(dir, baseName[WhiteoutPrefix.Length..]);
        if (Tree.TryGet(hidden, out var node) && node.Layer < layer)
        {
            Tree.Remove(hidden);
            writer.Remove(hidden);
        }
    }

    private void Replace(string rel)
    {
        if (!Tree.TryGet(rel, out _)) return;
        Tree.Remove(rel);
        writer.Remove(rel);
    }

    private void EnsureParents(string rel, int layer)
    {
        foreach (var dir in EntryPath.Ancestors(rel))
        {
            if (Tree.TryGet(dir, out _)) continue;
            writer.Directory(dir, _implicitDirMeta);
            Tree.Set(dir, new Node(NodeKind.Directory, layer, dir));
        }
    }
}

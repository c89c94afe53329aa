namespace Rkt.Kvm.Images.Archive;

public enum NodeKind { Directory, File, Symlink, Special }

/// <param name="Layer">which layer wrote it: whiteouts only hide what lower layers wrote.</param>
/// <param name="Entry">the archive name that created it, for error messages.</param>
public readonly record struct Node(NodeKind Kind, int Layer, string Entry, string? LinkTarget = null);

/// <summary>
/// What the extraction has produced so far, kept in memory. Every safety decision is taken
/// against this model rather than by asking the filesystem, so the checks are the same whether
/// we write (rendering) or only validate (import), and no check ever follows a symlink on disk.
/// The extraction root always starts empty, so the model and the disk agree.
/// </summary>
public sealed class VirtualTree
{
    private const int MaxSymlinkHops = 40; // Linux's MAXSYMLINKS
    private readonly Dictionary<string, Node> _nodes = new(StringComparer.Ordinal);

    public VirtualTree() => _nodes[""] = new Node(NodeKind.Directory, -1, ".");

    public int Count => _nodes.Count;

    public bool TryGet(string rel, out Node node) => _nodes.TryGetValue(rel, out node);

    public void Set(string rel, Node node) => _nodes[rel] = node;

    /// <summary>Refuses an entry whose parent directories include a symlink or a non-directory:
    /// writing there would go through the link, possibly outside the root.</summary>
    public void CheckParents(string rel, string entry)
    {
        foreach (var dir in EntryPath.Ancestors(rel))
        {
            if (!_nodes.TryGetValue(dir, out var node)) continue;
            if (node.Kind == NodeKind.Symlink)
                throw new UnsafeEntryException(entry, $"it would be written through the symlink \"{dir}\" (-> {node.LinkTarget})");
            if (node.Kind != NodeKind.Directory)
                throw new UnsafeEntryException(entry, $"its parent \"{dir}\" is not a directory");
        }
    }

    /// <summary>Removes a path and, for a directory, everything under it.</summary>
    public void Remove(string rel)
    {
        if (_nodes.Remove(rel, out var node) && node.Kind == NodeKind.Directory) RemoveWhere(rel, _ => true);
    }

    /// <summary>Removes what lower layers wrote under a directory (an opaque whiteout);
    /// returns the top-most removed paths, for the writer to delete.</summary>
    public List<string> RemoveChildrenBelowLayer(string dir, int layer) => RemoveWhere(dir, n => n.Layer < layer);

    private List<string> RemoveWhere(string dir, Func<Node, bool> match)
    {
        var prefix = dir.Length == 0 ? "" : dir + "/";
        var doomed = _nodes.Where(kv => kv.Key.Length > prefix.Length && kv.Key.StartsWith(prefix, StringComparison.Ordinal) && match(kv.Value))
            .Select(kv => kv.Key).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var tops = new List<string>();
        foreach (var path in doomed)
        {
            if (!_nodes.ContainsKey(path)) continue; // already gone with an ancestor
            tops.Add(path);
            _nodes.Remove(path);
            var below = path + "/";
            foreach (var k in _nodes.Keys.Where(k => k.StartsWith(below, StringComparison.Ordinal)).ToList()) _nodes.Remove(k);
        }
        return tops;
    }

    /// <summary>
    /// True when following <paramref name="target"/> from directory <paramref name="fromDir"/>
    /// climbs above the root, following symlinks already in the tree the way the kernel would
    /// (an absolute target starts at the root, as it will inside the pod).
    /// </summary>
    public bool Escapes(string fromDir, string target)
    {
        int hops = 0;
        return Walk(fromDir.Length == 0 ? [] : [.. fromDir.Split('/')], target, ref hops) is null;
    }

    private List<string>? Walk(List<string> stack, string target, ref int hops)
    {
        if (target.StartsWith('/')) stack.Clear();
        foreach (var part in target.Split('/'))
        {
            if (part.Length == 0 || part == ".") continue;
            if (part == "..")
            {
                if (stack.Count == 0) return null;
                stack.RemoveAt(stack.Count - 1);
                continue;
            }
            stack.Add(part);
            if (_nodes.TryGetValue(string.Join('/', stack), out var node) && node.Kind == NodeKind.Symlink)
            {
                if (++hops > MaxSymlinkHops) return null; // a loop: refuse rather than guess
                stack.RemoveAt(stack.Count - 1);
                if (Walk(stack, node.LinkTarget!, ref hops) is not { } resolved) return null;
                stack = resolved;
            }
        }
        return stack;
    }

    /// <summary>Every symlink, checked again once the archive is complete: a later entry can
    /// change what an earlier link resolves through.</summary>
    public void CheckAllSymlinks()
    {
        foreach (var (path, node) in _nodes)
            if (node.Kind == NodeKind.Symlink && Escapes(EntryPath.Parent(path), node.LinkTarget!))
                throw new UnsafeEntryException(node.Entry, $"symlink target \"{node.LinkTarget}\" points outside the root");
    }
}

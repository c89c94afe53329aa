using System.Collections.Concurrent;
using Rkt.Kvm.Images.Native;

namespace Rkt.Kvm.Images.Trees;

/// <summary>
/// Copies a rendered tree, given its <see cref="TreeListing"/>: directories are recreated with
/// their mode, owner and times; every other entry is hardlinked (<see cref="ExportMode.Hardlink"/>)
/// or copied with its metadata, hardlink groups kept (<see cref="ExportMode.Copy"/>). Symlinks
/// are recreated, never followed. (Copy mode does not carry xattrs.)
/// </summary>
internal sealed class TreeCopier(ExportMode mode)
{
    private const uint SetGid = 0x400;
    private static readonly uint Umask = ReadUmask();
    private readonly Dictionary<(ulong Dev, ulong Ino), string> _copiedInodes = [];
    private readonly ConcurrentDictionary<string, bool> _setgidDirs = new(StringComparer.Ordinal);

    public void Copy(IReadOnlyList<TreeEntry> entries, string source, string target)
    {
        string To(TreeEntry e) => e.Path.Length == 0 ? target : Path.Join(target, e.Path);
        // Directories level by level (a level's parents all exist), each level spread over the
        // CPUs: on ext4, mkdir is most of a hardlink export's time and it runs well in parallel.
        foreach (var level in entries.Where(e => e.IsDirectory).GroupBy(e => e.Path.Length == 0 ? 0 : e.Path.Count(c => c == '/') + 1).OrderBy(g => g.Key))
            InParallel(level.ToList(), e => MakeDirectory(To(e), e));
        if (mode == ExportMode.Hardlink)
            InParallel(entries.Where(e => !e.IsDirectory).ToList(), e => Link(Path.Join(source, e.Path), To(e)));
        else
            foreach (var e in entries.Where(e => !e.IsDirectory)) CopyEntry(Path.Join(source, e.Path), To(e));
        // Directory times last: creating children changes them.
        InParallel(entries.Where(e => e.IsDirectory).ToList(), e => Libc.SetTimes(To(e), e.AtimeSec, e.AtimeNsec, e.MtimeSec, e.MtimeNsec));
    }

    /// <summary>
    /// Runs the action over the entries on every CPU, in contiguous ranges (little coordination:
    /// each call is a single system call), or inline for a handful. Fails with the first error
    /// itself rather than an AggregateException, so callers see what a loop would throw.
    /// </summary>
    private static void InParallel(IEnumerable<TreeEntry> entries, Action<TreeEntry> action)
    {
        var items = entries as IReadOnlyList<TreeEntry> ?? entries.ToList();
        if (items.Count < 64)
        {
            foreach (var e in items) action(e);
            return;
        }
        int workers = Environment.ProcessorCount;
        var ranges = Partitioner.Create(0, items.Count, Math.Max(16, items.Count / (workers * 4)));
        try { Parallel.ForEach(ranges, new ParallelOptions { MaxDegreeOfParallelism = workers }, r => { for (int i = r.Item1; i < r.Item2; i++) action(items[i]); }); }
        catch (AggregateException e) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]); }
    }

    /// <summary>mkdir with the final permission bits, then chown/chmod only where mkdir could not
    /// have produced the result already (owner not root, special bits, umask, setgid parent).</summary>
    private void MakeDirectory(string path, TreeEntry e)
    {
        uint perm = e.Mode & 0xFFF;
        if (Libc.mkdir(path, perm & 0x1FF) != 0 && !Directory.Exists(path)) throw Libc.Error("mkdir", path);
        bool inheritsGroup = e.Path.Length > 0 && _setgidDirs.ContainsKey(Parent(e.Path));
        if (Libc.IsRoot && (e.Uid != 0 || e.Gid != 0 || inheritsGroup || e.Path.Length == 0) && Libc.lchown(path, e.Uid, e.Gid) != 0)
            throw Libc.Error("lchown", path);
        if (perm != (perm & 0x1FF & ~Umask) || inheritsGroup || e.Path.Length == 0) File.SetUnixFileMode(path, (UnixFileMode)perm);
        if ((perm & SetGid) != 0) _setgidDirs[e.Path] = true;
    }

    private static string Parent(string rel)
    {
        int slash = rel.LastIndexOf('/');
        return slash < 0 ? "" : rel[..slash];
    }

    private static void Link(string from, string to)
    {
        if (Libc.link(from, to) != 0) throw Libc.Error("link", to);
    }

    private void CopyEntry(string from, string to)
    {
        var st = Libc.LStat(from);
        if (st.Nlink > 1 && _copiedInodes.TryGetValue((st.Dev, st.Ino), out var first))
        {
            Link(first, to);
            return;
        }
        bool isLink = (st.Mode & Libc.S_IFMT) == Libc.S_IFLNK;
        switch (st.Mode & Libc.S_IFMT)
        {
            case Libc.S_IFREG:
                File.Copy(from, to);
                break;
            case Libc.S_IFLNK:
                File.CreateSymbolicLink(to, new FileInfo(from).LinkTarget!);
                break;
            default: // device nodes and FIFOs
                if (Libc.mknod(to, st.Mode, st.Rdev) != 0) throw Libc.Error("mknod", to);
                break;
        }
        if (Libc.IsRoot && Libc.lchown(to, st.Uid, st.Gid) != 0) throw Libc.Error("lchown", to);
        if (!isLink) File.SetUnixFileMode(to, (UnixFileMode)(st.Mode & 0xFFF)); // after chown, which clears setuid
        Libc.SetTimes(to, st.AtimeSec, st.AtimeNsec, st.MtimeSec, st.MtimeNsec);
        if (st.Nlink > 1) _copiedInodes[(st.Dev, st.Ino)] = to;
    }

    /// <summary>The process umask, from /proc (reading it with umask(2) would change it briefly).</summary>
    private static uint ReadUmask()
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Umask:", StringComparison.Ordinal));
        return line is null ? 0x1FF : Convert.ToUInt32(line["Umask:".Length..].Trim(), 8);
    }
}

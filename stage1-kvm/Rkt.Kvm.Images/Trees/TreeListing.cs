using System.IO.Enumeration;
using System.Text;
using Rkt.Kvm.Images.Native;

namespace Rkt.Kvm.Images.Trees;

/// <param name="Path">relative to the tree's root; "" is the root.</param>
/// <param name="IsDirectory">directories carry their metadata; other entries are linked or
/// copied with the metadata their inode has.</param>
internal readonly record struct TreeEntry(string Path, bool IsDirectory, uint Mode, uint Uid, uint Gid,
    long AtimeSec, long AtimeNsec, long MtimeSec, long MtimeNsec);

/// <summary>
/// The list of a rendered tree's entries, parents before children, written once when the tree is
/// rendered. A hardlink export then replays it (mkdir for directories, link for the rest)
/// without listing or stat-ing the cached tree again: half the system calls, for the export
/// that every pod using a cached image pays.
/// </summary>
internal static class TreeListing
{
    private const int Version = 1;

    public static List<TreeEntry> Scan(string root)
    {
        var entries = new List<TreeEntry>();
        ScanDirectory(root, "", entries);
        return entries;
    }

    private static void ScanDirectory(string root, string rel, List<TreeEntry> entries)
    {
        var dir = rel.Length == 0 ? root : Path.Join(root, rel);
        var st = Libc.LStat(dir);
        entries.Add(new TreeEntry(rel, true, st.Mode, st.Uid, st.Gid, st.AtimeSec, st.AtimeNsec, st.MtimeSec, st.MtimeNsec));
        var children = new FileSystemEnumerable<(string Name, bool IsDir)>(dir,
            (ref FileSystemEntry e) => (e.FileName.ToString(), e.IsDirectory && (e.Attributes & FileAttributes.ReparsePoint) == 0),
            new EnumerationOptions { RecurseSubdirectories = false, AttributesToSkip = 0, IgnoreInaccessible = false });
        foreach (var (name, isDir) in children)
        {
            var childRel = rel.Length == 0 ? name : $"{rel}/{name}";
            if (isDir) ScanDirectory(root, childRel, entries);
            else entries.Add(new TreeEntry(childRel, false, 0, 0, 0, 0, 0, 0, 0));
        }
    }

    public static void Write(string file, List<TreeEntry> entries)
    {
        using var w = new BinaryWriter(File.Create(file), Encoding.UTF8);
        w.Write(Version);
        w.Write(entries.Count);
        foreach (var e in entries)
        {
            w.Write(e.Path);
            w.Write(e.IsDirectory);
            if (!e.IsDirectory) continue;
            w.Write(e.Mode); w.Write(e.Uid); w.Write(e.Gid);
            w.Write(e.AtimeSec); w.Write(e.AtimeNsec); w.Write(e.MtimeSec); w.Write(e.MtimeNsec);
        }
    }

    /// <summary>The listing, or null when there is none (or of another version): scan instead.</summary>
    public static List<TreeEntry>? Read(string file)
    {
        if (!File.Exists(file)) return null;
        using var r = new BinaryReader(File.OpenRead(file), Encoding.UTF8);
        if (r.ReadInt32() != Version) return null;
        int count = r.ReadInt32();
        var entries = new List<TreeEntry>(count);
        for (int i = 0; i < count; i++)
        {
            var path = r.ReadString();
            entries.Add(r.ReadBoolean()
                ? new TreeEntry(path, true, r.ReadUInt32(), r.ReadUInt32(), r.ReadUInt32(), r.ReadInt64(), r.ReadInt64(), r.ReadInt64(), r.ReadInt64())
                : new TreeEntry(path, false, 0, 0, 0, 0, 0, 0, 0));
        }
        return entries;
    }
}

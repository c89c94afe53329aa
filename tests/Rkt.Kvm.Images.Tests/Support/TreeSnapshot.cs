using System.Security.Cryptography;
using Rkt.Kvm.Images.Native;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// What a rendered tree is, entry by entry (type, permission bits, owner, mtime, size, content
/// hash, link target, device number) plus which paths share an inode, for comparing our render
/// with GNU tar's or umoci's extraction of the same archive.
/// </summary>
public sealed class TreeSnapshot
{
    public required SortedDictionary<string, string> Entries { get; init; }
    public required List<string> HardlinkGroups { get; init; }

    public static TreeSnapshot Take(string root, bool withDirTimes = true)
    {
        var entries = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var inodes = new Dictionary<ulong, List<string>>();
        foreach (var path in Directory.EnumerateFileSystemEntries(root, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
        {
            var rel = Path.GetRelativePath(root, path);
            var st = Libc.LStat(path);
            uint type = st.Mode & Libc.S_IFMT;
            string detail = type switch
            {
                Libc.S_IFREG => $"file size={st.Size} sha256={Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)))[..16]}",
                Libc.S_IFLNK => $"symlink -> {new FileInfo(path).LinkTarget}",
                Libc.S_IFDIR => "dir",
                Libc.S_IFCHR => $"chardev {st.Rdev}",
                Libc.S_IFBLK => $"blockdev {st.Rdev}",
                Libc.S_IFIFO => "fifo",
                _ => $"type {type:x}",
            };
            bool showTime = type != Libc.S_IFDIR || withDirTimes;
            entries[rel] = $"{detail} mode={Convert.ToString(st.Mode & 0xFFF, 8)} owner={st.Uid}:{st.Gid}" + (showTime ? $" mtime={st.MtimeSec}" : "");
            if (type != Libc.S_IFDIR && st.Nlink > 1) (inodes.TryGetValue(st.Ino, out var l) ? l : inodes[st.Ino] = []).Add(rel);
        }
        var groups = inodes.Values.Where(g => g.Count > 1).Select(g => string.Join(" = ", g.Order(StringComparer.Ordinal))).Order(StringComparer.Ordinal).ToList();
        return new TreeSnapshot { Entries = entries, HardlinkGroups = groups };
    }

    /// <summary>Asserts equality with a readable list of the differing paths.</summary>
    public void AssertSameAs(TreeSnapshot expected)
    {
        var diffs = expected.Entries.Keys.Union(Entries.Keys)
            .Where(k => expected.Entries.GetValueOrDefault(k) != Entries.GetValueOrDefault(k))
            .Select(k => $"{k}: expected [{expected.Entries.GetValueOrDefault(k) ?? "absent"}] got [{Entries.GetValueOrDefault(k) ?? "absent"}]").ToList();
        Assert.True(diffs.Count == 0, "trees differ:\n" + string.Join('\n', diffs.Take(30)));
        Assert.Equal(expected.HardlinkGroups, HardlinkGroups);
    }
}

using System.IO.Compression;
using System.Text;

namespace Rkt.Kvm.Initramfs;

/// <summary>
/// Turns entries into a cpio archive. Parent directories are created implicitly (0755, root),
/// duplicates are rejected, and entries are written parents-first so the kernel can unpack in order.
/// </summary>
public static class InitramfsBuilder
{
    public static void Write(IEnumerable<InitramfsEntry> entries, Stream output, bool gzip = false)
    {
        var byPath = new SortedDictionary<string, InitramfsEntry>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            string path = Normalize(entry.Path);
            if (!byPath.TryAdd(path, entry)) throw new ArgumentException($"The initramfs lists {entry.Path} twice.");
            for (string? parent = ParentOf(path); parent is not null; parent = ParentOf(parent))
                byPath.TryAdd(parent, new DirectoryEntry("/" + parent, 0x1ED /* 0755 */, 0, 0));
        }

        Stream target = gzip ? new GZipStream(output, CompressionLevel.SmallestSize, leaveOpen: true) : output;
        try
        {
            var cpio = new CpioNewcWriter(target);
            // Ordinal order puts every directory before its children ("a" < "a/b").
            foreach (var (path, entry) in byPath)
            {
                switch (entry)
                {
                    case DirectoryEntry d:
                        cpio.WriteEntry(path, CpioNewcWriter.TypeDirectory | d.Mode, [], d.Uid, d.Gid, nlink: 2);
                        break;
                    case FileEntry f:
                        byte[] content;
                        try { content = File.ReadAllBytes(f.Source); }
                        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                        { throw new IOException($"Cannot read {f.Source} for {f.Path}: {e.Message}", e); }
                        cpio.WriteEntry(path, CpioNewcWriter.TypeRegular | f.Mode, content, f.Uid, f.Gid);
                        break;
                    case SymlinkEntry s:
                        cpio.WriteEntry(path, CpioNewcWriter.TypeSymlink | s.Mode, Encoding.UTF8.GetBytes(s.Target), s.Uid, s.Gid);
                        break;
                    case DeviceEntry n:
                        uint type = n.Kind == 'c' ? CpioNewcWriter.TypeCharDevice : CpioNewcWriter.TypeBlockDevice;
                        cpio.WriteEntry(path, type | n.Mode, [], n.Uid, n.Gid, rdevMajor: n.Major, rdevMinor: n.Minor);
                        break;
                }
            }
            cpio.WriteTrailer();
        }
        finally
        {
            if (gzip) target.Dispose();
        }
    }

    /// <summary>"/bin//sh/" → "bin/sh"; rejects "." and ".." components, which have no place in an archive we build.</summary>
    internal static string Normalize(string path)
    {
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0 || parts.Any(p => p is "." or ".."))
            throw new ArgumentException($"Invalid initramfs path '{path}'.");
        return string.Join('/', parts);
    }

    private static string? ParentOf(string path)
    {
        int slash = path.LastIndexOf('/');
        return slash < 0 ? null : path[..slash];
    }
}

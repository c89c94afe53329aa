using System.IO.Enumeration;
using Rkt.Kvm.Images.Native;

namespace Rkt.Kvm.Images.Trees;

/// <summary>
/// Copies a rendered tree: directories are recreated with their mode, owner and times; every
/// other entry is hardlinked (<see cref="ExportMode.Hardlink"/>) or copied with its metadata,
/// hardlink groups kept (<see cref="ExportMode.Copy"/>). Symlinks are recreated, never followed.
/// </summary>
internal sealed class TreeCopier(ExportMode mode)
{
    private readonly Dictionary<(ulong Dev, ulong Ino), string> _copiedInodes = [];
    private readonly List<(string Path, Libc.Stat Stat)> _dirs = [];

    public void Copy(string source, string target)
    {
        CopyDirectory(source, target);
        // Directory times last and deepest first: creating children changes them.
        foreach (var (path, st) in Enumerable.Reverse(_dirs))
            Libc.SetTimes(path, st.AtimeSec, st.AtimeNsec, st.MtimeSec, st.MtimeNsec);
    }

    private void CopyDirectory(string source, string target)
    {
        var st = Libc.LStat(source);
        // Plain mkdir(2): the target's parent exists (or is the caller's), and this runs for half
        // the entries of a typical image, so Directory.CreateDirectory's extra checks show.
        if (Libc.mkdir(target, 0x1C0 /* 0700 until the mode is set */) != 0 && !Directory.Exists(target)) throw Libc.Error("mkdir", target);
        SetOwnerAndMode(target, st);
        _dirs.Add((target, st));
        var entries = new FileSystemEnumerable<(string Name, bool IsDir)>(source,
            (ref FileSystemEntry e) => (e.FileName.ToString(), e.IsDirectory && (e.Attributes & FileAttributes.ReparsePoint) == 0),
            new EnumerationOptions { RecurseSubdirectories = false, AttributesToSkip = 0, IgnoreInaccessible = false });
        foreach (var (name, isDir) in entries)
        {
            var from = Path.Join(source, name);
            var to = Path.Join(target, name);
            if (isDir) CopyDirectory(from, to);
            else if (mode == ExportMode.Hardlink) Link(from, to);
            else CopyEntry(from, to);
        }
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
        if ((st.Mode & Libc.S_IFMT) != Libc.S_IFLNK) SetOwnerAndMode(to, st);
        else if (Libc.IsRoot && Libc.lchown(to, st.Uid, st.Gid) != 0) throw Libc.Error("lchown", to);
        Libc.SetTimes(to, st.AtimeSec, st.AtimeNsec, st.MtimeSec, st.MtimeNsec);
        if (st.Nlink > 1) _copiedInodes[(st.Dev, st.Ino)] = to;
    }

    private static void SetOwnerAndMode(string path, Libc.Stat st)
    {
        if (Libc.IsRoot && Libc.lchown(path, st.Uid, st.Gid) != 0) throw Libc.Error("lchown", path);
        File.SetUnixFileMode(path, (UnixFileMode)(st.Mode & 0xFFF)); // after chown, which clears setuid
    }
}

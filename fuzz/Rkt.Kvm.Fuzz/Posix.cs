using System.Text;
using Tmds.Linux;

namespace Rkt.Kvm.Fuzz;

/// <summary>The few host calls the targets' own checks need (never following a symlink).</summary>
internal static unsafe class Posix
{
    public const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000, S_IFIFO = 0x1000;
    public const uint S_ISUID = 0x800, S_ISGID = 0x400;

    public readonly record struct Stat(uint Mode, ulong Nlink, uint Uid, uint Gid, long Size, long MtimeSec, long MtimeNsec)
    {
        public uint Type => Mode & S_IFMT;
    }

    /// <summary>lstat, or null when nothing is there.</summary>
    public static Stat? LStat(string path)
    {
        stat st;
        fixed (byte* p = Z(path))
            if (LibC.lstat(p, &st) != 0) return null;
        return new Stat((uint)st.st_mode, (ulong)st.st_nlink, (uint)st.st_uid, (uint)st.st_gid, (long)st.st_size,
            (long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
    }

    public static void MkFifo(string path)
    {
        fixed (byte* p = Z(path))
            if (LibC.mkfifo(p, 0x1A4) != 0) throw new IOException($"mkfifo {path}: errno {LibC.errno}");
    }

    public static void Link(string existing, string path)
    {
        fixed (byte* a = Z(existing))
        fixed (byte* b = Z(path))
            if (LibC.link(a, b) != 0) throw new IOException($"link {path}: errno {LibC.errno}");
    }

    /// <summary>The paths this process has open under <paramref name="root"/> (from /proc/self/fd).</summary>
    public static List<string> OpenFilesUnder(string root)
    {
        var open = new List<string>();
        foreach (var fd in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try { target = new FileInfo(fd).LinkTarget; }
            catch (IOException) { continue; } // closed while we looked
            if (target is not null && (target == root || target.StartsWith(root + "/", StringComparison.Ordinal))) open.Add($"{Path.GetFileName(fd)} -> {target}");
        }
        return open;
    }

    private static byte[] Z(string s) => Encoding.UTF8.GetBytes(s + "\0");
}

using System.Globalization;

namespace Rkt.Kvm.Initramfs;

/// <summary>One thing to put into the initramfs.</summary>
public abstract record InitramfsEntry(string Path, uint Mode, uint Uid, uint Gid);
public sealed record DirectoryEntry(string Path, uint Mode, uint Uid, uint Gid) : InitramfsEntry(Path, Mode, Uid, Gid);
public sealed record FileEntry(string Path, string Source, uint Mode, uint Uid, uint Gid) : InitramfsEntry(Path, Mode, Uid, Gid);
public sealed record SymlinkEntry(string Path, string Target, uint Mode, uint Uid, uint Gid) : InitramfsEntry(Path, Mode, Uid, Gid);
public sealed record DeviceEntry(string Path, char Kind, uint Major, uint Minor, uint Mode, uint Uid, uint Gid) : InitramfsEntry(Path, Mode, Uid, Gid);

/// <summary>
/// Parses an initramfs description in the line format of the kernel's usr/gen_init_cpio, which
/// kernel developers already know:
/// <code>
/// dir   /proc 0755 0 0
/// file  /init init.sh 0755 0 0          (source relative to the spec file)
/// slink /bin/sh busybox 0777 0 0
/// nod   /dev/console 0600 0 0 c 5 1
/// </code>
/// Blank lines and lines starting with # are ignored.
/// </summary>
public static class InitramfsSpec
{
    public static IReadOnlyList<InitramfsEntry> Parse(string text, string baseDirectory)
    {
        var entries = new List<InitramfsEntry>();
        int lineNumber = 0;
        foreach (string raw in text.Split('\n'))
        {
            lineNumber++;
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            string[] f = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            string Error(string why) => $"initramfs spec line {lineNumber}: {why}: '{line}'";
            uint Octal(string s) => TryOctal(s, out uint v) ? v : throw new FormatException(Error($"'{s}' is not an octal mode"));
            uint Number(string s) => uint.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out uint v) ? v : throw new FormatException(Error($"'{s}' is not a number"));
            string GuestPath(string p) => p.StartsWith('/') ? p : throw new FormatException(Error("paths inside the initramfs must be absolute"));
            entries.Add(f[0] switch
            {
                "dir" when f.Length == 5 => new DirectoryEntry(GuestPath(f[1]), Octal(f[2]), Number(f[3]), Number(f[4])),
                "file" when f.Length == 6 => new FileEntry(GuestPath(f[1]), Path.GetFullPath(f[2], baseDirectory), Octal(f[3]), Number(f[4]), Number(f[5])),
                "slink" when f.Length == 6 => new SymlinkEntry(GuestPath(f[1]), f[2], Octal(f[3]), Number(f[4]), Number(f[5])),
                "nod" when f.Length == 8 && f[5] is "c" or "b" => new DeviceEntry(GuestPath(f[1]), f[5][0], Number(f[6]), Number(f[7]), Octal(f[2]), Number(f[3]), Number(f[4])),
                _ => throw new FormatException(Error("expected dir, file, slink or nod with their fields")),
            });
        }
        return entries;
    }

    private static bool TryOctal(string s, out uint value)
    {
        value = 0;
        if (s.Length == 0 || s.Length > 6) return false;
        foreach (char c in s)
        {
            if (c < '0' || c > '7') return false;
            value = value * 8 + (uint)(c - '0');
        }
        return true;
    }
}

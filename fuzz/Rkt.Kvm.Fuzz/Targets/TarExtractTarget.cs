using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Compression;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// A hostile image archive, extracted for real. Input: a selector byte (bits 0-1: an ACI, one OCI
/// layer, the same layer applied twice as layers 0 and 1 so whiteouts hide something, a plain
/// archive), then the archive, compressed or not (gzip, bzip2, xz, zstd are told by their magic).
/// The archive is applied twice: validated alone (what import does) and extracted into an empty
/// directory (what rendering does), each time only <see cref="ImageException"/> may escape, and
/// both must agree on whether the archive is good. While extracting, every path the writer is
/// given must be normalized and reached through real directories only (never a symlink), and
/// afterwards nothing outside the target may exist or have changed: neither the directory
/// around it nor a secret file next to it (whose absolute path run.sh puts in the dictionary,
/// so the fuzzer can aim symlinks and hard links at it).
/// </summary>
public sealed class TarExtractTarget : IFuzzTarget
{
    private const string Secret = "TOP SECRET";
    private static readonly ExtractionPolicy Policy = new() { MaxBytes = 1 << 20, MaxEntries = 4096, AllowDevices = false };

    private readonly Lazy<State> _state = new(() => new State());

    public string Name => "tar-extract";
    public string Covers => "Decompression (gzip, bzip2, xz, zstd), TarApplier, VirtualTree, EntryPath, EntryMeta and DiskTreeWriter, into a real directory";

    private sealed class State
    {
        public readonly string Root = FuzzTargets.ScratchDirectory("tar-extract");
        public string Around => Path.Join(Root, "x");
        public string Target => Path.Join(Root, "x", "target");
        public string SecretPath => Path.Join(Root, "secret");
        public readonly Posix.Stat SecretStat;

        public State()
        {
            System.IO.File.WriteAllText(SecretPath, Secret);
            SecretStat = Posix.LStat(SecretPath)!.Value;
        }
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        var s = _state.Value;
        if (Directory.Exists(s.Around)) Directory.Delete(s.Around, recursive: true);
        Directory.CreateDirectory(s.Target);
        var layout = input.IsEmpty ? 0 : input[0] & 3;
        var archive = input.IsEmpty ? [] : input[1..].ToArray();

        var validated = Apply(archive, layout, NullTreeWriter.Instance);
        Exception? rendered;
        try
        {
            rendered = Apply(archive, layout, new CheckingWriter(new DiskTreeWriter(s.Target), s.Target));
        }
        finally
        {
            CheckOutside(s);
        }
        FuzzLog.Note($"tar-extract: import {validated?.Message ?? "ok"}; render {rendered?.Message ?? "ok"}");
        if ((validated is null) != (rendered is null))
            throw new FuzzFindingException(validated is null
                ? $"the archive validates (import) but does not extract (render): {rendered!.GetType().Name}: {rendered.Message}"
                : $"the archive extracts (render) but does not validate (import): {validated.Message}", rendered ?? validated);
    }

    /// <summary>The outcome: null when the archive was applied, else the refusal.</summary>
    private static Exception? Apply(byte[] archive, int layout, ITreeWriter writer)
    {
        try
        {
            var applier = new TarApplier(writer, Policy);
            int layers = layout == 2 ? 2 : 1;
            for (int layer = 0; layer < layers; layer++)
            {
                using var plain = Decompression.Open(new MemoryStream(archive, writable: false), "fuzz input", out _);
                applier.Apply(plain, layout switch { 0 => ArchiveLayout.Aci, 3 => ArchiveLayout.Plain, _ => ArchiveLayout.Layer }, layer, "fuzz input");
            }
            applier.Complete();
            return null;
        }
        catch (ImageException e)
        {
            return e;
        }
        catch (IOException e) when (writer is not NullTreeWriter && e is not (FileNotFoundException or DirectoryNotFoundException))
        {
            // The host refused a write (rkt-kvm reports these as errors too); whether import agreed is checked by the caller.
            return e;
        }
    }

    private static void CheckOutside(State s)
    {
        var around = Directory.GetFileSystemEntries(s.Around).Select(Path.GetFileName).ToList();
        if (around is not ["target"]) throw new FuzzFindingException($"written next to the target: {string.Join(", ", around)}");
        var root = Directory.GetFileSystemEntries(s.Root).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        if (!root.SequenceEqual(["secret", "x"], StringComparer.Ordinal)) throw new FuzzFindingException($"written above the target: {string.Join(", ", root)}");
        var secret = Posix.LStat(s.SecretPath);
        if (secret != s.SecretStat || System.IO.File.ReadAllText(s.SecretPath) != Secret)
            throw new FuzzFindingException($"the secret file outside the target changed: {secret} (was {s.SecretStat})");
        if (Posix.LStat(s.Around) is not { Type: Posix.S_IFDIR } || Posix.LStat(s.Target) is not { Type: Posix.S_IFDIR })
            throw new FuzzFindingException("the target or the directory around it is no longer a directory");
    }

    /// <summary>
    /// Sits between the applier and the disk writer and checks what the applier asks for against
    /// the disk itself: normalized relative paths, parents that are real directories, nothing in
    /// the way of a new entry (the applier removes it first), hard links to existing non-directories.
    /// </summary>
    private sealed class CheckingWriter(ITreeWriter inner, string root) : ITreeWriter
    {
        private string Full(string rel) => rel.Length == 0 ? root : Path.Join(root, rel);

        private void Check(string rel, string call, bool mayBeRoot = false)
        {
            if (rel.Length == 0)
            {
                if (!mayBeRoot) throw new FuzzFindingException($"{call} on the extraction root");
                return;
            }
            string normalized;
            try { normalized = EntryPath.Normalize(rel, rel); }
            catch (ImageException e) { throw new FuzzFindingException($"{call} of an unsafe path \"{rel}\"", e); }
            if (normalized != rel) throw new FuzzFindingException($"{call} of \"{rel}\", not normalized (\"{normalized}\")");
            foreach (var dir in EntryPath.Ancestors(rel))
                if (Posix.LStat(Full(dir)) is { } st && st.Type != Posix.S_IFDIR)
                    throw new FuzzFindingException($"{call} of \"{rel}\" through \"{dir}\", which is not a directory on disk (mode {Convert.ToString(st.Mode, 8)})");
        }

        private void Absent(string rel, string call)
        {
            if (Posix.LStat(Full(rel)) is { } st)
                throw new FuzzFindingException($"{call} of \"{rel}\", where something (mode {Convert.ToString(st.Mode, 8)}) already is");
        }

        public void Directory(string rel, EntryMeta meta)
        {
            Check(rel, "Directory", mayBeRoot: true);
            if (Posix.LStat(Full(rel)) is { } st && st.Type != Posix.S_IFDIR)
                throw new FuzzFindingException($"Directory \"{rel}\" over a non-directory (mode {Convert.ToString(st.Mode, 8)})");
            inner.Directory(rel, meta);
        }

        public void File(string rel, EntryMeta meta, Stream? data, long length)
        {
            Check(rel, "File");
            Absent(rel, "File");
            inner.File(rel, meta, data, length);
        }

        public void Symlink(string rel, string target, EntryMeta meta)
        {
            Check(rel, "Symlink");
            Absent(rel, "Symlink");
            inner.Symlink(rel, target, meta);
        }

        public void Hardlink(string rel, string existingRel)
        {
            Check(rel, "Hardlink");
            Check(existingRel, "Hardlink target");
            Absent(rel, "Hardlink");
            if (Posix.LStat(Full(existingRel)) is not { } st || st.Type == Posix.S_IFDIR)
                throw new FuzzFindingException($"Hardlink \"{rel}\" to \"{existingRel}\", which is missing or a directory on disk");
            inner.Hardlink(rel, existingRel);
        }

        public void Special(string rel, UnixSpecialKind kind, EntryMeta meta, int major, int minor)
        {
            Check(rel, "Special");
            Absent(rel, "Special");
            if (kind != UnixSpecialKind.Fifo) throw new FuzzFindingException($"a {kind} \"{rel}\" although devices are not allowed");
            inner.Special(rel, kind, meta, major, minor);
        }

        public void Remove(string rel)
        {
            Check(rel, "Remove");
            inner.Remove(rel);
        }

        public void Complete() => inner.Complete();
    }

    // ------------------------------------------------------------------ seeds

    private static readonly DateTimeOffset Time = new(2024, 1, 2, 3, 4, 5, TimeSpan.Zero);

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        var aci = Tar(TarEntryFormat.Ustar, w =>
        {
            FileEntry(w, TarEntryFormat.Ustar, "manifest", """{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/fuzz"}""");
            Dir(w, TarEntryFormat.Ustar, "rootfs/");
            Dir(w, TarEntryFormat.Ustar, "rootfs/bin/");
            FileEntry(w, TarEntryFormat.Ustar, "rootfs/bin/sh", "#!/bin/true\n", mode: 0x1ED);
            Link(w, TarEntryFormat.Ustar, TarEntryType.SymbolicLink, "rootfs/bin/ash", "sh");
            Link(w, TarEntryFormat.Ustar, TarEntryType.HardLink, "rootfs/bin/busybox", "rootfs/bin/sh");
            Link(w, TarEntryFormat.Ustar, TarEntryType.SymbolicLink, "rootfs/etc/mtab", "/proc/self/mounts");
            FileEntry(w, TarEntryFormat.Ustar, "rootfs/etc/hostname", "fuzz\n");
            Add(w, new UstarTarEntry(TarEntryType.Fifo, "rootfs/run/fifo") { ModificationTime = Time, Mode = (UnixFileMode)0x1A4 });
        });
        yield return ("aci", [0, .. aci]);
        yield return ("aci.gz", [0, .. Gzip(aci)]);

        var layer = Tar(TarEntryFormat.Pax, w =>
        {
            Dir(w, TarEntryFormat.Pax, "d/");
            FileEntry(w, TarEntryFormat.Pax, "d/f", "lower");
            FileEntry(w, TarEntryFormat.Pax, "d/.wh.f", "");
            Dir(w, TarEntryFormat.Pax, "o/");
            FileEntry(w, TarEntryFormat.Pax, "o/.wh..wh..opq", "");
            FileEntry(w, TarEntryFormat.Pax, "o/kept", "upper");
            FileEntry(w, TarEntryFormat.Pax, ".wh.gone", "");
            Add(w, new PaxTarEntry(TarEntryType.RegularFile, "suid", new Dictionary<string, string>
            {
                ["mtime"] = "1704164645", ["SCHILY.xattr.user.fuzz"] = "1",
            }) { ModificationTime = Time, Mode = (UnixFileMode)0x9ED, Uid = 1000, Gid = 1000, DataStream = new MemoryStream("x"u8.ToArray()) });
            FileEntry(w, TarEntryFormat.Pax, "long/" + new string('n', 120), "long name");
        });
        yield return ("layer-twice", [2, .. layer]);

        var plain = Tar(TarEntryFormat.Gnu, w =>
        {
            Dir(w, TarEntryFormat.Gnu, "./");
            FileEntry(w, TarEntryFormat.Gnu, "./index.json", "{}");
            Link(w, TarEntryFormat.Gnu, TarEntryType.SymbolicLink, "./l/" + new string('t', 110), "../index.json");
            Link(w, TarEntryFormat.Gnu, TarEntryType.HardLink, "./h", "index.json");
        });
        yield return ("plain-gnu", [3, .. plain]);

        var small = Tar(TarEntryFormat.Ustar, w => FileEntry(w, TarEntryFormat.Ustar, "a", "b"));
        foreach (var (tool, suffix) in new[] { ("bzip2", "bz2"), ("xz", "xz"), ("zstd", "zst") })
            if (Compress(tool, small) is { } compressed) yield return ($"layer.{suffix}", [1, .. compressed]);
    }

    private static byte[] Tar(TarEntryFormat format, Action<TarWriter> entries)
    {
        var buffer = new MemoryStream();
        using (var w = new TarWriter(buffer, format, leaveOpen: true)) entries(w);
        return SamePaxNames(buffer.ToArray());
    }

    /// <summary>
    /// TarWriter names PAX headers "…/PaxHeaders.&lt;pid&gt;/…": "PaxHeaders.0" instead keeps the
    /// committed seeds the same from run to run. Each changed header's checksum is recomputed.
    /// </summary>
    private static byte[] SamePaxNames(byte[] tar)
    {
        var marker = "PaxHeaders."u8;
        for (int at = 0; at + 512 <= tar.Length;)
        {
            var header = tar.AsSpan(at, 512);
            if (!header.ContainsAnyExcept((byte)0)) break; // the end blocks
            bool changed = false;
            foreach (var (offset, length) in new[] { (0, 100), (345, 155) }) // name, ustar prefix
            {
                var field = header.Slice(offset, length);
                int m = field.IndexOf(marker);
                if (m < 0) continue;
                int digits = m + marker.Length, end = digits;
                while (end < length && field[end] is >= (byte)'0' and <= (byte)'9') end++;
                var rest = field[end..].ToArray();
                field[digits] = (byte)'0';
                field[(digits + 1)..].Clear();
                rest.AsSpan(0, Math.Min(rest.Length, length - digits - 1)).CopyTo(field[(digits + 1)..]);
                changed = true;
            }
            if (changed)
            {
                header.Slice(148, 8).Fill((byte)' ');
                int sum = 0;
                foreach (byte b in header) sum += b;
                Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(header[148..]);
            }
            long size = Convert.ToInt64(Encoding.ASCII.GetString(header.Slice(124, 12)).Trim('\0', ' ') is { Length: > 0 } octal ? octal : "0", 8);
            at += 512 + (int)((size + 511) / 512 * 512);
        }
        return tar;
    }

    private static void Add(TarWriter w, TarEntry entry) => w.WriteEntry(entry);

    private static TarEntry Entry(TarEntryFormat format, TarEntryType type, string name) => format switch
    {
        TarEntryFormat.Pax => new PaxTarEntry(type, name, new Dictionary<string, string> { ["mtime"] = "1704164645" }),
        TarEntryFormat.Gnu => new GnuTarEntry(type, name) { AccessTime = Time, ChangeTime = Time },
        _ => new UstarTarEntry(type, name),
    };

    private static void Dir(TarWriter w, TarEntryFormat format, string name)
    {
        var e = Entry(format, TarEntryType.Directory, name);
        e.ModificationTime = Time;
        e.Mode = (UnixFileMode)0x1ED;
        w.WriteEntry(e);
    }

    private static void FileEntry(TarWriter w, TarEntryFormat format, string name, string content, int mode = 0x1A4)
    {
        var e = Entry(format, format == TarEntryFormat.V7 ? TarEntryType.V7RegularFile : TarEntryType.RegularFile, name);
        e.ModificationTime = Time;
        e.Mode = (UnixFileMode)mode;
        e.DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content));
        w.WriteEntry(e);
    }

    private static void Link(TarWriter w, TarEntryFormat format, TarEntryType type, string name, string target)
    {
        var e = Entry(format, type, name);
        e.ModificationTime = Time;
        e.Mode = (UnixFileMode)0x1FF;
        e.LinkName = target;
        w.WriteEntry(e);
    }

    private static byte[] Gzip(byte[] data)
    {
        var buffer = new MemoryStream();
        using (var gz = new GZipStream(buffer, CompressionLevel.SmallestSize, leaveOpen: true)) gz.Write(data);
        return buffer.ToArray();
    }

    /// <summary>Compresses with the Debian tool (make deps installs them); null when it is missing.</summary>
    private static byte[]? Compress(string tool, byte[] data)
    {
        try
        {
            var p = Process.Start(new ProcessStartInfo(tool, ["-c", "-q"]) { RedirectStandardInput = true, RedirectStandardOutput = true })!;
            var output = new MemoryStream();
            var copy = p.StandardOutput.BaseStream.CopyToAsync(output);
            p.StandardInput.BaseStream.Write(data);
            p.StandardInput.Close();
            copy.Wait();
            p.WaitForExit();
            return p.ExitCode == 0 ? output.ToArray() : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }
}

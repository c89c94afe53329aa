using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using Rkt.Kvm.Images.Native;
using Serilog;

namespace Rkt.Kvm.Images.Archive;

/// <summary>
/// Writes validated entries under a root directory with their modes, owners (when root), times
/// and xattrs. It never opens an existing path: <see cref="TarApplier"/> has whatever is in the
/// way removed first (it knows from its <see cref="VirtualTree"/>, so no stat per entry), and
/// files are created with O_EXCL, so a symlink planted by the archive is never followed.
/// Directory metadata waits for <see cref="Complete"/>, since adding children changes a
/// directory's mtime and a read-only directory would stop us adding them as non-root.
/// Owners come from the archive when <c>applyOwners</c> (by default, when running as root; a
/// confined extraction runs under its own uid with CAP_CHOWN and asks for them explicitly).
/// </summary>
public sealed class DiskTreeWriter(string root, bool applyOwners) : ITreeWriter
{
    // Resolved per use, not cached: the CLI configures Serilog after these types may be loaded.
    private static ILogger Log => Serilog.Log.ForContext<DiskTreeWriter>();
    private readonly string _root = Path.GetFullPath(root);
    private readonly Dictionary<string, EntryMeta> _dirs = new(StringComparer.Ordinal);

    public DiskTreeWriter(string root) : this(root, Libc.IsRoot) { }

    private string Full(string rel) => rel.Length == 0 ? _root : Path.Join(_root, rel);

    public void Directory(string rel, EntryMeta meta)
    {
        // The applier has removed any non-directory in the way, so EEXIST means a directory.
        var path = Full(rel);
        if (Libc.mkdir(path, 0x1C0 /* 0700 until Complete */) != 0 && Marshal.GetLastPInvokeError() != Libc.EEXIST)
            throw Libc.Error("mkdir", path);
        _dirs[rel] = meta;
    }

    public void File(string rel, EntryMeta meta, Stream? data, long length)
    {
        var path = Full(rel);
        // Preallocating (fallocate) pays off only for large files; small ones are most entries.
        // FileShare.ReadWrite: for a write handle .NET then takes no flock of its own (a syscall
        // per file, and nobody else can see this scratch tree anyway).
        using (var handle = System.IO.File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write, FileShare.ReadWrite,
                   FileOptions.None, preallocationSize: length >= 1 << 20 ? length : 0))
        {
            if (data is not null && length > 0) Copy(data, handle, length, rel);
            if (applyOwners && Libc.fchown((int)handle.DangerousGetHandle(), (uint)meta.Uid, (uint)meta.Gid) != 0)
                throw Libc.Error("fchown", path);
            // After chown, which clears setuid and setgid bits.
            System.IO.File.SetUnixFileMode(handle, meta.Mode);
        }
        FinishMeta(path, meta, ownerDone: true);
    }

    public void Symlink(string rel, string target, EntryMeta meta)
    {
        var path = Full(rel);
        System.IO.File.CreateSymbolicLink(path, target);
        FinishMeta(path, meta, ownerDone: false);
    }

    public void Hardlink(string rel, string existingRel)
    {
        var path = Full(rel);
        if (Libc.link(Full(existingRel), path) != 0) throw Libc.Error("link", path);
    }

    public void Special(string rel, UnixSpecialKind kind, EntryMeta meta, int major, int minor)
    {
        var path = Full(rel);
        uint type = kind switch
        {
            UnixSpecialKind.CharacterDevice => Libc.S_IFCHR,
            UnixSpecialKind.BlockDevice => Libc.S_IFBLK,
            _ => Libc.S_IFIFO,
        };
        if (Libc.mknod(path, type | (uint)meta.Mode, Libc.MakeDev((uint)major, (uint)minor)) != 0)
            throw Libc.Error("mknod", path);
        FinishMeta(path, meta, ownerDone: false);
        if (applyOwners) System.IO.File.SetUnixFileMode(path, meta.Mode); // mknod applied the umask
    }

    public void Remove(string rel)
    {
        DeleteIfPresent(Full(rel));
        var prefix = rel + "/";
        _dirs.Remove(rel);
        foreach (var k in _dirs.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList()) _dirs.Remove(k);
    }

    public void Complete()
    {
        // Deepest first, so setting a parent's mtime comes after its children stop changing it.
        foreach (var (rel, meta) in _dirs.OrderByDescending(kv => kv.Key.Length))
        {
            var path = Full(rel);
            if (applyOwners && Libc.lchown(path, (uint)meta.Uid, (uint)meta.Gid) != 0) throw Libc.Error("lchown", path);
            System.IO.File.SetUnixFileMode(path, meta.Mode);
            ApplyXattrs(path, meta);
            Libc.SetTimes(path, meta.ModificationTime, meta.ModificationTime);
        }
        _dirs.Clear();
    }

    private void FinishMeta(string path, EntryMeta meta, bool ownerDone)
    {
        if (!ownerDone && applyOwners && Libc.lchown(path, (uint)meta.Uid, (uint)meta.Gid) != 0) throw Libc.Error("lchown", path);
        ApplyXattrs(path, meta);
        Libc.SetTimes(path, meta.ModificationTime, meta.ModificationTime);
    }

    /// <summary>
    /// Applies xattrs where the filesystem takes them. PAX carries values as UTF-8 text and
    /// System.Formats.Tar decodes them so; a binary value (e.g. security.capability) that did
    /// not survive that decoding is skipped with a warning rather than written corrupted, and so is
    /// one the kernel refuses as malformed.
    /// </summary>
    private static void ApplyXattrs(string path, EntryMeta meta)
    {
        foreach (var (name, value) in meta.Xattrs)
        {
            if (value.Contains('\uFFFD'))
            {
                Log.Warning("Skipping xattr {Name} on {Path}: its binary value cannot be carried through PAX text", name, path);
                continue;
            }
            var bytes = Encoding.UTF8.GetBytes(value);
            if (Libc.lsetxattr(path, name, bytes, (nuint)bytes.Length, 0) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno is Libc.ENOTSUP or Libc.EPERM)
                    Log.Debug("xattr {Name} not applied on {Path}: {Error}", name, path, Marshal.GetPInvokeErrorMessage(errno));
                // A name or value the kernel cannot take at all (no namespace, too long, too big): the
                // import accepted the image, so its render must not fail on it either.
                else if (errno is Libc.ERANGE or Libc.E2BIG or Libc.EINVAL)
                    Log.Warning("Skipping xattr {Name} on {Path}: {Error}", name, path, Marshal.GetPInvokeErrorMessage(errno));
                else throw Libc.Error("lsetxattr " + name, path);
            }
        }
    }

    private static void Copy(Stream data, Microsoft.Win32.SafeHandles.SafeFileHandle handle, long length, string rel)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 17);
        try
        {
            long offset = 0;
            while (offset < length)
            {
                int n = data.Read(buffer, 0, (int)Math.Min(buffer.Length, length - offset));
                if (n <= 0) throw new ImageException($"archive entry \"{rel}\" is truncated");
                RandomAccess.Write(handle, buffer.AsSpan(0, n), offset);
                offset += n;
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    private static void DeleteIfPresent(string path)
    {
        Libc.Stat st;
        try { st = Libc.LStat(path); }
        catch (IOException) { return; } // nothing there
        if ((st.Mode & Libc.S_IFMT) == Libc.S_IFDIR) System.IO.Directory.Delete(path, recursive: true);
        else System.IO.File.Delete(path);
    }
}

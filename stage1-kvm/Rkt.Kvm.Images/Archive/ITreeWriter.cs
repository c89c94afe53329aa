namespace Rkt.Kvm.Images.Archive;

/// <summary>
/// Where the validated entries of an archive go. <see cref="TarApplier"/> decides what is safe;
/// a writer only carries it out: to disk when rendering, nowhere when an import validates.
/// Paths are relative to the writer's root, already normalized and checked.
/// </summary>
public interface ITreeWriter
{
    void Directory(string rel, EntryMeta meta);
    void File(string rel, EntryMeta meta, Stream? data, long length);
    void Symlink(string rel, string target, EntryMeta meta);
    void Hardlink(string rel, string existingRel);
    void Special(string rel, UnixSpecialKind kind, EntryMeta meta, int major, int minor);
    /// <summary>Deletes a path (and all below it); a symlink is deleted, never followed.</summary>
    void Remove(string rel);
    /// <summary>Applies what had to wait for the end, such as directory times.</summary>
    void Complete();
}

public enum UnixSpecialKind { CharacterDevice, BlockDevice, Fifo }

/// <summary>Validation only: the import checks every entry without writing anything.</summary>
public sealed class NullTreeWriter : ITreeWriter
{
    public static readonly NullTreeWriter Instance = new();
    public void Directory(string rel, EntryMeta meta) { }
    public void File(string rel, EntryMeta meta, Stream? data, long length) { }
    public void Symlink(string rel, string target, EntryMeta meta) { }
    public void Hardlink(string rel, string existingRel) { }
    public void Special(string rel, UnixSpecialKind kind, EntryMeta meta, int major, int minor) { }
    public void Remove(string rel) { }
    public void Complete() { }
}

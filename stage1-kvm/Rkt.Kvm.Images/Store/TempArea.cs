using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Images.Store;

/// <summary>
/// A private scratch directory next to its final destination (same filesystem, so the results
/// can be renamed into place), held under an flock so <c>gc</c> leaves a live one alone and
/// removes one whose process died. Disposing deletes whatever was not moved out.
/// </summary>
public sealed class TempArea : IDisposable
{
    private readonly FileLock _lock;

    private TempArea(string path, FileLock fileLock) { Path = path; _lock = fileLock; }

    public string Path { get; }

    public static TempArea Create(string parent, string prefix)
    {
        Directory.CreateDirectory(parent);
        var path = System.IO.Path.Join(parent, $"{prefix}{Guid.NewGuid():N}");
        var fileLock = FileLock.Exclusive(path + ".lock");
        Directory.CreateDirectory(path);
        return new TempArea(path, fileLock);
    }

    /// <summary>Deletes the scratch directories under <paramref name="parent"/> nobody holds.</summary>
    public static int CollectAbandoned(string parent, string prefix) =>
        CollectAbandoned(parent, prefix, dir =>
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            return true;
        });

    /// <summary>For each <c>PATH.lock</c> under <paramref name="parent"/> whose name starts with
    /// <paramref name="prefix"/> and that nobody holds: <paramref name="remove"/>(PATH) (true when it
    /// removed something to count), then the lock file.</summary>
    internal static int CollectAbandoned(string parent, string prefix, Func<string, bool> remove)
    {
        if (!Directory.Exists(parent)) return 0;
        int removed = 0;
        foreach (var lockPath in Directory.EnumerateFiles(parent, prefix + "*.lock"))
        {
            using var held = FileLock.TryExclusive(lockPath);
            if (held is null) continue;
            if (remove(lockPath[..^".lock".Length])) removed++;
            File.Delete(lockPath);
        }
        return removed;
    }

    public void Dispose()
    {
        try
        {
            if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
            File.Delete(Path + ".lock");
        }
        finally { _lock.Dispose(); }
    }
}

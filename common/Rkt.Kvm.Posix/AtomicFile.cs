namespace Rkt.Kvm.Posix;

/// <summary>Replaces a file in one step: readers see the old content or the new, never half
/// (a temporary file beside it, optionally fsynced, then rename).</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public static class AtomicFile
{
    /// <param name="durable">fsync before the rename, so a power loss cannot lose the new
    /// content; worth its cost (tens of ms on a busy disk) for imports, not for a last-used time
    /// or a status file that describes a running process.</param>
    /// <param name="mode">the file's mode, set before the rename, independent of the umask.</param>
    public static void Write(string path, ReadOnlySpan<byte> content, bool durable = true, UnixFileMode? mode = null)
    {
        var tmp = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                fs.Write(content);
                fs.Flush(flushToDisk: durable);
            }
            if (mode is { } m) File.SetUnixFileMode(tmp, m);
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }
}

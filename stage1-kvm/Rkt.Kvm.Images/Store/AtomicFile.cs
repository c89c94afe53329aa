namespace Rkt.Kvm.Images.Store;

/// <summary>Replaces a file in one step: readers see the old content or the new, never half.</summary>
internal static class AtomicFile
{
    /// <param name="durable">fsync before the rename, so a power loss cannot lose the new
    /// content; worth its cost (tens of ms on a busy disk) for imports, not for a last-used time.</param>
    public static void Write(string path, ReadOnlySpan<byte> content, bool durable = true)
    {
        var tmp = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                fs.Write(content);
                fs.Flush(flushToDisk: durable);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }
}

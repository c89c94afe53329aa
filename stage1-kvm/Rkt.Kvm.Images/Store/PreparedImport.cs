using Rkt.Kvm.Images.Formats.Appc;

namespace Rkt.Kvm.Images.Store;

/// <summary>
/// An image checked and copied into the store's scratch area, not yet in the store: nothing
/// sees it until <see cref="Commit"/>; disposing it without committing leaves the store as it
/// was (its scratch directory goes, or <c>image gc</c> removes it after a kill).
/// </summary>
internal sealed class PreparedImport(ImageStore store, TempArea tmp, ImageRecord record, ManifestSummary manifest,
    IReadOnlyList<(string Key, string TmpPath)> blobs, byte[] manifestBytes) : IDisposable
{
    /// <summary>The record the store will hold (its ID is final; <see cref="ImageRecord.Size"/>
    /// is the length of the tar the ID hashes).</summary>
    public ImageRecord Record { get; set; } = record;
    public ManifestSummary Manifest { get; } = manifest;

    public ImageRecord Commit() => store.Commit(Record, blobs, manifestBytes);

    public void Dispose() => tmp.Dispose();
}

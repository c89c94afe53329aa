namespace Rkt.Kvm.Images.Store;

/// <summary>Told how an import advances, so the CLI can draw progress bars (or print lines).</summary>
public interface IImportProgress
{
    /// <summary>A new step begins, reading <paramref name="totalBytes"/> bytes of input.</summary>
    void Step(string description, long totalBytes);

    /// <summary>More input bytes of the current step were read.</summary>
    void Advance(long bytes);

    /// <summary>A step that runs alongside others (one of several layer downloads); the returned
    /// action advances that step alone. By default it is a plain step.</summary>
    Action<long> Begin(string description, long totalBytes)
    {
        Step(description, totalBytes);
        return Advance;
    }
}

public sealed class NoProgress : IImportProgress
{
    public static readonly NoProgress Instance = new();
    public void Step(string description, long totalBytes) { }
    public void Advance(long bytes) { }
}

/// <param name="Name">the image name for OCI/docker images (an ACI's manifest names itself).</param>
/// <param name="Reference">which image of an OCI layout or docker archive: ref name, tag or digest.</param>
public sealed record ImportOptions(string? Name = null, string? Reference = null)
{
    public Archive.ExtractionPolicy Policy { get; init; } = new();

    /// <summary>The registry reference or ACI URL a fetch came from (see <see cref="ImageRecord.Remote"/>).</summary>
    internal string? Remote { get; init; }
    internal string? RemoteDigest { get; init; }
    /// <summary>The layer files are the import's own scratch files (a registry download, or a
    /// hardlink of a stored blob): moved into the store after their checks instead of copied.</summary>
    internal bool TakeLayerFiles { get; init; }
    /// <summary>Completes when layer i's file is all there (a registry fetch downloads while the import
    /// checks the layers before it); null when every layer is there from the start.</summary>
    internal Func<int, Task>? LayerReady { get; init; }
    /// <summary>Set by a fetch that asked for a named image (appc discovery): the file must be an
    /// ACI, and its manifest must pass this check (name and labels as asked) before the store commits.</summary>
    internal Action<Formats.Appc.ManifestSummary>? CheckAciManifest { get; init; }
}

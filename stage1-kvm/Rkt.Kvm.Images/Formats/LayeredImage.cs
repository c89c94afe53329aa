using Rkt.Kvm.Images.Formats.Oci;

namespace Rkt.Kvm.Images.Formats;

/// <param name="Path">the layer file on disk (inside the layout or the unpacked archive).</param>
/// <param name="BlobDigest">digest of the file as stored (compressed), verified while copying.</param>
/// <param name="DiffId">digest of the uncompressed tar (config rootfs.diff_ids), verified while reading.</param>
public sealed record LayerSource(string Path, Digest? BlobDigest, Digest? DiffId, long? Size);

/// <summary>An OCI or docker-archive image, resolved to its config and ordered layers.</summary>
/// <param name="Reference">"repo:tag" or a bare tag, when the source names one.</param>
public sealed record LayeredImage(string Format, ImageConfig Config, Digest ConfigDigest,
    IReadOnlyList<LayerSource> Layers, string? Reference);

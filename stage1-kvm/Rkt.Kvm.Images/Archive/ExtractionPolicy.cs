namespace Rkt.Kvm.Images.Archive;

/// <summary>Limits and permissions for one image's archives, all layers together.</summary>
public sealed record ExtractionPolicy
{
    /// <summary>Bomb guard: the most uncompressed bytes an image may expand to (default 32 GiB).</summary>
    public long MaxBytes { get; init; } = 32L << 30;

    /// <summary>A million entries is far beyond any real image and cheap enough to model.</summary>
    public int MaxEntries { get; init; } = 1_000_000;

    /// <summary>Character and block devices are refused unless asked for: a device node with
    /// loose permissions in a rootfs on the host is a way into the host's disks.</summary>
    public bool AllowDevices { get; init; }
}

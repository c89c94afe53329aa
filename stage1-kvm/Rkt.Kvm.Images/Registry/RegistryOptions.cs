namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// How a registry fetch behaves and what it tolerates. The limits exist for hostile registries: a
/// manifest is small, an image has a few dozen layers, a blob is exactly as long as its
/// descriptor says, and a connection that stops sending (or trickles) is given up on.
/// </summary>
public sealed record RegistryOptions
{
    public InsecureOptions Insecure { get; init; }
    public DockerAuthConfig Auth { get; init; } = DockerAuthConfig.Empty;

    public long MaxManifestBytes { get; init; } = 4 << 20;
    /// <summary>Docker itself stops at 127; OCI sets no limit, so leave room above docker's.</summary>
    public int MaxLayers { get; init; } = 256;
    public int MaxRedirects { get; init; } = 5;

    /// <summary>Attempts per request (or blob download) on 429, 5xx, a dropped or stalled connection.</summary>
    public int MaxAttempts { get; init; } = 4;
    /// <summary>The first wait between attempts; it doubles each time (a server's Retry-After wins, up to <see cref="MaxRetryWait"/>).</summary>
    public TimeSpan RetryBaseDelay { get; init; } = TimeSpan.FromMilliseconds(500);
    public TimeSpan MaxRetryWait { get; init; } = TimeSpan.FromSeconds(10);

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(20);
    /// <summary>For a response's headers, and for a whole manifest or token body.</summary>
    public TimeSpan ResponseTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>A blob body that sends nothing for this long is a stalled connection.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A blob must arrive at this rate on average after <see cref="SlowGrace"/>: a server
    /// that sends a byte just before each idle time-out is still given up on, in bounded time.</summary>
    public long MinBytesPerSecond { get; init; } = 16 << 10;
    public TimeSpan SlowGrace { get; init; } = TimeSpan.FromSeconds(30);

    public int ParallelDownloads { get; init; } = 3;
}

using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// How a remote fetch (a registry, appc discovery, an ACI, a key) behaves and what it tolerates. The limits exist for hostile registries: a
/// manifest is small, an image has a few dozen layers, a blob is exactly as long as its
/// descriptor says, and a connection that stops sending (or trickles) is given up on.
/// </summary>
public sealed record RegistryOptions
{
    public InsecureOptions Insecure { get; init; }
    public AuthConfig Auth { get; init; } = AuthConfig.Empty;

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

    /// <summary>For tests only, and set only by code (no flag or environment variable reaches it):
    /// see <see cref="TestNetwork"/>.</summary>
    internal TestNetwork? Test { get; init; }
}

/// <summary>
/// How tests point a fetch at their own servers on 127.0.0.1 without weakening TLS: a CA of their
/// own instead of the system's (chain and host name still checked), and connections to a name
/// such as <c>example.com:443</c> sent to the test server's port.
/// </summary>
internal sealed record TestNetwork(X509Certificate2? TrustedRoot, Func<DnsEndPoint, DnsEndPoint>? ConnectTo);

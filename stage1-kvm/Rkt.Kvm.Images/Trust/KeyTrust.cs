using Rkt.Kvm.Images.Appc;
using Rkt.Kvm.Images.Registry;

namespace Rkt.Kvm.Images.Trust;

/// <summary>Where key review talks to the user: rkt's lines on stdout and stderr, and the
/// terminal to ask on (null when stdin or stderr is not one: then nothing can be asked).</summary>
public sealed record KeyReviewConsole(TextWriter Out, TextWriter Err, TextReader? Terminal);

/// <summary>
/// rkt's pubkey manager: reads keys from files or http(s) URLs, or discovers them for a prefix
/// (<c>ac-discovery-pubkeys</c>), shows each key's fingerprints and user IDs, asks the user on a
/// terminal unless told not to, and adds the accepted ones to the local trusted keys.
/// </summary>
public sealed class KeyTrust(TrustedKeyStore store, RegistryOptions options, KeyReviewConsole console)
{
    /// <summary>Keys are small; anything bigger is not one.</summary>
    public const long MaxKeyBytes = 1 << 20;

    /// <summary>rkt trust's <c>--insecure-allow-http</c>: discovery and keys over plain http.</summary>
    public bool AllowHttp { get; init; }
    /// <summary>rkt's <c>--trust-keys-from-https</c>: a key fetched over https is trusted without review.</summary>
    public bool TrustKeysFromHttps { get; init; }

    /// <summary>The network options for keys: plain http only as <see cref="AllowHttp"/> says, TLS as the caller's.</summary>
    private RegistryOptions KeyOptions => options with
    {
        Insecure = (options.Insecure & InsecureOptions.Tls) | (AllowHttp ? InsecureOptions.Http : InsecureOptions.None),
    };

    /// <summary>The key locations <c>ac-discovery-pubkeys</c> gives for <paramref name="prefix"/>.</summary>
    public IReadOnlyList<string> Discover(string prefix, CancellationToken ct = default)
    {
        using var http = new HttpSession(KeyOptions);
        try { return new AppcDiscovery(http).DiscoverKeys(new AppImageName(prefix, new Dictionary<string, string>()), ct).GetAwaiter().GetResult(); }
        catch (ImageException e) { throw new ImageException($"error determining key location: prefix meta discovery error: {e.Message}", e); }
    }

    /// <summary>Adds the keys at <paramref name="locations"/> for <paramref name="prefix"/> (null:
    /// root keys, trusted for every image), each after review unless <paramref name="ask"/> is false.
    /// Returns how many were added; a key the user declines is skipped.</summary>
    public int Add(IReadOnlyList<string> locations, string? prefix, bool ask, CancellationToken ct = default)
    {
        int added = 0;
        using var http = new HttpSession(KeyOptions);
        foreach (var location in locations)
        {
            var (key, https) = Read(location, http, ct);
            Show(prefix ?? "", location, key);
            bool review = ask && !(TrustKeysFromHttps && https);
            if (review && !Review(prefix ?? "")) { console.Err.WriteLine($"rkt-kvm: not trusting \"{location}\""); continue; }
            console.Out.WriteLine($"Trusting \"{location}\" for prefix \"{prefix}\" {(review ? "after" : "without")} fingerprint review.");
            var path = store.Add(key, prefix);
            console.Out.WriteLine(prefix is null ? $"Added root key at \"{path}\"" : $"Added key for prefix \"{prefix}\" at \"{path}\"");
            added++;
        }
        return added;
    }

    private (PublicKeyFile Key, bool Https) Read(string location, HttpSession http, CancellationToken ct)
    {
        var what = $"the key {location}";
        if (!location.Contains("://", StringComparison.Ordinal))
        {
            if (!File.Exists(location)) throw new ImageException($"error accessing {what}: no such file");
            if (new FileInfo(location).Length > MaxKeyBytes) throw new ImageException($"{what} is larger than {MaxKeyBytes} bytes");
            return (PublicKeyFile.Parse(File.ReadAllBytes(location), what), false);
        }
        if (!Uri.TryCreate(location, UriKind.Absolute, out var url) || url.Scheme is not ("https" or "http"))
            throw new ImageException($"error accessing {what}: only local files and http or https URLs supported");
        if (url.Scheme == "http" && !AllowHttp) throw new ImageException($"error accessing {what}: --insecure-allow-http required for http URLs");
        var bytes = http.GetSmall(url, MaxKeyBytes, what, ct).GetAwaiter().GetResult();
        return (PublicKeyFile.Parse(bytes, what), url.Scheme == "https");
    }

    /// <summary>rkt's summary of a key before it is trusted.</summary>
    private void Show(string prefix, string location, PublicKeyFile key)
    {
        console.Err.WriteLine($"rkt-kvm: prefix: \"{prefix}\"");
        console.Err.WriteLine($"rkt-kvm: key: \"{location}\"");
        console.Out.WriteLine($"gpg key fingerprint is: {key.DisplayFingerprint}");
        foreach (var subkey in key.SubkeyFingerprints) console.Out.WriteLine($"    Subkey fingerprint: {subkey}");
        foreach (var id in key.UserIds) console.Out.WriteLine($"\t{id}");
    }

    /// <summary>rkt's question; without a terminal it cannot be asked, and nothing is trusted.</summary>
    private bool Review(string prefix)
    {
        if (console.Terminal is not { } terminal)
        {
            console.Err.WriteLine($"rkt-kvm: To trust the key for \"{prefix}\", do one of the following:");
            console.Err.WriteLine("rkt-kvm:  - call rkt-kvm with --trust-keys-from-https");
            console.Err.WriteLine($"rkt-kvm:  - run: rkt-kvm trust --prefix \"{prefix}\"");
            throw new ImageException("error reviewing key: unable to ask user to review fingerprint due to lack of tty");
        }
        while (true)
        {
            console.Out.WriteLine("Are you sure you want to trust this key (yes/no)?");
            switch (terminal.ReadLine())
            {
                case "yes": return true;
                case "no": return false;
                case null: throw new ImageException("error reviewing key: error reading input: EOF");
                default: console.Out.WriteLine("Please enter 'yes' or 'no'"); break;
            }
        }
    }
}

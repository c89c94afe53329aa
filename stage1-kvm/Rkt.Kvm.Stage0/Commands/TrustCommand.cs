using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Trust;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary>
/// <c>trust [--prefix=PREFIX|--root] [--skip-fingerprint-review] [--insecure-allow-http] [PUBKEY…]</c>,
/// rkt 1.30's: adds keys (files or http(s) URLs; with only <c>--prefix</c>, the ones
/// <c>ac-discovery-pubkeys</c> names) to the local trusted keys, after showing each fingerprint
/// and asking on a terminal. rkt 1.30 has no way to list or remove keys from the command line
/// (they are files under <c>trustedkeys/</c>), and neither has this.
/// </summary>
public sealed class TrustCommand() : Command("trust", "Trust a key for image verification",
    "trust [--prefix=PREFIX] [--insecure-allow-http] [--skip-fingerprint-review] [--root] [PUBKEY ...]")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("prefix", "image name prefix to limit trust to (example.com/app)", Default: ""),
        new("root", "add a root key, trusted for every image (a file or URL must be given: no discovery)", IsBool: true),
        new("skip-fingerprint-review", "accept the key without fingerprint confirmation", IsBool: true),
        new("insecure-allow-http", "allow plain HTTP for key discovery and retrieval", IsBool: true),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        var prefix = args.Get("prefix")!;
        bool root = args.Bool("root");
        if (prefix == "" && !root)
            throw new UsageException(args.Positional.Count == 0
                ? $"usage: rkt-kvm {Usage}"
                : "aborting due to implicit unbounded trust (root domain): give a prefix (rkt-kvm trust --prefix \"example.com/foo\" [PUBKEY]) " +
                  "or ask for trust at the root domain (not recommended) with rkt-kvm trust --root PUBKEY");
        if (prefix != "" && root) throw new UsageException("--root and --prefix usage mutually exclusive");
        if (root && args.Positional.Count == 0) throw new UsageException("--root needs a key file or URL: root keys are never discovered");
        var parsed = root ? null : TrustPrefix.Parse(prefix);

        var trust = new KeyTrust(context.TrustedKeys, context.RemoteOptions(), context.KeyReview)
        {
            AllowHttp = args.Bool("insecure-allow-http"), TrustKeysFromHttps = context.TrustKeysFromHttps,
        };
        var locations = args.Positional.Count > 0 ? args.Positional : trust.Discover(parsed!);
        trust.Add(locations, parsed, ask: !args.Bool("skip-fingerprint-review"));
        return 0;
    }
}

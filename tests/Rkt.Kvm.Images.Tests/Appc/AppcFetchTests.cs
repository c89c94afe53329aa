using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Builders;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests.Appc;

/// <summary>
/// <c>rkt-kvm fetch example.com/app:v1</c> and <c>rkt-kvm trust</c> through the real command table,
/// against an HTTPS server on 127.0.0.1 that plays example.com (a test CA, trusted only by these
/// fetches): discovery, the ACI and its signature, keys. A refusal is one line naming the reason,
/// and leaves the image store empty.
/// </summary>
public sealed partial class AppcFetchTests : StoreTest, IDisposable
{
    private static readonly PgpTestKey Signer = new("Example Signer <signer@example.com>");
    private static readonly PgpTestKey Stranger = new("Stranger <stranger@example.net>");
    private const string Template = "https://example.com/aci/{name}-{version}-{os}-{arch}.{ext}";
    private const string AciPath = "/aci/example.com/app-v1-linux-amd64.aci";
    private readonly TestCa _ca = new("example.com", "other.example");
    private readonly AppcServer _server;
    private readonly byte[] _aci;

    public AppcFetchTests()
    {
        _server = new AppcServer(_ca);
        _aci = Aci("example.com/app", "v1");
        _server.PutDiscovery("/app", ("ac-discovery", $"example.com/app {Template}"));
        Publish(_aci, Signer.Sign(_aci));
    }

    public new void Dispose()
    {
        _server.Dispose();
        _ca.Dispose();
        base.Dispose();
    }

    /// <summary>An ACI of <paramref name="files"/> (path → content; by default /hello), its manifest
    /// changed by <paramref name="edit"/> (dependencies, a path whitelist).</summary>
    private byte[] Aci(string name, string version, Action<System.Text.Json.Nodes.JsonObject>? edit = null, params (string Path, string Content)[] files)
    {
        var rootfs = _tmp.Dir($"rootfs-{Guid.NewGuid():N}");
        foreach (var (path, content) in files.Length == 0 ? [("hello", "hello\n")] : files)
        {
            var full = Path.Join(rootfs, path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, content);
        }
        var file = _tmp[$"{Guid.NewGuid():N}.aci"];
        var manifest = AciWriter.Manifest(name, ["/hello"], new Dictionary<string, string> { ["version"] = version });
        edit?.Invoke(manifest);
        AciWriter.Write(file, manifest, rootfs);
        return File.ReadAllBytes(file);
    }

    private void Publish(byte[] aci, byte[] signature)
    {
        _server.Put(AciPath, aci);
        _server.Put(AciPath + ".asc", signature);
    }

    private (int Rc, string Out, string Err) Cli(string[] args, string? terminal = null, TestNetwork? network = null)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = CommandTable.Run(["--dir", _tmp["data"], "--local-config", _tmp.Dir("etc-rkt"), "--system-config", _tmp.Dir("usr-lib-rkt"), .. args],
            stdout, stderr, stderrIsTerminal: false, terminal is null ? null : new StringReader(terminal), network ?? _server.Network);
        return (rc, stdout.ToString(), stderr.ToString());
    }

    private (int Rc, string Out, string Err) Cli(params string[] args) => Cli(args, null, null);

    private string KeyFile(PgpTestKey key)
    {
        var path = _tmp[$"{key.Fingerprint}.asc"];
        File.WriteAllBytes(path, key.ArmoredPublic());
        return path;
    }

    private void Trust(PgpTestKey key, string prefix = "example.com/app")
    {
        var (rc, _, err) = Cli("trust", "--prefix", prefix, "--skip-fingerprint-review", KeyFile(key));
        Assert.True(rc == 0, err);
    }

    private string TrustedKeyPath(PgpTestKey key, string prefix = "example.com/app") =>
        Path.Join(_tmp["etc-rkt"], "trustedkeys", "prefix.d", prefix, key.Fingerprint);

    /// <summary>The fetch fails with exit 254 and one line containing <paramref name="expected"/>; the store holds nothing.</summary>
    private void Refused(string expected, params string[] flags) => FetchRefused("example.com/app:v1", expected, flags);

    /// <summary>The plain progress lines off a terminal: one per download and per import.</summary>
    internal static bool IsProgress(string line) =>
        line.StartsWith("importing ", StringComparison.Ordinal) || line.StartsWith("downloading ", StringComparison.Ordinal);

    [Fact]
    public void A_signed_image_is_discovered_verified_fetched_and_listed()
    {
        var (rc, stdout, err) = Cli("trust", "--prefix", "example.com/app", "--skip-fingerprint-review", KeyFile(Signer));
        Assert.True(rc == 0, err);
        Assert.Contains($"Trusting \"{KeyFile(Signer)}\" for prefix \"example.com/app\" without fingerprint review.", stdout);
        Assert.Contains($"Added key for prefix \"example.com/app\" at \"{TrustedKeyPath(Signer)}\"", stdout);
        Assert.Equal(Signer.ArmoredPublic(), File.ReadAllBytes(TrustedKeyPath(Signer)));

        (rc, stdout, err) = Cli("fetch", "example.com/app:v1");
        Assert.True(rc == 0, err);
        Assert.Matches("^sha512-[0-9a-f]{128}$", stdout.Trim());
        Assert.Contains("signature verified: Example Signer <signer@example.com>", err);
        var image = Assert.Single(_store.Store.List());
        Assert.Equal("example.com/app", image.Name);
        Assert.Equal("https://example.com" + AciPath, image.Remote); // rkt's remote: the URL discovery gave
        Assert.Contains("example.com/app:v1", Cli("image", "list").Out);
        Assert.Equal("hello\n", File.ReadAllText(Path.Join(_store.Render(image, _tmp["tree"]), "hello")));
        Assert.All(_server.Requests, r => Assert.EndsWith("host=example.com", r));

        // --pull-policy=new finds it in the store by name and labels: nothing is asked of the server.
        int before = _server.Requests.Count;
        (rc, stdout, _) = Cli("fetch", "--pull-policy=new", "example.com/app:v1");
        Assert.Equal(0, rc);
        Assert.Equal(image.Id, stdout.Trim());
        Assert.Equal(before, _server.Requests.Count);
    }

    [Fact]
    public void Without_a_trusted_key_the_image_is_refused() =>
        Refused("no key is trusted for image example.com/app: trust its signer with `rkt-kvm trust --prefix example.com/app`");

    [Fact]
    public void A_signature_by_an_untrusted_key_is_refused()
    {
        Trust(Stranger);
        Refused("is signed by key");
        Refused("which is not trusted for example.com/app");
    }

    [Fact]
    public void A_tampered_image_is_refused()
    {
        Trust(Signer);
        var tampered = (byte[])_aci.Clone();
        tampered[tampered.Length / 2] ^= 1;
        Publish(tampered, Signer.Sign(_aci));
        Refused("does not match it: the image or its signature was altered");
    }

    [Fact]
    public void A_tampered_signature_is_refused()
    {
        Trust(Signer);
        var signature = Signer.Sign(_aci, armored: false);
        signature[^3] ^= 0x40;
        Publish(_aci, signature);
        Refused("does not match it: the image or its signature was altered");
    }

    [Fact]
    public void A_signature_by_an_expired_key_is_refused()
    {
        var expired = new PgpTestKey("Old <old@example.com>", created: DateTime.UtcNow.AddDays(-30), validFor: TimeSpan.FromDays(1));
        Trust(expired);
        Publish(_aci, expired.Sign(_aci));
        Refused("which expired on");
    }

    [Fact]
    public void A_signature_by_a_revoked_key_is_refused()
    {
        var key = new PgpTestKey("Revoked <revoked@example.com>");
        Publish(_aci, key.Sign(_aci));
        key.Revoke();
        Trust(key);
        Refused("which has been revoked");
    }

    [Fact]
    public void An_image_named_otherwise_than_asked_is_refused_even_when_signed_by_a_trusted_key()
    {
        Trust(Signer);
        var other = Aci("example.com/other", "v1");
        Publish(other, Signer.Sign(other));
        Refused("the image is named \"example.com/other\", but \"example.com/app\" was asked for");
    }

    [Fact]
    public void A_missing_signature_is_refused()
    {
        Trust(Signer);
        _server.Remove(AciPath + ".asc");
        Refused(".aci.asc answered 404");
        Assert.Equal(0, _server.Count(AciPath + " ")); // the image itself was never downloaded
    }

    [Fact]
    public void Insecure_options_image_skips_the_signature_with_rkts_warning()
    {
        var (rc, stdout, err) = Cli("--insecure-options=image", "fetch", "example.com/app:v1");
        Assert.True(rc == 0, err);
        Assert.Contains("warning: image signature verification has been disabled", err);
        Assert.Equal(0, _server.Count(AciPath + ".asc"));
        Assert.Equal(stdout.Trim(), Assert.Single(_store.Store.List()).Id);
    }

    [Fact]
    public void Discovery_walks_up_the_name_to_the_host()
    {
        Trust(Signer, "example.com");
        _server.Remove("/app?ac-discovery=1");
        _server.PutDiscovery("/", ("ac-discovery", "example.com https://example.com/aci/{name}-{version}-{os}-{arch}.{ext}"));
        var aci = Aci("example.com/team/app", "v1");
        _server.Put("/aci/example.com/team/app-v1-linux-amd64.aci", aci);
        _server.Put("/aci/example.com/team/app-v1-linux-amd64.aci.asc", Signer.Sign(aci));
        var (rc, _, err) = Cli("fetch", "example.com/team/app:v1");
        Assert.True(rc == 0, err);
        Assert.Equal(1, _server.Count("/team/app?ac-discovery=1"));
        Assert.Equal(1, _server.Count("/team?ac-discovery=1"));
        Assert.Equal("example.com/team/app", Assert.Single(_store.Store.List()).Name);
    }

    [Fact]
    public void A_name_nobody_describes_fails_discovery_saying_where_it_looked()
    {
        var (rc, _, err) = Cli("fetch", "example.com/nothing/here:v1");
        Assert.Equal(254, rc);
        Assert.True(err.Contains("discovery failed for example.com/nothing/here:v1: example.com/nothing/here:"), err);
        Assert.Contains("example.com: discovery: https://example.com/?… answered 404", err);
        _store.AssertEmpty();
    }

    [Fact]
    public void A_server_certificate_no_trusted_ca_issued_is_refused_unless_tls_checks_are_off()
    {
        Trust(Signer);
        var (rc, _, err) = Cli(["fetch", "example.com/app:v1"], network: _server.UntrustedNetwork);
        Assert.Equal(254, rc);
        Assert.Contains("TLS with example.com failed", err);
        _store.AssertEmpty();

        (rc, _, err) = Cli(["--insecure-options=tls", "fetch", "example.com/app:v1"], network: _server.UntrustedNetwork);
        Assert.True(rc == 0, err);
        Assert.Contains("warning: TLS verification has been disabled", err);
        Assert.Single(_store.Store.List());
    }

    [Fact]
    public void Trust_asks_on_a_terminal_in_rkts_words()
    {
        _server.Put("/keys/signer.asc", Signer.ArmoredPublic());
        var (rc, stdout, err) = Cli(["trust", "--prefix", "example.com/app", "https://example.com/keys/signer.asc"], terminal: "maybe\nyes\n");
        Assert.True(rc == 0, err);
        Assert.Contains("rkt-kvm: prefix: \"example.com/app\"", err);
        Assert.Contains("rkt-kvm: key: \"https://example.com/keys/signer.asc\"", err);
        Assert.Contains($"gpg key fingerprint is: {Images.Trust.PublicKeyFile.Parse(Signer.ArmoredPublic(), "k").DisplayFingerprint}", stdout);
        Assert.Contains("\tExample Signer <signer@example.com>", stdout);
        Assert.Contains("Are you sure you want to trust this key (yes/no)?", stdout);
        Assert.Contains("Please enter 'yes' or 'no'", stdout);
        Assert.Contains("for prefix \"example.com/app\" after fingerprint review.", stdout);
        Assert.True(File.Exists(TrustedKeyPath(Signer)));
    }

    [Fact]
    public void A_key_declined_or_not_reviewable_is_not_trusted()
    {
        var (rc, _, err) = Cli(["trust", "--prefix", "example.com/app", KeyFile(Signer)], terminal: "no\n");
        Assert.Equal(0, rc);
        Assert.Contains($"not trusting \"{KeyFile(Signer)}\"", err);
        (rc, _, err) = Cli("trust", "--prefix", "example.com/app", KeyFile(Signer));
        Assert.Equal(254, rc);
        Assert.EndsWith("rkt-kvm: error reviewing key: unable to ask user to review fingerprint due to lack of tty\n", err);
        Assert.False(Directory.Exists(Path.Join(_tmp["etc-rkt"], "trustedkeys", "prefix.d", "example.com", "app")) &&
                     Directory.EnumerateFiles(Path.Join(_tmp["etc-rkt"], "trustedkeys", "prefix.d", "example.com", "app")).Any());
    }

    [Fact]
    public void Trust_with_only_a_prefix_discovers_the_keys()
    {
        _server.PutDiscovery("/app", ("ac-discovery-pubkeys", "example.com/app https://example.com/keys/signer.asc"));
        _server.Put("/keys/signer.asc", Signer.ArmoredPublic());
        var (rc, _, err) = Cli("trust", "--prefix", "example.com/app", "--skip-fingerprint-review");
        Assert.True(rc == 0, err);
        Assert.True(File.Exists(TrustedKeyPath(Signer)));
    }

    [Fact]
    public void A_fetch_with_no_key_for_the_name_trusts_discovered_keys_from_https_when_told_to()
    {
        _server.PutDiscovery("/app", ("ac-discovery", $"example.com/app {Template}"), ("ac-discovery-pubkeys", "example.com/app https://example.com/keys/signer.asc"));
        _server.Put("/keys/signer.asc", Signer.ArmoredPublic());
        var (rc, stdout, err) = Cli("--trust-keys-from-https", "fetch", "example.com/app:v1");
        Assert.True(rc == 0, err);
        Assert.Contains("without fingerprint review", stdout);
        Assert.True(File.Exists(TrustedKeyPath(Signer)));
        Assert.Single(_store.Store.List());
    }

    [Theory]
    [InlineData(new[] { "trust", "key.asc" }, "aborting due to implicit unbounded trust")]
    [InlineData(new[] { "trust", "--root", "--prefix", "example.com/app", "key.asc" }, "--root and --prefix usage mutually exclusive")]
    [InlineData(new[] { "trust", "--prefix", "https://example.com/app", "key.asc" }, "--prefix must not contain a URL scheme, omit https://")]
    [InlineData(new[] { "trust", "--prefix", "example.com/app", "http://example.com/key.asc" }, "--insecure-allow-http required for http URLs")]
    [InlineData(new[] { "trust", "--prefix", "example.com/app", "ftp://example.com/key.asc" }, "only local files and http or https URLs supported")]
    [InlineData(new[] { "trust", "--root" }, "--root needs a key file or URL")]
    public void Trust_refuses_what_rkt_refuses(string[] args, string expected)
    {
        var (rc, _, err) = Cli(args);
        Assert.Equal(254, rc);
        Assert.Contains(expected, Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public void Run_and_app_add_fetch_a_name_the_store_lacks_on_demand()
    {
        Trust(Signer);
        var context = new CommandContext(_tmp["data"], TextWriter.Null, new StringWriter(), false, _tmp["etc-rkt"])
        {
            SystemConfig = _tmp["usr-lib-rkt"], TestNetwork = _server.Network,
        };
        // What run and app add call for each image, with their default pull policy (new).
        var image = RegistryImages.Find(context, "example.com/app:v1", InsecureOptions.None, PullPolicy.New, quiet: true);
        Assert.Equal("example.com/app", image.Name);
        int before = _server.Requests.Count;
        Assert.Equal(image.Id, RegistryImages.Find(context, "example.com/app:v1", InsecureOptions.None, PullPolicy.New, quiet: true).Id);
        Assert.Equal(before, _server.Requests.Count);
        var e = Assert.Throws<ImageException>(() => RegistryImages.Find(context, "example.com/app:v2", InsecureOptions.None, PullPolicy.Never, quiet: true));
        Assert.Contains("--pull-policy=never", e.Message);
    }
}

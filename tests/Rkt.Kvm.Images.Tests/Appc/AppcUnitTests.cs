using Rkt.Kvm.Images.Appc;
using Rkt.Kvm.Images.Tests.Support;
using Rkt.Kvm.Images.Trust;

namespace Rkt.Kvm.Images.Tests.Appc;

/// <summary>The pure parts of appc fetching and trust: names, templates, meta tags, trust prefixes
/// and the key store's lookup rules. No network.</summary>
public sealed class AppcUnitTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private static AppImageName Name(string text) => AppImageName.Parse(text);

    [Fact]
    public void An_image_name_takes_its_version_after_a_colon_and_labels_after_commas()
    {
        var app = Name("example.com/app:v1.2,channel=beta");
        Assert.Equal("example.com/app", app.Name);
        Assert.Equal("v1.2", app.Labels["version"]);
        Assert.Equal("beta", app.Labels["channel"]);
        Assert.Empty(Name("example.com/app").Labels);
        Assert.Equal("a b/c", Name("example.com/app,version=a+b%2Fc").Labels["version"]);
    }

    [Theory]
    [InlineData("Example.com/app", "not an AC identifier")]
    [InlineData("example.com//app", "not an AC identifier")]
    [InlineData("example.com/app:v1,version=v2", "given twice")]
    [InlineData("example.com/app,Bad=1", "label name")]
    public void Bad_image_names_are_refused_saying_why(string text, string why)
    {
        var e = Assert.Throws<ImageException>(() => Name(text));
        Assert.Contains(why, e.Message);
    }

    [Fact]
    public void Os_and_arch_default_to_linux_amd64_and_other_systems_are_refused()
    {
        var app = Name("example.com/app:v1").WithPlatformDefaults();
        Assert.Equal("example.com/app,arch=amd64,os=linux,version=v1", app.Canonical);
        Assert.Equal("aarch64", Name("example.com/app,arch=aarch64").WithPlatformDefaults().Labels["arch"]);
        Assert.Contains("not a platform", Assert.Throws<ImageException>(() => Name("example.com/app,os=freebsd").WithPlatformDefaults()).Message);
        Assert.True(app.MatchesLabels(new Dictionary<string, string> { ["version"] = "v1", ["os"] = "linux", ["arch"] = "amd64", ["extra"] = "x" }));
        Assert.False(app.MatchesLabels(new Dictionary<string, string> { ["version"] = "v2", ["os"] = "linux", ["arch"] = "amd64" }));
    }

    [Fact]
    public void Templates_expand_name_labels_and_ext_and_version_defaults_to_latest()
    {
        var app = Name("example.com/app,channel=beta").WithPlatformDefaults();
        var (aci, asc) = DiscoveryTemplate.Render("https://example.com/{name}-{version}-{os}-{arch}-{channel}.{ext}", app)!.Value;
        Assert.Equal("https://example.com/example.com/app-latest-linux-amd64-beta.aci", aci);
        Assert.Equal("https://example.com/example.com/app-latest-linux-amd64-beta.aci.asc", asc);
    }

    [Fact]
    public void A_template_naming_a_label_the_image_lacks_does_not_fit()
    {
        Assert.Null(DiscoveryTemplate.Render("https://example.com/{name}-{channel}.{ext}", Name("example.com/app")));
        Assert.Null(DiscoveryTemplate.Render("https://example.com/{}.{ext}", Name("example.com/app")));
    }

    [Fact]
    public void A_label_value_is_not_read_as_a_template()
    {
        var (aci, _) = DiscoveryTemplate.Render("https://h/{version}/{os}.{ext}", Name("example.com/app:{os}").WithPlatformDefaults())!.Value;
        Assert.Equal("https://h/{os}/linux.aci", aci);
    }

    [Fact]
    public void Meta_tags_are_read_in_any_case_and_quoting_with_entities_decoded()
    {
        var metas = DiscoveryMeta.Parse("""
            <html><HEAD>
            <META NAME="ac-discovery" CONTENT="example.com https://example.com/{name}.{ext}?a=1&amp;b=2">
            <meta content='example.com/app  https://keys.example.com/pub.gpg ' name='ac-discovery-pubkeys'/>
            <meta name=ac-discovery content="example.com/x">
            <meta name="description" content="example.com not-ac">
            <meta name="ac-discovery" name="ac-other" content="example.com https://last-name-wins">
            </head></html>
            """);
        Assert.Equal(3, metas.Count);
        Assert.Equal(new DiscoveryMeta("ac-discovery", "example.com", "https://example.com/{name}.{ext}?a=1&b=2"), metas[0]);
        Assert.Equal(new DiscoveryMeta("ac-discovery-pubkeys", "example.com/app", "https://keys.example.com/pub.gpg"), metas[1]);
        Assert.Equal("ac-other", metas[2].Name);
    }

    [Fact]
    public void Meta_tags_in_comments_scripts_and_titles_do_not_count()
    {
        var metas = DiscoveryMeta.Parse("""
            <!-- <meta name="ac-discovery" content="example.com https://comment"> -->
            <script>var s = '<meta name="ac-discovery" content="example.com https://script">';</script>
            <title><meta name="ac-discovery" content="example.com https://title"></title>
            <meta name="ac-discovery" content="example.com https://real">
            <style>
            """);
        Assert.Equal("https://real", Assert.Single(metas).Uri);
    }

    [Fact]
    public void Broken_html_ends_the_scan_without_an_error()
    {
        Assert.Empty(DiscoveryMeta.Parse("<meta name=\"ac-discovery\" content=\"example.com https://x"));
        Assert.Empty(DiscoveryMeta.Parse("<<<>>>< = / <meta <!-- "));
        Assert.Empty(DiscoveryMeta.Parse(""));
    }

    [Theory]
    [InlineData("example.com/app", "example.com/app")]
    [InlineData("example.com/app/*", "example.com/app")]
    public void A_trust_prefix_is_an_ac_identifier(string given, string parsed) => Assert.Equal(parsed, TrustPrefix.Parse(given));

    [Theory]
    [InlineData("https://example.com/app", "must not contain a URL scheme, omit https://")]
    [InlineData("example.com/../etc", "is not an image name prefix")]
    [InlineData("/etc/rkt", "is not an image name prefix")]
    [InlineData("example.com/app/", "is not an image name prefix")]
    public void A_bad_trust_prefix_is_refused(string given, string why) =>
        Assert.Contains(why, Assert.Throws<ImageException>(() => TrustPrefix.Parse(given)).Message);

    [Fact]
    public void The_prefixes_covering_a_name_run_from_the_host_down()
    {
        Assert.Equal(["example.com", "example.com/team", "example.com/team/app"], TrustPrefix.Covering("example.com/team/app"));
    }

    private (TrustedKeyStore Store, string System, string Local) KeyStore() =>
        (new TrustedKeyStore(_tmp.Dir("system"), _tmp.Dir("local")), _tmp["system"], _tmp["local"]);

    private static PublicKeyFile Key(PgpTestKey key) => PublicKeyFile.Parse(key.ArmoredPublic(), "test key");

    [Fact]
    public void A_prefix_key_trusts_its_name_and_the_names_below_but_not_a_sibling()
    {
        var (store, _, local) = KeyStore();
        var key = new PgpTestKey("App <app@example.com>");
        var path = store.Add(Key(key), "example.com/app");
        Assert.Equal(Path.Join(local, "trustedkeys", "prefix.d", "example.com", "app", key.Fingerprint), path);
        Assert.Single(store.KeysFor("example.com/app"));
        Assert.Single(store.KeysFor("example.com/app/worker"));
        Assert.Empty(store.KeysFor("example.com/apple"));
        Assert.Empty(store.KeysFor("example.com"));
        Assert.True(store.HasPrefixKeys("example.com/app/worker"));
        Assert.False(store.HasPrefixKeys("example.com/apple"));
    }

    [Fact]
    public void A_root_key_trusts_every_name_but_is_no_prefix_key()
    {
        var (store, _, local) = KeyStore();
        var key = new PgpTestKey("Root <root@example.com>");
        Assert.Equal(Path.Join(local, "trustedkeys", "root.d", key.Fingerprint), store.Add(Key(key), null));
        Assert.Single(store.KeysFor("anything.org/at/all"));
        Assert.False(store.HasPrefixKeys("anything.org/at/all"));
    }

    [Fact]
    public void An_empty_local_file_masks_the_system_key_of_that_fingerprint()
    {
        var (store, system, local) = KeyStore();
        var key = new PgpTestKey("Vendor <vendor@example.com>");
        var systemDir = Directory.CreateDirectory(Path.Join(system, "trustedkeys", "prefix.d", "example.com")).FullName;
        File.WriteAllBytes(Path.Join(systemDir, key.Fingerprint), key.ArmoredPublic());
        Assert.Single(store.KeysFor("example.com/app"));
        var localDir = Directory.CreateDirectory(Path.Join(local, "trustedkeys", "prefix.d", "example.com")).FullName;
        File.WriteAllBytes(Path.Join(localDir, key.Fingerprint), []);
        Assert.Empty(store.KeysFor("example.com/app"));
    }

    [Fact]
    public void A_key_file_named_for_another_fingerprint_is_an_error()
    {
        var (store, _, local) = KeyStore();
        var dir = Directory.CreateDirectory(Path.Join(local, "trustedkeys", "root.d")).FullName;
        File.WriteAllBytes(Path.Join(dir, new string('0', 40)), new PgpTestKey("X <x@example.com>").ArmoredPublic());
        Assert.Contains("is named for another key", Assert.Throws<ImageException>(() => store.KeysFor("example.com/app")).Message);
    }

    [Fact]
    public void A_key_is_shown_as_rkt_shows_it()
    {
        var key = new PgpTestKey("Signer <signer@example.com>");
        var file = Key(key);
        Assert.Equal(key.Fingerprint, file.Fingerprint);
        Assert.Matches("^([0-9A-F]{4} ){4}[0-9A-F]{4}  ([0-9A-F]{4} ){4}[0-9A-F]{4}$", file.DisplayFingerprint);
        Assert.Equal(["Signer <signer@example.com>"], file.UserIds);
        Assert.Contains("not an OpenPGP public key", Assert.Throws<ImageException>(() => PublicKeyFile.Parse("hello"u8.ToArray(), "k")).Message);
    }
}

using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests.Registry;

/// <summary>The pure pieces of the registry client: reference rules, challenges, auth files, options.</summary>
public sealed class RegistryUnitTests
{
    [Theory]
    [InlineData("docker://busybox", "registry-1.docker.io", "library/busybox", "latest", "registry-1.docker.io/library/busybox:latest")]
    [InlineData("docker://redis:4.0.6", "registry-1.docker.io", "library/redis", "4.0.6", "registry-1.docker.io/library/redis:4.0.6")]
    [InlineData("docker://docker.io/redis", "registry-1.docker.io", "library/redis", "latest", "registry-1.docker.io/library/redis:latest")]
    [InlineData("docker://index.docker.io/library/redis", "registry-1.docker.io", "library/redis", "latest", "registry-1.docker.io/library/redis:latest")]
    [InlineData("docker://someuser/app:v1", "registry-1.docker.io", "someuser/app", "v1", "registry-1.docker.io/someuser/app:v1")]
    [InlineData("docker://localhost:5000/x", "localhost:5000", "x", "latest", "localhost:5000/x:latest")]
    [InlineData("docker://localhost/x/y", "localhost", "x/y", "latest", "localhost/x/y:latest")]
    [InlineData("docker://127.0.0.1:5000/a/b-c_d.e:1.2_3", "127.0.0.1:5000", "a/b-c_d.e", "1.2_3", "127.0.0.1:5000/a/b-c_d.e:1.2_3")]
    [InlineData("docker://quay.io/coreos/etcd:v3.5.0", "quay.io", "coreos/etcd", "v3.5.0", "quay.io/coreos/etcd:v3.5.0")]
    [InlineData("oci://ghcr.io/o/r:t", "ghcr.io", "o/r", "t", "ghcr.io/o/r:t")]
    public void References_follow_docker_hub_rules(string text, string registry, string repository, string tag, string canonical)
    {
        var r = ImageReference.Parse(text);
        Assert.Equal(registry, r.Registry);
        Assert.Equal(repository, r.Repository);
        Assert.Equal(tag, r.Tag);
        Assert.Null(r.Digest);
        Assert.Equal(canonical, r.Canonical);
        Assert.Equal(tag, r.ManifestReference);
    }

    [Theory]
    [InlineData("docker://busybox", "registry-1.docker.io/library/busybox")]
    [InlineData("docker://127.0.0.1:5000/team/app:v1", "127.0.0.1_5000/team/app")]
    [InlineData("docker://Localhost:5000/a__b--c", "localhost_5000/a_b-c")]
    public void The_appc_name_is_docker2acis(string text, string name) => Assert.Equal(name, ImageReference.Parse(text).AppcName);

    [Fact]
    public void A_digest_pins_the_manifest()
    {
        var hex = new string('a', 64);
        var r = ImageReference.Parse($"docker://busybox@sha256:{hex}");
        Assert.Null(r.Tag);
        Assert.Equal($"sha256:{hex}", r.ManifestReference);
        Assert.Equal($"registry-1.docker.io/library/busybox@sha256:{hex}", r.Canonical);
        var both = ImageReference.Parse($"docker://localhost:5000/x:1@sha256:{hex}");
        Assert.Equal("1", both.Tag);
        Assert.Equal($"sha256:{hex}", both.ManifestReference); // the digest wins over the tag
    }

    [Theory]
    [InlineData("busybox")] // no scheme
    [InlineData("http://busybox")]
    [InlineData("docker://")]
    [InlineData("docker://Busybox")]
    [InlineData("docker://busybox:")]
    [InlineData("docker://busybox:-bad")]
    [InlineData("docker://busybox@sha256:abc")]
    [InlineData("docker://busybox@md5:d41d8cd98f00b204e9800998ecf8427e")]
    [InlineData("docker://busybox@sha256:../../../../etc/passwd")]
    [InlineData("docker://x/../y")]
    [InlineData("docker://localhost:5000/")]
    [InlineData("docker://a//b")]
    [InlineData("docker://-host.com/x")]
    [InlineData("docker://my_host.com/x")]
    [InlineData("docker://x y")]
    [InlineData("docker://localhost:99999/x")]
    [InlineData("docker://[zz::1]:5000/x")]
    public void Bad_references_are_refused_in_one_sentence(string text)
    {
        var e = Assert.Throws<ImageException>(() => ImageReference.Parse(text));
        Assert.StartsWith($"invalid image reference \"{text}\"", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Over_long_names_are_refused()
    {
        var e = Assert.Throws<ImageException>(() => ImageReference.Parse("docker://localhost/" + new string('a', 300)));
        Assert.Contains("longer than 255", e.Message);
    }

    [Fact]
    public void Challenges_are_parsed_with_quotes_and_commas()
    {
        var c = AuthChallenge.TryParse("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/a:pull,push\"")!;
        Assert.True(c.IsBearer);
        Assert.Equal("https://auth.docker.io/token", c.Realm);
        Assert.Equal("registry.docker.io", c.Service);
        Assert.Equal("repository:library/a:pull,push", c.Scope);
        var b = AuthChallenge.TryParse("Basic realm=\"Registry \\\"Realm\\\"\"")!;
        Assert.True(b.IsBasic);
        Assert.Equal("Registry \"Realm\"", b.Realm);
        Assert.Null(AuthChallenge.TryParse(""));
    }

    [Fact]
    public void Auth_files_are_read_as_rkt_reads_them_local_over_system()
    {
        using var tmp = new TempDir();
        var system = tmp.Dir("system/auth.d");
        var local = tmp.Dir("local/auth.d");
        File.WriteAllText(Path.Join(system, "a.json"), """{"rktKind":"dockerAuth","rktVersion":"v1","registries":["quay.io","docker.io"],"credentials":{"user":"sys","password":"p1"}}""");
        File.WriteAllText(Path.Join(local, "b.json"), """{"rktKind":"dockerAuth","rktVersion":"v1","registries":["quay.io"],"credentials":{"user":"loc","password":"p2"}}""");
        File.WriteAllText(Path.Join(local, "http.json"), """{"rktKind":"auth","rktVersion":"v1","domains":["example.com"],"type":"basic","credentials":{"user":"u","password":"p"}}""");
        var config = AuthConfig.Load(tmp["system"], tmp["local"]);
        Assert.Equal("loc", config.For("quay.io")!.User);
        Assert.Equal("sys", config.For(ImageReference.DockerHub)!.User);
        Assert.Null(config.For("example.com"));
        Assert.DoesNotContain("p2", config.For("quay.io")!.ToString());

        Assert.Equal("Basic dTpw", config.HeaderFor(new Uri("https://example.com/app?ac-discovery=1"), InsecureOptions.None)!.ToString());

        File.WriteAllText(Path.Join(local, "c.json"), "{not json");
        Assert.Contains("c.json is not valid JSON", Assert.Throws<ImageException>(() => AuthConfig.Load(tmp["local"])).Message);
    }

    [Fact]
    public void Insecure_options_and_pull_policy_take_rkt_names()
    {
        Assert.Equal(InsecureOptions.Image | InsecureOptions.Http, InsecureOptionsParser.Parse("image,http"));
        Assert.True(InsecureOptionsParser.Parse("all-fetch").HasFlag(InsecureOptions.Tls));
        Assert.Equal(InsecureOptions.None, InsecureOptionsParser.Parse(null));
        Assert.Contains("unknown option \"bogus\"", Assert.Throws<ImageException>(() => InsecureOptionsParser.Parse("image,bogus")).Message);
        Assert.Equal(PullPolicy.Never, PullPolicyParser.Parse("never", PullPolicy.New));
        Assert.Equal(PullPolicy.Update, PullPolicyParser.Parse(null, PullPolicy.Update));
        Assert.Throws<ImageException>(() => PullPolicyParser.Parse("always", PullPolicy.New));
    }

    [Fact]
    public void Auth_files_of_kind_auth_give_each_domain_its_header_over_https_only()
    {
        using var tmp = new TempDir();
        var system = tmp.Dir("system/auth.d");
        var local = tmp.Dir("local/auth.d");
        File.WriteAllText(Path.Join(system, "a.json"), """{"rktKind":"auth","rktVersion":"v1","domains":["example.com","example.org"],"type":"basic","credentials":{"user":"sys","password":"p1"}}""");
        File.WriteAllText(Path.Join(local, "b.json"), """{"rktKind":"auth","rktVersion":"v1","domains":["example.org","example.net:8443"],"type":"oauth","credentials":{"token":"t0k"}}""");
        var config = AuthConfig.Load(tmp["system"], tmp["local"]);
        string? Header(string url, InsecureOptions insecure = InsecureOptions.None) => config.HeaderFor(new Uri(url), insecure)?.ToString();

        Assert.Equal("Basic c3lzOnAx", Header("https://example.com/x.aci"));
        Assert.Equal("Basic c3lzOnAx", Header("https://EXAMPLE.com:443/x.aci")); // the default port is the host
        Assert.Equal("Bearer t0k", Header("https://example.org/x.aci")); // local over system
        Assert.Equal("Bearer t0k", Header("https://example.net:8443/x"));
        Assert.Null(Header("https://example.net/x")); // another port, another host
        Assert.Null(Header("https://www.example.com/x")); // exact domains, no subdomains
        Assert.Null(Header("http://example.com/x")); // never in the clear...
        Assert.Equal("Basic c3lzOnAx", Header("http://example.com/x", InsecureOptions.Http)); // ...unless allowed
        Assert.Null(config.For("example.com")); // not a registry's credentials
        Assert.DoesNotContain("t0k", HostCredentials.Bearer("t0k").ToString());
    }

    [Theory]
    [InlineData("""{"rktKind":"auth","rktVersion":"v1","domains":["a.example"],"type":"digest","credentials":{}}""", "unknown type \"digest\"")]
    [InlineData("""{"rktKind":"auth","rktVersion":"v1","domains":["a.example"],"credentials":{"user":"u","password":"p"}}""", "has no type")]
    [InlineData("""{"rktKind":"auth","rktVersion":"v1","domains":[],"type":"basic","credentials":{"user":"u","password":"p"}}""", "names no domains")]
    [InlineData("""{"rktKind":"auth","rktVersion":"v1","domains":["a.example"],"type":"oauth","credentials":{}}""", "no credentials token")]
    [InlineData("""{"rktKind":"auth","rktVersion":"v1","domains":["a.example"],"type":"basic","credentials":{"user":"u"}}""", "no credentials user and password")]
    [InlineData("""{"rktKind":"auth","rktVersion":"v1","domains":["taken.example"],"type":"oauth","credentials":{"token":"t"}}""", "which another file of")]
    public void Auth_files_rkt_refuses_are_refused(string json, string expected)
    {
        using var tmp = new TempDir();
        var dir = tmp.Dir("etc/auth.d");
        File.WriteAllText(Path.Join(dir, "a.json"), """{"rktKind":"auth","rktVersion":"v1","domains":["taken.example"],"type":"oauth","credentials":{"token":"t"}}""");
        File.WriteAllText(Path.Join(dir, "b.json"), json);
        Assert.Contains(expected, Assert.Throws<ImageException>(() => AuthConfig.Load(tmp["etc"])).Message);
    }
}

using System.Text.Json;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests.Registry;

/// <summary>
/// <c>rkt-kvm fetch docker://…</c> against a real registry (Debian's docker-registry on 127.0.0.1),
/// fed by skopeo or by the test's own pushes; every fetch goes through the real command table.
/// </summary>
public sealed class RegistryFetchTests : StoreTest
{
    private (int Rc, string Out, string Err) Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = CommandTable.Run(["--dir", _tmp["data"], "--local-config", _tmp.Dir("etc-rkt"), .. args], stdout, stderr, stderrIsTerminal: false);
        return (rc, stdout.ToString(), stderr.ToString());
    }

    private static IReadOnlyList<string> LayerDigests(string layout)
    {
        using var index = JsonDocument.Parse(File.ReadAllBytes(Path.Join(layout, "index.json")));
        var digest = index.RootElement.GetProperty("manifests")[0].GetProperty("digest").GetString()!;
        using var manifest = JsonDocument.Parse(File.ReadAllBytes(Path.Join(layout, "blobs", "sha256", digest[7..])));
        return manifest.RootElement.GetProperty("layers").EnumerateArray().Select(l => l.GetProperty("digest").GetString()!).ToList();
    }

    [Fact]
    public void Fetch_imports_an_image_and_a_second_fetch_downloads_no_blob()
    {
        using var registry = new RegistryServer(_tmp.Path);
        var layout = RegistryPush.Layout(_tmp, "small", "v1", layers: 2);
        RegistryPush.Skopeo(layout, "v1", $"{registry.Host}/test/small:v1");
        var image = $"docker://{registry.Host}/test/small:v1";

        var (rc, id, err) = Cli("--insecure-options=image,http", "fetch", image);
        Assert.True(rc == 0, err);
        id = id.Trim();
        Assert.Matches("^sha512-[0-9a-f]{128}$", id);
        Assert.Contains("downloading layer 1/2", err); // plain progress lines off a terminal
        Assert.Equal(2, registry.CountRequests("/blobs/sha256:") - 1); // two layers and the config
        var record = _store.Store.List().Single();
        Assert.Equal($"{registry.Host}/test/small:v1", record.Remote);
        Assert.Equal(LayerDigests(layout), record.Blobs);
        var tree = _store.Render(record, _tmp["tree"]);
        Assert.Equal(1000, new FileInfo(Path.Join(tree, "layer2.txt")).Length);
        var list = Cli("image", "list").Out;
        Assert.Contains($"127.0.0.1_{registry.Port}/test/small:v1", list);

        // Again, as fetch's default pull policy (update) does: the manifest is asked for, no blob.
        int blobGets = registry.CountRequests("/blobs/");
        var again = Cli("--insecure-options=image,http", "fetch", "--quiet", image);
        Assert.True(again.Rc == 0, again.Err);
        Assert.Equal(id, again.Out.Trim());
        Assert.Equal("", again.Err);
        Assert.Equal(blobGets, registry.CountRequests("/blobs/"));
        // --pull-policy=new finds it in the store without asking the registry at all.
        int manifestGets = registry.CountRequests("/manifests/");
        Assert.Equal(id, Cli("--insecure-options=image,http", "fetch", "--pull-policy=new", image).Out.Trim());
        Assert.Equal(manifestGets, registry.CountRequests("/manifests/"));
        Assert.Single(_store.Store.List());
    }

    [Fact]
    public void A_new_tag_sharing_layers_downloads_only_the_new_layer()
    {
        using var registry = new RegistryServer(_tmp.Path);
        var layout = RegistryPush.Layout(_tmp, "base", "v1", layers: 2);
        RegistryPush.Skopeo(layout, "v1", $"{registry.Host}/test/app:v1");
        Assert.Equal(0, Cli("--insecure-options=image,http", "fetch", $"docker://{registry.Host}/test/app:v1").Rc);
        // v2: the same two layers plus a third.
        var extraRoot = _tmp.Dir("extra");
        File.WriteAllText(Path.Join(extraRoot, "extra.txt"), "new\n");
        Tool.Run("tar", null, "-C", extraRoot, "-cf", _tmp["extra.tar"], ".");
        var v2 = OciBuilder.Build(_tmp["v2-oci"], "v2", _tmp["base-layer1.tar"], _tmp["base-layer2.tar"], _tmp["extra.tar"]);
        RegistryPush.Skopeo(v2, "v2", $"{registry.Host}/test/app:v2");
        int before = registry.CountRequests("/blobs/");
        var (rc, _, err) = Cli("--insecure-options=image,http", "fetch", $"docker://{registry.Host}/test/app:v2");
        Assert.True(rc == 0, err);
        Assert.Equal(before + 2, registry.CountRequests("/blobs/")); // its config and the new layer
        Assert.Equal(2, _store.Store.List().Count);
    }

    [Fact]
    public async Task A_multi_platform_index_gives_the_linux_amd64_image()
    {
        using var registry = new RegistryServer(_tmp.Path);
        var baseUrl = $"http://{registry.Host}";
        using var http = new HttpClient();
        var arm = await RegistryPush.LayoutImage(http, baseUrl, "test/multi", RegistryPush.Layout(_tmp, "arm", "x", layers: 1));
        var amdLayout = RegistryPush.Layout(_tmp, "amd", "x", layers: 1);
        var amd = await RegistryPush.LayoutImage(http, baseUrl, "test/multi", amdLayout);
        var index = RegistryPush.Index((arm.Digest, arm.Manifest.Length, "arm64"), (amd.Digest, amd.Manifest.Length, "amd64"));
        await RegistryPush.Manifest(http, baseUrl, "test/multi", "latest", index, "application/vnd.oci.image.index.v1+json");

        var (rc, _, err) = Cli("--insecure-options=image,http", "fetch", $"docker://{registry.Host}/test/multi");
        Assert.True(rc == 0, err);
        Assert.Equal(LayerDigests(amdLayout), _store.Store.List().Single().Blobs);
        // And by the index's digest: the same layers, none downloaded again (a second name for them).
        int blobGets = registry.CountRequests("/blobs/");
        var byDigest = Cli("--insecure-options=image,http", "fetch", $"docker://{registry.Host}/test/multi@{RegistryPush.Sha256(index)}");
        Assert.True(byDigest.Rc == 0, byDigest.Err);
        Assert.All(_store.Store.List(), i => Assert.Equal(LayerDigests(amdLayout), i.Blobs));
        Assert.Equal(blobGets + 1, registry.CountRequests("/blobs/")); // the config only
    }

    [Fact]
    public async Task Htpasswd_registry_needs_rkt_auth_credentials()
    {
        var htpasswd = _tmp["htpasswd"];
        File.WriteAllText(htpasswd, Tool.Run("htpasswd", null, "-Bbn", "alice", "s3cret"));
        using var registry = new RegistryServer(_tmp.Path, htpasswd);
        var layout = RegistryPush.Layout(_tmp, "private", "v1", layers: 1);
        RegistryPush.Skopeo(layout, "v1", $"{registry.Host}/team/private:v1", creds: "alice:s3cret");
        var image = $"docker://{registry.Host}/team/private:v1";

        var anonymous = Cli("--insecure-options=image,http", "fetch", image);
        Assert.Equal(254, anonymous.Rc);
        Assert.Contains("requires credentials", anonymous.Err);
        Assert.Contains("auth.d", anonymous.Err);

        var authDir = _tmp.Dir("etc-rkt/auth.d");
        File.WriteAllText(Path.Join(authDir, "wrong.json"),
            $$$"""{"rktKind":"dockerAuth","rktVersion":"v1","registries":["{{{registry.Host}}}"],"credentials":{"user":"alice","password":"wrong"}}""");
        var wrong = Cli("--insecure-options=image,http", "fetch", image);
        Assert.Equal(254, wrong.Rc);
        Assert.Contains("refused the configured credentials", wrong.Err);
        Assert.DoesNotContain("wrong", wrong.Err.Replace("wrong.json", ""));

        File.WriteAllText(Path.Join(authDir, "wrong.json"),
            $$$"""{"rktKind":"dockerAuth","rktVersion":"v1","registries":["{{{registry.Host}}}"],"credentials":{"user":"alice","password":"s3cret"}}""");
        // A real process: the --debug log goes to its own stderr (Serilog is process-wide).
        var (rc, id, err) = await CliProcess.Run("--dir", _tmp["data"], "--local-config", _tmp["etc-rkt"], "--insecure-options=image,http", "--debug", "fetch", image);
        Assert.True(rc == 0, err);
        Assert.DoesNotContain("s3cret", err); // --debug logs the exchanges, never the credentials
        Assert.DoesNotContain("YWxpY2U6czNjcmV0", err); // nor their base64
        Assert.Contains("(Authorization: Basic <redacted>)", err);
        Assert.Matches("^sha512-", id.Trim());
    }

    [Fact]
    public void Docker_images_need_insecure_image_and_plain_http_needs_insecure_http()
    {
        var noImage = Cli("fetch", "docker://127.0.0.1:1/x");
        Assert.Equal(254, noImage.Rc);
        Assert.Equal("rkt-kvm: signature verification for docker images is not supported (try --insecure-options=image)", noImage.Err.Trim());

        using var registry = new RegistryServer(_tmp.Path);
        var noHttp = Cli("--insecure-options=image", "fetch", $"docker://{registry.Host}/x:1");
        Assert.Equal(254, noHttp.Rc);
        Assert.Single(noHttp.Err.Trim().Split('\n'));

        var never = Cli("--insecure-options=image,http", "fetch", "--pull-policy=never", $"docker://{registry.Host}/x:1");
        Assert.Equal(254, never.Rc);
        Assert.Contains("--pull-policy=never", never.Err);

        var missing = Cli("--insecure-options=image,http", "fetch", $"docker://{registry.Host}/nothing/here:1");
        Assert.Equal(254, missing.Rc);
        Assert.Contains("not found", missing.Err);
        _store.AssertEmpty();
    }

    [Fact]
    public void A_tls_registry_with_a_self_signed_certificate_needs_insecure_tls()
    {
        using var registry = new RegistryServer(_tmp.Path, tls: TestCertificate.Write(_tmp.Dir("tls"), "registry.test"));
        var layout = RegistryPush.Layout(_tmp, "secure", "v1", layers: 1);
        RegistryPush.Skopeo(layout, "v1", $"{registry.Host}/test/secure:v1"); // --dest-tls-verify=false: https, unverified
        var image = $"docker://{registry.Host}/test/secure:v1";

        var untrusted = Cli("--insecure-options=image", "fetch", image);
        Assert.Equal(254, untrusted.Rc);
        Assert.Contains("TLS with", untrusted.Err);
        Assert.Contains("--insecure-options=tls", untrusted.Err);
        _store.AssertEmpty();

        var (rc, id, err) = Cli("--insecure-options=image,tls", "fetch", image);
        Assert.True(rc == 0, err);
        Assert.Matches("^sha512-", id.Trim());
    }

    [Fact]
    public async Task Https_proxy_carries_the_fetch_and_no_proxy_bypasses_it()
    {
        using var registry = new RegistryServer(_tmp.Path, tls: TestCertificate.Write(_tmp.Dir("tls"), "registry.test"));
        var layout = RegistryPush.Layout(_tmp, "proxied", "v1", layers: 1);
        RegistryPush.Skopeo(layout, "v1", $"{registry.Host}/test/proxied:v1");
        using var proxy = new ConnectProxy(registry.Port);
        var env = new Dictionary<string, string> { ["HTTPS_PROXY"] = $"http://127.0.0.1:{proxy.Port}", ["NO_PROXY"] = "" };

        // registry.test resolves nowhere: only the proxy can reach it (it tunnels to the test registry).
        var (rc, _, err) = await CliProcess.Run(env, "--dir", _tmp["data"], "--insecure-options=image,tls", "fetch", $"docker://registry.test:{registry.Port}/test/proxied:v1");
        Assert.True(rc == 0, err);
        Assert.Contains($"CONNECT registry.test:{registry.Port} HTTP/1.1", proxy.Connects);

        env["NO_PROXY"] = "127.0.0.1";
        int connects = proxy.Connects.Count;
        var direct = await CliProcess.Run(env, "--dir", _tmp["data2"], "--insecure-options=image,tls", "fetch", $"docker://{registry.Host}/test/proxied:v1");
        Assert.True(direct.Rc == 0, direct.Err);
        Assert.Equal(connects, proxy.Connects.Count);
    }
}

using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests.Appc;

/// <summary>
/// appc image dependencies: fetched with the image (discovery and signature, as any name), checked
/// against the imageID and size the image gives, and rendered below it as appc's acirenderer does.
/// A refusal is one line and leaves the store empty, whichever image of the graph it concerns.
/// </summary>
public sealed partial class AppcFetchTests
{
    /// <summary>A dependency entry naming <paramref name="name"/>:<paramref name="version"/>,
    /// with the ID and size of <paramref name="aci"/> when given.</summary>
    private static JsonObject Dependency(string name, string version, byte[]? aci = null, string? id = null, long? size = null)
    {
        var dep = new JsonObject
        {
            ["imageName"] = name,
            ["labels"] = new JsonArray(new JsonObject { ["name"] = "version", ["value"] = version }),
        };
        if (aci is not null) (id, size) = (IdOf(aci), TarLength(aci));
        if (id is not null) dep["imageID"] = id;
        if (size is not null) dep["size"] = size;
        return dep;
    }

    private static Action<JsonObject> DependsOn(params JsonObject[] deps) => m => m["dependencies"] = new JsonArray(deps);

    /// <summary>An ACI's image ID: the SHA-512 of its uncompressed tar, as rkt computes it.</summary>
    private static string IdOf(byte[] aci)
    {
        using var gzip = new GZipStream(new MemoryStream(aci), CompressionMode.Decompress);
        return "sha512-" + Convert.ToHexStringLower(SHA512.HashData(gzip));
    }

    private static long TarLength(byte[] aci)
    {
        using var gzip = new GZipStream(new MemoryStream(aci), CompressionMode.Decompress);
        var tar = new MemoryStream();
        gzip.CopyTo(tar);
        return tar.Length;
    }

    /// <summary>Serves <paramref name="aci"/> (signed by <see cref="Signer"/>) where discovery finds name:version.</summary>
    private void PublishImage(string name, string version, byte[] aci, byte[]? signature = null)
    {
        var path = $"/aci/{name}-{version}-linux-amd64.aci";
        _server.Put(path, aci);
        _server.Put(path + ".asc", signature ?? Signer.Sign(aci));
        _server.PutDiscovery(name["example.com".Length..], ("ac-discovery", $"{name} {Template}"));
    }

    private byte[] Base(string content = "base\n") => Aci("example.com/base", "v1", null, ("etc/base", content), ("shared", "from base\n"));

    [Fact]
    public void Dependencies_are_discovered_verified_checked_and_rendered_below_the_image()
    {
        Trust(Signer, "example.com");
        var baseAci = Base();
        PublishImage("example.com/base", "v1", baseAci);
        var app = Aci("example.com/app", "v1", DependsOn(Dependency("example.com/base", "v1", baseAci)), ("hello", "hello\n"), ("shared", "from app\n"));
        PublishImage("example.com/app", "v1", app);

        var (rc, stdout, err) = Cli("fetch", "example.com/app:v1");
        Assert.True(rc == 0, err);
        Assert.Equal(2, err.Split('\n').Count(l => l.StartsWith("rkt-kvm: signature verified:", StringComparison.Ordinal)));
        Assert.Equal(2, _store.Store.List().Count);
        var image = _store.Store.Resolve(stdout.Trim());
        Assert.Equal("example.com/app", image.Name);

        var tree = _store.Render(image, _tmp["tree"]);
        Assert.Equal("hello\n", File.ReadAllText(Path.Join(tree, "hello")));
        Assert.Equal("base\n", File.ReadAllText(Path.Join(tree, "etc/base")));
        Assert.Equal("from app\n", File.ReadAllText(Path.Join(tree, "shared"))); // the image's own files are on top

        // --pull-policy=new: both in the store, nothing asked of the server.
        int before = _server.Requests.Count;
        (rc, _, err) = Cli("fetch", "--pull-policy=new", "example.com/app:v1");
        Assert.True(rc == 0, err);
        Assert.Equal(before, _server.Requests.Count);
    }

    [Fact]
    public void A_dependency_whose_id_does_not_match_is_refused_and_nothing_is_stored()
    {
        Trust(Signer, "example.com");
        PublishImage("example.com/base", "v1", Base("another base\n"));
        PublishImage("example.com/app", "v1", Aci("example.com/app", "v1", DependsOn(Dependency("example.com/base", "v1", Base()))));
        FetchRefused("example.com/app:v1", "dependency example.com/base:v1 of example.com/app:v1: its image ID is sha512-");
    }

    [Fact]
    public void A_dependency_whose_size_does_not_match_is_refused()
    {
        Trust(Signer, "example.com");
        var baseAci = Base();
        PublishImage("example.com/base", "v1", baseAci);
        PublishImage("example.com/app", "v1", Aci("example.com/app", "v1", DependsOn(Dependency("example.com/base", "v1", size: TarLength(baseAci) + 512))));
        FetchRefused("example.com/app:v1", "bytes, but example.com/app:v1 asks for");
    }

    [Fact]
    public void A_dependency_cycle_is_refused_and_nothing_is_stored()
    {
        Trust(Signer, "example.com");
        PublishImage("example.com/base", "v1", Aci("example.com/base", "v1", DependsOn(Dependency("example.com/app", "v1"))));
        PublishImage("example.com/app", "v1", Aci("example.com/app", "v1", DependsOn(Dependency("example.com/base", "v1"))));
        FetchRefused("example.com/app:v1", "dependency cycle: example.com/app:v1 → example.com/base:v1 → example.com/app:v1");
    }

    [Fact]
    public void A_dependency_nobody_serves_or_signed_by_an_untrusted_key_is_refused()
    {
        Trust(Signer, "example.com/app");
        PublishImage("example.com/app", "v1", Aci("example.com/app", "v1", DependsOn(Dependency("example.com/base", "v1"))));
        FetchRefused("example.com/app:v1", "dependency example.com/base:v1 of example.com/app:v1: discovery failed for example.com/base:v1");

        var baseAci = Base();
        PublishImage("example.com/base", "v1", baseAci, Stranger.Sign(baseAci));
        FetchRefused("example.com/app:v1", "dependency example.com/base:v1 of example.com/app:v1: no key is trusted for image example.com/base");
    }

    [Fact]
    public void Rendering_follows_acirenderer_order_and_path_whitelists()
    {
        // app depends on b then c; c depends on d. acirenderer's list: app, c, d, b: a path comes
        // from the first that has it, so c's beats b's, and d's beats b's.
        var d = Aci("example.com/d", "v1", null, ("x", "d\n"), ("y", "d\n"), ("only-d", "d\n"));
        var c = Aci("example.com/c", "v1", DependsOn(Dependency("example.com/d", "v1")), ("x", "c\n"));
        var b = Aci("example.com/b", "v1", null, ("x", "b\n"), ("y", "b\n"), ("z", "b\n"), ("secret", "b\n"));
        var app = Aci("example.com/app", "v1", m =>
        {
            DependsOn(Dependency("example.com/b", "v1"), Dependency("example.com/c", "v1"))(m);
            m["pathWhitelist"] = new JsonArray("/hello", "/x", "/y", "/z", "/only-d");
        });
        foreach (var aci in new[] { d, c, b, app }) _store.Import(LocalAci(aci, null));
        var tree = _store.Render(_store.Store.Resolve("example.com/app"), _tmp["tree"]);
        Assert.Equal("hello\n", File.ReadAllText(Path.Join(tree, "hello")));
        Assert.Equal("c\n", File.ReadAllText(Path.Join(tree, "x")));
        Assert.Equal("d\n", File.ReadAllText(Path.Join(tree, "y")));
        Assert.Equal("b\n", File.ReadAllText(Path.Join(tree, "z")));
        Assert.Equal("d\n", File.ReadAllText(Path.Join(tree, "only-d")));
        Assert.False(File.Exists(Path.Join(tree, "secret"))); // not in the app's whitelist
        // The confined extraction rebuilds the entry filters from its plan: the same tree.
        var confined = new Images.Trees.TreeStore(new Images.Store.ImageStore(_store.Store.DataDir + "-confined") { Sandbox = Confined.Sandbox() });
        Directory.CreateDirectory(_store.Store.DataDir + "-confined");
        Tool.Run("cp", null, "-a", Path.Join(_store.Store.DataDir, "cas"), _store.Store.DataDir + "-confined/");
        confined.Export(_store.Store.Resolve("example.com/app"), _tmp["confined-tree"], Images.Trees.ExportMode.Hardlink, rootfsOnly: true);
        TreeSnapshot.Take(_tmp["confined-tree"], withDirTimes: false).AssertSameAs(TreeSnapshot.Take(tree, withDirTimes: false));
    }

    [Fact]
    public void Rendering_an_image_whose_dependency_is_missing_or_cyclic_names_it()
    {
        _store.Import(LocalAci(Aci("example.com/app", "v1", DependsOn(Dependency("example.com/base", "v1"))), null));
        var e = Assert.Throws<ImageException>(() => _store.Render(_store.Store.Resolve("example.com/app"), _tmp["tree"]));
        Assert.Contains("example.com/app:v1 depends on example.com/base:v1, which is not in the store", e.Message);

        _store.Import(LocalAci(Aci("example.com/base", "v1", DependsOn(Dependency("example.com/app", "v1"))), null));
        e = Assert.Throws<ImageException>(() => _store.Render(_store.Store.Resolve("example.com/app"), _tmp["tree2"]));
        Assert.Equal("dependency cycle: example.com/app:v1 → example.com/base:v1 → example.com/app:v1", e.Message);
    }
}

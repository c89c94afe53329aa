using System.Text.Json.Nodes;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Tests.Support;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Images.Tests;

/// <summary>The busybox image from Debian's busybox-static, as an actool-built ACI, a umoci OCI
/// layout and a skopeo docker-archive: imports, renders, and matches GNU tar's extraction.</summary>
public sealed class BusyboxImageTests : StoreTest
{

    [Fact]
    public void Aci_id_is_the_sha512_of_the_uncompressed_tar_and_render_matches_gnu_tar()
    {
        var aci = Fixtures.BusyboxAci(_tmp);
        var image = _store.Import(aci);

        var expectedId = "sha512-" + Tool.Shell($"gzip -dc '{aci}' | sha512sum").Split(' ')[0];
        Assert.Equal(expectedId, image.Id);
        Assert.Equal(Fixtures.AciName, image.Name);
        Assert.Equal("1.36", image.Labels["version"]);
        Assert.Equal("aci", image.Format);

        var gnu = _tmp.Dir("gnu");
        Tool.Run("tar", null, "-xpf", aci, "-C", gnu, "--same-owner");
        var ours = _store.Render(image, _tmp["ours"]);
        TreeSnapshot.Take(ours).AssertSameAs(TreeSnapshot.Take(Path.Join(gnu, "rootfs")));
        Assert.Equal(File.ReadAllText(Path.Join(gnu, "manifest")), System.Text.Encoding.UTF8.GetString(_store.Store.ReadManifest(image)));
    }

    [Fact]
    public void Oci_layout_renders_like_gnu_tar_extracting_its_layer()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var image = _store.Import(layout);
        Assert.Equal("oci", image.Format);

        var gnu = _tmp.Dir("gnu");
        foreach (var layer in Fixtures.LayerBlobs(layout, "1.36"))
            Tool.Run("tar", null, "-xzpf", layer, "-C", gnu, "--same-owner");
        var ours = _store.Render(image, _tmp["ours"]);
        // umoci writes the root itself as "/", which GNU tar skips: compare below the root.
        var snapshot = TreeSnapshot.Take(ours);
        snapshot.AssertSameAs(TreeSnapshot.Take(gnu));
        Assert.Contains("tmp/fifo", snapshot.Entries.Keys);
        Assert.StartsWith("fifo mode=644 owner=0:0", snapshot.Entries["tmp/fifo"]);
        Assert.Equal("dir mode=1777 owner=0:0", snapshot.Entries["tmp"][..23]);
        Assert.Contains("bin/busybox = sbin/init", snapshot.HardlinkGroups);
        Assert.Contains("mode=2755 owner=0:50", snapshot.Entries["srv/shared/inherits"]);
        Assert.Contains("mode=755 owner=0:0", snapshot.Entries["srv/shared/plain"]);
    }

    [Fact]
    public void Oci_config_becomes_the_appc_manifest_rkt_would_show()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var image = _store.Import(layout, new ImportOptions(Name: "example.com/busybox-oci"));
        var manifest = JsonNode.Parse(_store.Store.ReadManifest(image))!;

        Assert.Equal("ImageManifest", (string?)manifest["acKind"]);
        Assert.Equal("example.com/busybox-oci", (string?)manifest["name"]);
        var labels = manifest["labels"]!.AsArray().ToDictionary(l => (string)l!["name"]!, l => (string)l!["value"]!);
        Assert.Equal(new Dictionary<string, string> { ["version"] = "1.36", ["os"] = "linux", ["arch"] = "amd64" }, labels);
        var app = manifest["app"]!;
        Assert.Equal(["/bin/sh", "-c", "echo hi"], app["exec"]!.AsArray().Select(e => (string)e!).ToArray());
        Assert.Equal("1000", (string?)app["user"]);
        Assert.Equal("1000", (string?)app["group"]);
        Assert.Equal("/home/user", (string?)app["workingDirectory"]);
        Assert.Contains(app["environment"]!.AsArray(), e => (string?)e!["name"] == "GREETING" && (string?)e["value"] == "hello world");
        var port = app["ports"]!.AsArray().Single()!;
        Assert.Equal(("8080-tcp", "tcp", 8080), ((string)port["name"]!, (string)port["protocol"]!, (int)port["port"]!));
        Assert.Equal("/data", (string?)app["mountPoints"]!.AsArray().Single()!["path"]);
    }

    [Fact]
    public void Docker_archive_imports_with_its_repo_tag_and_renders_the_same_tree_as_the_oci_layout()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var docker = Fixtures.DockerArchive(_tmp, layout, "1.36");
        var fromDocker = _store.Import(docker);
        var fromOci = _store.Import(layout);

        Assert.Equal("docker-archive", fromDocker.Format);
        Assert.Equal("docker.io/example/busybox", fromDocker.Name);
        Assert.Equal("1.36", fromDocker.Labels["version"]);
        var manifest = JsonNode.Parse(_store.Store.ReadManifest(fromDocker))!;
        Assert.Equal(["/bin/sh", "-c", "echo hi"], manifest["app"]!["exec"]!.AsArray().Select(e => (string)e!).ToArray());

        TreeSnapshot.Take(_store.Render(fromDocker, _tmp["docker-tree"]))
            .AssertSameAs(TreeSnapshot.Take(_store.Render(fromOci, _tmp["oci-tree"])));
    }

    [Fact]
    public void Oci_layout_as_a_tar_imports_as_the_same_image_as_the_directory()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var tarball = _tmp["oci.tar"];
        Tool.Run("tar", layout, "-cf", tarball, ".");
        var fromDir = _store.Import(layout);
        var fromTar = _store.Import(tarball);
        Assert.Equal(fromDir.Id, fromTar.Id);
        Assert.Single(_store.Store.List());
    }

    [Fact]
    public void Layers_with_whiteouts_render_like_umoci_unpack()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        // A second layer made by umoci repack: deletes a file and a directory's contents, adds one.
        var bundle = _tmp["bundle"];
        Tool.Run("umoci", null, "unpack", "--image", $"{layout}:1.36", bundle);
        File.Delete(Path.Join(bundle, "rootfs/etc/secret"));
        File.Delete(Path.Join(bundle, "rootfs/bin/cat"));
        Directory.Delete(Path.Join(bundle, "rootfs/home/user"), recursive: true);
        File.WriteAllText(Path.Join(bundle, "rootfs/etc/added"), "layer two\n");
        Tool.Run("umoci", null, "repack", "--image", $"{layout}:two", bundle);
        Assert.Equal(2, Fixtures.LayerBlobs(layout, "two").Count);

        var image = _store.Import(layout, new ImportOptions(Reference: "two"));
        var ours = TreeSnapshot.Take(_store.Render(image, _tmp["ours"]));
        var reference = _tmp["umoci-two"];
        Tool.Run("umoci", null, "unpack", "--image", $"{layout}:two", reference);
        ours.AssertSameAs(TreeSnapshot.Take(Path.Join(reference, "rootfs")));
        Assert.DoesNotContain("etc/secret", ours.Entries.Keys);
        Assert.DoesNotContain(ours.Entries.Keys, k => k.Contains(".wh.", StringComparison.Ordinal));
    }

    [Fact]
    public void Second_render_comes_from_the_tree_cache_as_hardlinks()
    {
        var image = _store.Import(Fixtures.BusyboxAci(_tmp));
        var trees = new TreeStore(_store.Store);
        Assert.False(trees.IsCached(image.Id));
        var first = _store.Render(image, _tmp["first"]);
        Assert.True(trees.IsCached(image.Id));
        var second = _store.Render(image, _tmp["second"]);
        var copy = _store.Render(image, _tmp["copy"], ExportMode.Copy);

        var cached = Native.Libc.LStat(Path.Join(trees.TreePath(image.Id), "rootfs/bin/busybox"));
        Assert.Equal(cached.Ino, Native.Libc.LStat(Path.Join(second, "bin/busybox")).Ino);
        Assert.NotEqual(cached.Ino, Native.Libc.LStat(Path.Join(copy, "bin/busybox")).Ino);
        var expected = TreeSnapshot.Take(first);
        TreeSnapshot.Take(second).AssertSameAs(expected);
        TreeSnapshot.Take(copy).AssertSameAs(expected);
    }
}

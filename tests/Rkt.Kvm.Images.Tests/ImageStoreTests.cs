using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Tests.Support;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Images.Tests;

/// <summary>The store: compressions, image choice, re-import, rm, gc, last-used, concurrency,
/// and what an interrupted import leaves behind.</summary>
public sealed class ImageStoreTests : StoreTest
{

    [Fact]
    public void Every_compression_of_an_aci_gives_the_same_image_id()
    {
        var aci = Fixtures.BusyboxAci(_tmp);
        var plain = _tmp["busybox.tar"];
        Tool.Shell($"gzip -dc '{aci}' > '{plain}'");
        var ids = new List<string> { _store.Import(aci).Id, _store.Import(plain).Id };
        foreach (var codec in new[] { "bzip2", "xz", "zstd" })
        {
            var file = _tmp[$"busybox.{codec}"];
            Tool.Shell($"{codec} -c '{plain}' > '{file}'");
            ids.Add(_store.Import(file).Id);
        }
        Assert.Single(ids.Distinct());
        Assert.Single(_store.Store.List());
    }

    [Fact]
    public void Image_is_chosen_by_ref_name_or_digest_and_ambiguity_is_an_error()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        Tool.Run("umoci", null, "tag", "--image", $"{layout}:1.36", "other");
        Tool.Run("umoci", null, "config", "--image", $"{layout}:other", "--config.cmd", "/bin/true");

        var error = Assert.Throws<ImageException>(() => _store.Import(layout));
        Assert.Contains("holds 2 images; choose one with --ref", error.Message);
        Assert.Contains("1.36", error.Message);

        var other = _store.Import(layout, new ImportOptions(Reference: "other"));
        Assert.Equal("other", other.Labels["version"]);
        var index = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Join(layout, "index.json")))!;
        var digest = (string)index["manifests"]!.AsArray().First(m => (string?)m!["annotations"]!["org.opencontainers.image.ref.name"] == "1.36")!["digest"]!;
        var byDigest = _store.Import(layout, new ImportOptions(Reference: digest));
        Assert.Equal("1.36", byDigest.Labels["version"]);
        Assert.NotEqual(other.Id, byDigest.Id);
        Assert.Throws<ImageException>(() => _store.Import(layout, new ImportOptions(Reference: "missing")));
    }

    [Fact]
    public void Images_resolve_by_name_version_and_id_prefix()
    {
        var image = _store.Import(Fixtures.BusyboxAci(_tmp));
        Assert.Equal(image.Id, _store.Store.Resolve(Fixtures.AciName).Id);
        Assert.Equal(image.Id, _store.Store.Resolve(Fixtures.AciName + ":1.36").Id);
        Assert.Equal(image.Id, _store.Store.Resolve(image.Id[..19]).Id);
        Assert.Throws<ImageException>(() => _store.Store.Resolve(Fixtures.AciName + ":9"));
        Assert.Throws<ImageException>(() => _store.Store.Resolve("sha512-12"));
    }

    [Fact]
    public void Rm_removes_the_image_its_tree_and_unshared_blobs()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var oci = _store.Import(layout);
        var docker = _store.Import(Fixtures.DockerArchive(_tmp, layout, "1.36"));
        _store.Render(oci, _tmp["render"]);
        // The same gzip layer blob: the docker archive's is uncompressed, so they share nothing;
        // but two names of one OCI image share everything.
        var renamed = _store.Import(layout, new ImportOptions(Name: "example.com/renamed"));
        Assert.Equal(oci.Blobs, renamed.Blobs);

        _store.Store.Remove(oci);
        Assert.False(Directory.Exists(new TreeStore(_store.Store).TreePath(oci.Id)));
        Assert.True(File.Exists(_store.Store.BlobPath(oci.Blobs[0])), "a blob another image uses was removed");
        _store.Store.Remove(renamed);
        Assert.False(File.Exists(_store.Store.BlobPath(oci.Blobs[0])));
        Assert.Equal([docker.Id], _store.Store.List().Select(i => i.Id));
        _store.Store.Remove(docker);
        _store.AssertEmpty();
    }

    [Fact]
    public void Gc_removes_images_unused_past_the_grace_period_and_leftovers()
    {
        var image = _store.Import(Fixtures.BusyboxAci(_tmp));
        var now = DateTimeOffset.UtcNow;
        Assert.Empty(_store.Store.Collect(TimeSpan.FromHours(24), now).RemovedImages);

        // An import whose process died: its scratch dir and unlocked lock file remain.
        var dead = Path.Join(_store.Store.CasDir, "tmp", "import-dead");
        Directory.CreateDirectory(dead);
        File.WriteAllText(Path.Join(dead, "layer-0"), "half a layer");
        File.WriteAllText(dead + ".lock", "");
        // A live import (this process holds its lock): gc must leave it alone.
        using var live = TempArea.Create(Path.Join(_store.Store.CasDir, "tmp"), "import-");
        // An orphan blob, as a crash between blob rename and index write would leave.
        var orphan = _store.Store.BlobPath("sha256:" + new string('0', 64));
        Directory.CreateDirectory(Path.GetDirectoryName(orphan)!);
        File.WriteAllText(orphan, "orphan");

        var result = _store.Store.Collect(null, now);
        Assert.Equal(1, result.RemovedScratch);
        Assert.Equal(1, result.RemovedBlobs);
        Assert.False(Directory.Exists(dead));
        Assert.True(Directory.Exists(live.Path));
        Assert.Single(_store.Store.List());

        var later = now + TimeSpan.FromHours(25);
        Assert.Equal([image.Id], _store.Store.Collect(TimeSpan.FromHours(24), later).RemovedImages.Select(i => i.Id));
        Assert.Empty(_store.Store.List());
    }

    [Fact]
    public void Render_updates_last_used()
    {
        var image = _store.Import(Fixtures.BusyboxAci(_tmp));
        Thread.Sleep(20);
        _store.Render(image, _tmp["r"]);
        Assert.True(_store.Store.Resolve(image.Id).LastUsed > image.LastUsed);
    }

    [Fact]
    public void A_failed_import_leaves_no_image_and_no_scratch()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        File.Delete(Fixtures.LayerBlobs(layout, "1.36")[0]);
        var error = Assert.ThrowsAny<ImageException>(() => _store.Import(layout));
        Assert.Contains("is missing", error.Message);
        _store.AssertEmpty();
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Join(_store.Store.CasDir, "tmp")));
    }

    [Fact]
    public async Task Concurrent_imports_and_renders_keep_the_store_consistent()
    {
        var aci = Fixtures.BusyboxAci(_tmp);
        var layout = Fixtures.BusyboxOci(_tmp);
        // Separate ImageStore objects, as separate processes would have; flock works per open file.
        var tasks = Enumerable.Range(0, 6).Select(i => Task.Run(() =>
        {
            var store = new ImageStore(_store.Store.DataDir);
            var image = new ImageImporter(store).Import(i % 2 == 0 ? aci : layout, new ImportOptions());
            new TreeStore(store).Export(image, _tmp[$"render-{i}"], ExportMode.Hardlink, rootfsOnly: true);
            return image.Id;
        })).ToArray();
        var ids = await Task.WhenAll(tasks);
        Assert.Equal(2, ids.Distinct().Count());
        Assert.Equal(2, _store.Store.List().Count);
        for (int i = 1; i < 6; i++)
            TreeSnapshot.Take(_tmp[$"render-{i}"]).AssertSameAs(TreeSnapshot.Take(_tmp[$"render-{i % 2}"]));
    }

    [Fact]
    public void Xattrs_in_the_archive_are_applied()
    {
        var layout = Fixtures.AciLayout(_tmp, "xattr", "example.com/xattr");
        File.WriteAllText(Path.Join(layout, "rootfs/tagged"), "x");
        Tool.Run("setfattr", null, "-n", "user.rkt-test", "-v", "kept", Path.Join(layout, "rootfs/tagged"));
        var aci = _tmp["xattr.aci"];
        Tool.Run("tar", layout, "--xattrs", "--xattrs-include=user.*", "--format=pax", "-cf", aci, "manifest", "rootfs");
        var rendered = _store.Render(_store.Import(aci), _tmp["out"]);
        var value = Tool.Run("getfattr", null, "--only-values", "-n", "user.rkt-test", Path.Join(rendered, "tagged"));
        Assert.Equal("kept", value);
    }
}

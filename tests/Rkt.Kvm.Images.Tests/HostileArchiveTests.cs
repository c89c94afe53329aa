using System.Text;
using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Compression;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests;

/// <summary>
/// One test per attack, each archive made by GNU tar. Every one must be refused with an error
/// naming the entry, both at import (the store is left unchanged) and when extracted straight to
/// disk (nothing appears outside the target).
/// </summary>
public sealed class HostileArchiveTests : StoreTest
{
    private readonly string _src, _target, _outside;

    public HostileArchiveTests()
    {
        _src = Fixtures.AciLayout(_tmp, "src", "example.com/hostile");
        // Extraction target: tmp/x/target. Escapes aim at tmp/x and above, which must stay empty.
        _outside = _tmp.Dir("x");
        _target = _tmp.Dir("x/target");
    }

    private string Rootfs(string rel) => Path.Join(_src, "rootfs", rel);

    /// <summary>GNU tar, run in the source dir, with --no-recursion so entry order is ours.</summary>
    private string Tar(params string[] args)
    {
        var aci = _tmp["hostile.aci"];
        Tool.Run("tar", _src, ["-cf", aci, "--no-recursion", .. args]);
        return aci;
    }

    private void AssertRefused(string archive, string entry, string because, ImportOptions? options = null)
    {
        var importError = Assert.ThrowsAny<ImageException>(() => _store.Import(archive, options));
        Assert.Contains($"\"{entry}", importError.Message);
        Assert.Contains(because, importError.Message);
        _store.AssertEmpty();

        var extractError = Assert.ThrowsAny<ImageException>(() => ExtractToDisk(archive, options?.Policy ?? new ExtractionPolicy()));
        Assert.Equal(importError.Message, extractError.Message);
        var outside = Directory.EnumerateFileSystemEntries(_outside).Where(p => p != _target).ToList();
        Assert.True(outside.Count == 0, "written outside the target: " + string.Join(", ", outside));
    }

    private void ExtractToDisk(string archive, ExtractionPolicy policy)
    {
        using var plain = Decompression.Open(File.OpenRead(archive), archive, out _);
        var applier = new TarApplier(new DiskTreeWriter(_target), policy);
        applier.Apply(plain, ArchiveLayout.Aci, 0, archive);
        applier.Complete();
    }

    [Fact]
    public void Dotdot_component_is_refused()
    {
        File.WriteAllText(Rootfs("evil"), "x");
        var aci = Tar("--transform", "s,^rootfs/evil$,rootfs/../../evil,", "manifest", "rootfs", "rootfs/evil");
        AssertRefused(aci, "rootfs/../../evil", "\"..\"");
    }

    [Fact]
    public void Absolute_path_is_refused()
    {
        var victim = Path.Join(_outside, "absolute-evil");
        File.WriteAllText(Rootfs("evil"), "x");
        var aci = Tar("-P", "--transform", $"s,^rootfs/evil$,{victim},", "manifest", "rootfs", "rootfs/evil");
        AssertRefused(aci, victim, "absolute path");
        Assert.False(File.Exists(victim));
    }

    [Fact]
    public void Symlink_pointing_outside_the_root_is_refused()
    {
        File.CreateSymbolicLink(Rootfs("escape"), "../../../../../etc");
        AssertRefused(Tar("manifest", "rootfs", "rootfs/escape"), "rootfs/escape", "points outside the root");
    }

    [Fact]
    public void Symlink_escaping_through_an_earlier_symlink_is_refused()
    {
        Directory.CreateDirectory(Rootfs("sub"));
        File.CreateSymbolicLink(Rootfs("sub/up"), "..");     // the root: fine by itself
        File.CreateSymbolicLink(Rootfs("z"), "sub/up/..");   // lexically "sub", really above the root
        AssertRefused(Tar("manifest", "rootfs", "rootfs/sub", "rootfs/sub/up", "rootfs/z"), "rootfs/z", "points outside the root");
    }

    [Fact]
    public void Symlink_made_to_escape_by_a_later_symlink_is_refused()
    {
        Directory.CreateDirectory(Rootfs("sub"));
        File.CreateSymbolicLink(Rootfs("sub/up"), "..");
        File.CreateSymbolicLink(Rootfs("x"), "d/..");   // d does not exist yet: x is the root
        File.CreateSymbolicLink(Rootfs("d"), "sub/up"); // now x is sub/up/.. = above the root
        AssertRefused(Tar("manifest", "rootfs", "rootfs/sub", "rootfs/sub/up", "rootfs/x", "rootfs/d"), "rootfs/x", "points outside the root");
    }

    [Fact]
    public void Entry_written_through_a_symlink_is_refused()
    {
        var hostPasswd = File.ReadAllBytes("/etc/passwd");
        File.CreateSymbolicLink(Rootfs("lnk"), "/etc");
        File.WriteAllText(Path.Join(_src, "passwd"), "pwned::0:0::/:/bin/sh\n");
        var aci = Tar("--transform", "s,^passwd$,rootfs/lnk/passwd,", "manifest", "rootfs", "rootfs/lnk", "passwd");
        AssertRefused(aci, "rootfs/lnk/passwd", "written through the symlink \"lnk\"");
        Assert.Equal(hostPasswd, File.ReadAllBytes("/etc/passwd"));
    }

    [Fact]
    public void Hardlink_pointing_outside_the_root_is_refused()
    {
        File.WriteAllText(Rootfs("f"), "x");
        Tool.Run("ln", null, Rootfs("f"), Rootfs("h"));
        // Rewrite only the hardlink's target (flags R and S: not names, not symlink targets).
        // -P: GNU tar would otherwise strip the leading "../" itself.
        var aci = Tar("-P", "--transform", "s,^rootfs/f$,../../../etc/shadow,RS", "manifest", "rootfs", "rootfs/f", "rootfs/h");
        AssertRefused(aci, "rootfs/h", "\"..\"");
    }

    [Fact]
    public void Hardlink_through_a_symlink_is_refused()
    {
        File.CreateSymbolicLink(Rootfs("lnk"), "/etc");
        File.WriteAllText(Rootfs("f"), "x");
        Tool.Run("ln", null, Rootfs("f"), Rootfs("h"));
        var aci = Tar("--transform", "s,^rootfs/f$,rootfs/lnk/shadow,RS", "manifest", "rootfs", "rootfs/lnk", "rootfs/f", "rootfs/h");
        AssertRefused(aci, "rootfs/h", "written through the symlink \"lnk\"");
    }

    [Fact]
    public void Duplicate_manifest_is_refused()
    {
        AssertRefused(Tar("manifest", "rootfs", "manifest"), "manifest", "duplicate manifest");
    }

    [Fact]
    public void Device_node_is_refused_unless_allowed()
    {
        Directory.CreateDirectory(Rootfs("dev"));
        Tool.Run("mknod", null, Rootfs("dev/mem"), "c", "1", "1");
        var aci = Tar("manifest", "rootfs", "rootfs/dev", "rootfs/dev/mem");
        AssertRefused(aci, "rootfs/dev/mem", "device node 1:1 not allowed");

        var image = _store.Import(aci, new ImportOptions { Policy = new ExtractionPolicy { AllowDevices = true } });
        var rendered = _store.Render(image, _tmp["allowed"]);
        var st = Native.Libc.LStat(Path.Join(rendered, "dev/mem"));
        Assert.Equal(Native.Libc.S_IFCHR, st.Mode & Native.Libc.S_IFMT);
        Assert.Equal(Native.Libc.MakeDev(1, 1), st.Rdev);
    }

    [Fact]
    public void Entry_claiming_more_than_the_size_limit_is_refused()
    {
        Tool.Run("truncate", null, "-s", "64M", Rootfs("zeros"));
        var aci = _tmp["bomb.aci"];
        Tool.Shell($"tar -cf - --no-recursion manifest rootfs rootfs/zeros | gzip -1 > '{aci}'", _src);
        Assert.True(new FileInfo(aci).Length < 1 << 20, "the bomb should be small compressed");
        AssertRefused(aci, "rootfs/zeros", "past the size limit", new ImportOptions { Policy = new ExtractionPolicy { MaxBytes = 8 << 20 } });
    }

    [Fact]
    public void Archive_expanding_past_the_size_limit_is_stopped_while_streaming()
    {
        var names = new List<string> { "manifest", "rootfs" };
        for (int i = 0; i < 12; i++)
        {
            Tool.Run("truncate", null, "-s", "1M", Rootfs($"z{i}"));
            names.Add($"rootfs/z{i}");
        }
        var aci = _tmp["bomb.aci"];
        Tool.Shell($"tar -cf - --no-recursion {string.Join(' ', names)} | gzip -1 > '{aci}'", _src);
        var options = new ImportOptions { Policy = new ExtractionPolicy { MaxBytes = 8 << 20 } };
        var error = Assert.ThrowsAny<ImageException>(() => _store.Import(aci, options));
        Assert.Contains("expands past the size limit of 8388608 bytes", error.Message);
        _store.AssertEmpty();
    }

    [Fact]
    public void Name_with_a_nul_byte_is_refused()
    {
        // A PAX "path" record (GNU tar writes one for a name over 100 bytes), then one byte of it
        // turned into NUL: the record's length prefix stays right and headers carry no checksum
        // over PAX data, so only the name is hostile.
        var longName = "rootfs/" + new string('a', 110) + "Q" + "tail";
        File.WriteAllText(Path.Combine(_src, "f"), "x");
        var aci = Tar("--format=pax", "--transform", $"s,^f$,{longName},", "manifest", "rootfs", "f");
        var bytes = File.ReadAllBytes(aci);
        var marker = Encoding.ASCII.GetBytes("path=" + longName);
        int at = bytes.AsSpan().IndexOf(marker);
        Assert.True(at > 0, "GNU tar wrote no PAX path record");
        bytes[at + "path=".Length + longName.IndexOf('Q')] = 0;
        File.WriteAllBytes(aci, bytes);
        AssertRefused(aci, "rootfs/" + new string('a', 110) + "\\x00tail", "contains a NUL byte");
    }

    [Fact]
    public void Over_long_component_is_refused()
    {
        var longComponent = new string('c', 300);
        File.WriteAllText(Path.Combine(_src, "f"), "x");
        var aci = Tar("--transform", $"s,^f$,rootfs/{longComponent},", "manifest", "rootfs", "f");
        AssertRefused(aci, "rootfs/ccccc", "longer than 255 bytes");
    }

    [Fact]
    public void Over_long_path_is_refused()
    {
        var deep = string.Join('/', Enumerable.Repeat(new string('d', 200), 21)); // 4220 bytes
        File.WriteAllText(Path.Combine(_src, "f"), "x");
        var aci = Tar("--transform", $"s,^f$,rootfs/{deep},", "manifest", "rootfs", "f");
        AssertRefused(aci, "rootfs/ddddd", "longer than 4095 bytes");
    }

    [Theory]
    [InlineData("gzip")]
    [InlineData("bzip2")]
    [InlineData("xz")]
    [InlineData("zstd")]
    public void Truncated_compression_is_refused(string codec)
    {
        var aci = Fixtures.BusyboxAci(_tmp);
        var compressed = _tmp[$"busybox.aci.{codec}"];
        Tool.Shell($"gzip -dc '{aci}' | {codec} -c > '{compressed}'");
        var half = _tmp[$"half.{codec}"];
        Tool.Shell($"head -c $(( $(stat -c %s '{compressed}') / 2 )) '{compressed}' > '{half}'");
        var error = Assert.ThrowsAny<ImageException>(() => _store.Import(half));
        Assert.Contains($"truncated or corrupt ({codec})", error.Message);
        _store.AssertEmpty();
    }

    [Fact]
    public void Corrupt_gzip_is_refused()
    {
        // A wrong CRC in the trailer: the tar inside reads fine, only the checksum says otherwise.
        var aci = Fixtures.BusyboxAci(_tmp);
        var original = File.ReadAllBytes(aci);
        var bytes = original.ToArray();
        bytes[^8] ^= 0xff;
        File.WriteAllBytes(aci, bytes);
        var error = Assert.ThrowsAny<ImageException>(() => _store.Import(aci));
        Assert.Contains("truncated or corrupt (gzip)", error.Message);
        _store.AssertEmpty();

        // Garbage in the middle of the deflate data: refused too, by whichever check sees it first.
        bytes = original.ToArray();
        for (int i = bytes.Length / 2; i < bytes.Length / 2 + 64; i++) bytes[i] ^= 0x5a;
        File.WriteAllBytes(aci, bytes);
        Assert.ThrowsAny<ImageException>(() => _store.Import(aci));
        _store.AssertEmpty();
    }

    [Fact]
    public void Later_layer_writing_through_a_symlink_from_an_earlier_layer_is_refused()
    {
        var l1 = _tmp.Dir("l1");
        File.CreateSymbolicLink(Path.Join(l1, "lnk"), "/etc"); // inside the root: allowed
        Tool.Run("tar", l1, "-cf", _tmp["l1.tar"], "lnk");
        var l2 = _tmp.Dir("l2");
        File.WriteAllText(Path.Join(l2, "shadow"), "pwned");
        Tool.Run("tar", l2, "-cf", _tmp["l2.tar"], "--transform", "s,^shadow$,lnk/shadow,", "shadow");
        var layout = OciBuilder.Build(_tmp["oci"], "latest", _tmp["l1.tar"], _tmp["l2.tar"]);

        var error = Assert.Throws<UnsafeEntryException>(() => _store.Import(layout));
        Assert.Equal("lnk/shadow", error.Entry);
        _store.AssertEmpty();
    }

    [Fact]
    public void Layer_not_matching_its_digest_is_refused()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var layer = Fixtures.LayerBlobs(layout, "1.36").Single();
        var bytes = File.ReadAllBytes(layer);
        bytes[^20] ^= 0xff; // inside the deflate data or trailer: digest must catch it either way
        File.WriteAllBytes(layer, bytes);
        var error = Assert.ThrowsAny<ImageException>(() => _store.Import(layout));
        Assert.Contains("layer 1/1", error.Message);
        _store.AssertEmpty();
    }

    [Fact]
    public void Digest_used_as_a_path_is_refused()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var index = File.ReadAllText(Path.Join(layout, "index.json"));
        var digest = System.Text.RegularExpressions.Regex.Match(index, "sha256:[0-9a-f]{64}").Value;
        File.WriteAllText(Path.Join(layout, "index.json"), index.Replace(digest, "sha256:../../../../etc/passwd"));
        var error = Assert.ThrowsAny<ImageException>(() => _store.Import(layout));
        Assert.Contains("invalid digest \"sha256:../../../../etc/passwd\"", error.Message);
        _store.AssertEmpty();
    }
}

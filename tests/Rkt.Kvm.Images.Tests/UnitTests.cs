using System.IO.Compression;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Compression;
using Rkt.Kvm.Images.Formats.Appc;

namespace Rkt.Kvm.Images.Tests;

/// <summary>Pure logic: entry names, symlink resolution, gzip truncation, names, sizes.</summary>
public sealed class UnitTests
{
    [Theory]
    [InlineData("./bin/sh", "bin/sh")]
    [InlineData("bin//./sh/", "bin/sh")]
    [InlineData("/", "")]
    [InlineData("./", "")]
    public void Entry_names_normalize(string name, string expected) => Assert.Equal(expected, EntryPath.Normalize(name, name));

    [Theory]
    [InlineData("/etc/passwd", "absolute path")]
    [InlineData("a/../../b", "\"..\"")]
    [InlineData("a\0b", "NUL")]
    public void Bad_entry_names_are_refused(string name, string reason) =>
        Assert.Contains(reason, Assert.Throws<UnsafeEntryException>(() => EntryPath.Normalize(name, name)).Message);

    [Fact]
    public void Symlink_resolution_follows_links_already_in_the_tree()
    {
        var tree = new VirtualTree();
        tree.Set("usr", new Node(NodeKind.Directory, 0, "usr"));
        tree.Set("usr/lib", new Node(NodeKind.Directory, 0, "usr/lib"));
        tree.Set("lib", new Node(NodeKind.Symlink, 0, "lib", "usr/lib"));
        tree.Set("up", new Node(NodeKind.Symlink, 0, "up", ".."));
        Assert.False(tree.Escapes("", "lib/../.."));            // usr/lib/../.. = root
        Assert.True(tree.Escapes("", "lib/../../.."));
        Assert.False(tree.Escapes("usr/lib", "/bin/sh"));        // absolute: from the image root
        Assert.True(tree.Escapes("", "/.."));
        tree.Set("loop", new Node(NodeKind.Symlink, 0, "loop", "loop"));
        Assert.True(tree.Escapes("", "loop/x"));                 // loops are refused, not followed forever
    }

    [Fact]
    public void Gzip_truncated_at_any_point_is_detected()
    {
        var data = new byte[200_000];
        new Random(1).NextBytes(data.AsSpan(0, 100_000));
        var compressed = new MemoryStream();
        using (var gz = new GZipStream(compressed, CompressionLevel.Fastest, leaveOpen: true)) gz.Write(data);
        var full = compressed.ToArray();
        Assert.Equal(data, ReadAll(full));
        foreach (var cut in new[] { 10, full.Length / 2, full.Length - 9, full.Length - 1 })
            Assert.Throws<ImageException>(() => ReadAll(full[..cut]));
    }

    private static byte[] ReadAll(byte[] compressed)
    {
        using var s = Decompression.Open(new MemoryStream(compressed), "test", out var kind);
        Assert.Equal(CompressionKind.Gzip, kind);
        var output = new MemoryStream();
        s.CopyTo(output);
        return output.ToArray();
    }

    [Theory]
    [InlineData("docker.io/library/busybox:1.36", "docker.io/library/busybox", "1.36")]
    [InlineData("localhost:5000/app", "localhost:5000/app", null)]
    [InlineData("latest", null, "latest")]
    [InlineData("app@sha256:abc", "app", null)]
    public void References_split_into_repo_and_tag(string reference, string? repo, string? tag) =>
        Assert.Equal((repo, tag), AppcConverter.SplitReference(reference));

    [Theory]
    [InlineData("Docker.IO/Library/My_App", "docker.io/library/my_app")]
    [InlineData("my app!", "my-app")]
    [InlineData("--", "image")]
    public void Names_sanitize_to_ac_identifiers(string input, string expected)
    {
        Assert.Equal(expected, AcIdentifier.Sanitize(input));
        Assert.True(AcIdentifier.IsValid(AcIdentifier.Sanitize(input)));
    }

    [Theory]
    [InlineData("32G", 32L << 30)]
    [InlineData("512M", 512L << 20)]
    [InlineData("1000", 1000)]
    [InlineData("4KiB", 4096)]
    public void Sizes_parse(string text, long bytes) => Assert.Equal(bytes, Sizes.Parse(text, "--max-size"));

    [Fact]
    public void Sizes_format_like_rkt() => Assert.Equal(["512B", "1.5KiB", "90MiB"], new[] { Sizes.Format(512), Sizes.Format(1536), Sizes.Format(90L << 20) });
}

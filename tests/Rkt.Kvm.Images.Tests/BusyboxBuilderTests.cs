using System.Text.Json.Nodes;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Builders;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests;

/// <summary>The default busybox image, laid out by <see cref="BusyboxRootfs"/> and packed by
/// <see cref="AciWriter"/> from the host's real busybox-static; checked by actool and by our own import.</summary>
public sealed class BusyboxBuilderTests : StoreTest
{
    [Fact]
    public void Rootfs_HasEveryAppletAsALinkToBusyboxAndTheAccounts()
    {
        var rootfs = _tmp["rootfs"];
        BusyboxRootfs.Build(rootfs, Tool.RequireBusybox());

        var applets = BusyboxRootfs.AppletPaths(Tool.RequireBusybox());
        Assert.Contains("bin/sh", applets);
        foreach (var applet in applets.Where(a => a != "bin/busybox"))
        {
            var info = new FileInfo(Path.Join(rootfs, applet));
            Assert.NotNull(info.LinkTarget);
            Assert.Equal(Path.Join(rootfs, "bin/busybox"), Path.GetFullPath(info.LinkTarget!, Path.GetDirectoryName(info.FullName)!));
        }
        Assert.Contains("user:x:1000:1000:", File.ReadAllText(Path.Join(rootfs, "etc/passwd")));
        Assert.Contains("users:x:100:user", File.ReadAllText(Path.Join(rootfs, "etc/group")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead
            | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite
            | UnixFileMode.OtherExecute | UnixFileMode.StickyBit, File.GetUnixFileMode(Path.Join(rootfs, "tmp")));
        if (Native.Libc.IsRoot) Assert.Equal(1000u, Native.Libc.LStat(Path.Join(rootfs, "home/user")).Uid);
    }

    [Fact]
    public void Rootfs_RefusesANonEmptyTargetAndAMissingBinary()
    {
        var target = _tmp.Dir("full");
        File.WriteAllText(Path.Join(target, "x"), "");
        Assert.Throws<ImageException>(() => BusyboxRootfs.Build(target, Tool.RequireBusybox()));
        Assert.Throws<ImageException>(() => BusyboxRootfs.Build(_tmp["other"], _tmp["no-such-busybox"]));
    }

    [Theory]
    [InlineData("/bin/sh\n")]
    [InlineData("bin/../../etc/x\n")]
    [InlineData("bin//sh\n")]
    [InlineData("\n\n")]
    public void AppletList_RefusesPathsThatAreNotPlainAndRelative(string listing) =>
        Assert.Throws<ImageException>(() => BusyboxRootfs.ParseAppletList(listing));

    [Fact]
    public void Aci_ValidatesWithActool_AndImportsToTheSameTree()
    {
        var rootfs = _tmp["rootfs"];
        BusyboxRootfs.Build(rootfs, Tool.RequireBusybox());
        var aci = _tmp["busybox.aci"];
        AciWriter.Write(aci, AciWriter.Manifest("example.com/built", ["/bin/sh", "-c", "echo hi"]), rootfs);
        Tool.Run("actool", null, "validate", aci);

        var image = _store.Import(aci);
        var manifest = JsonNode.Parse(_store.Store.ReadManifest(image))!;
        Assert.Equal("example.com/built", (string?)manifest["name"]);
        Assert.Equal("echo hi", (string?)manifest["app"]!["exec"]![2]);
        var rendered = _store.Render(image, _tmp["rendered"]);
        TreeSnapshot.Take(rendered, withDirTimes: false).AssertSameAs(TreeSnapshot.Take(rootfs, withDirTimes: false));
    }

    [Fact]
    public void Cli_BuildsAnAciOrARootfs_AndRefusesBoth()
    {
        var stdout = new StringWriter();
        int Cli(params string[] args) => CommandTable.Run(["--dir", _tmp["data"], .. args], stdout, new StringWriter(), false);
        Assert.Equal(0, Cli("image", "build-busybox", "--output", _tmp["cli.aci"]));
        Assert.True(File.Exists(_tmp["cli.aci"]));
        Assert.Empty(Directory.GetFiles(_tmp.Path, ".busybox-rootfs-*")); // staging removed
        Assert.Equal(0, Cli("image", "build-busybox", "--rootfs", _tmp["cli-rootfs"]));
        Assert.True(File.Exists(_tmp["cli-rootfs/bin/busybox"]));
        Assert.Equal(254, Cli("image", "build-busybox", "--rootfs", _tmp["x"], "--output", _tmp["y"]));
        Assert.Equal(254, Cli("image", "build-busybox"));
    }
}

using System.Diagnostics;
using System.Text.Json.Nodes;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests;

/// <summary>The rkt-kvm image verbs, run through the real command table (and as real processes
/// where concurrency matters), always with --dir pointing at a temp data dir.</summary>
public sealed class CliTests : StoreTest
{

    private (int Rc, string Out, string Err) Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = CommandTable.Run(["--dir", _tmp["data"], .. args], stdout, stderr, stderrIsTerminal: false);
        return (rc, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void Fetch_list_cat_manifest_extract_and_rm()
    {
        var aci = Fixtures.BusyboxAci(_tmp);
        // An unsigned file: as rkt, only with --insecure-options=image, and with its warning.
        var (rc, id, err) = Cli("--insecure-options=image", "fetch", aci);
        Assert.True(rc == 0, err);
        Assert.Contains("rkt-kvm: warning: image signature verification has been disabled", err);
        id = id.Trim();
        Assert.Matches("^sha512-[0-9a-f]{128}$", id);
        Assert.Contains("importing busybox.aci", err); // a plain progress line, not a bar, off a terminal

        var list = Cli("image", "list").Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^ID\s+NAME\s+SIZE\s+IMPORT TIME\s+LAST USED$", list[0]);
        Assert.Matches($@"^{id[..39]}\s+{Fixtures.AciName}:1\.36\s+[0-9.]+MiB\s+(just now|\d+ seconds? ago)\s+", list[1]);
        Assert.Single(Cli("image", "list", "--no-legend").Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        var json = JsonNode.Parse(Cli("image", "list", "--format=json").Out)!.AsArray().Single()!;
        Assert.Equal(id, (string?)json["id"]);
        Assert.Equal($"{Fixtures.AciName}:1.36", (string?)json["name"]);
        Assert.True((long)json["size"]! > 1_000_000);

        var manifest = JsonNode.Parse(Cli("image", "cat-manifest", id[..20]).Out)!;
        Assert.Equal(Fixtures.AciName, (string?)manifest["name"]);

        var target = _tmp["extracted"];
        Assert.Equal(0, Cli("image", "extract", Fixtures.AciName, target).Rc);
        Assert.True(File.Exists(Path.Join(target, "manifest")));
        Assert.True(File.Exists(Path.Join(target, "rootfs/bin/busybox")));
        Assert.Equal(254, Cli("image", "extract", Fixtures.AciName, target).Rc); // not empty
        Assert.Equal(0, Cli("image", "extract", "--overwrite", "--rootfs-only", "--copy", Fixtures.AciName, target).Rc);
        Assert.True(File.Exists(Path.Join(target, "bin/busybox")));

        var rm = Cli("image", "rm", id);
        Assert.Equal(0, rm.Rc);
        Assert.Contains($"successfully removed image \"{id}\"", rm.Out);
        Assert.Equal("[]", Cli("image", "list", "--format=json").Out.Trim());
    }

    [Fact]
    public void Import_of_oci_takes_name_and_ref()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        var (rc, id, err) = Cli("image", "import", "--name=example.com/bb", "--ref", "1.36", layout);
        Assert.True(rc == 0, err);
        var list = Cli("image", "list").Out;
        Assert.Contains("example.com/bb:1.36", list);
        var manifest = JsonNode.Parse(Cli("image", "cat-manifest", id.Trim()).Out)!;
        Assert.Equal("/bin/sh", (string?)manifest["app"]!["exec"]![0]);
    }

    [Theory]
    [InlineData("image", "rm", "sha512-00000000")]
    [InlineData("image", "cat-manifest", "example.com/none")]
    [InlineData("image", "import", "/nonexistent/image.aci")]
    [InlineData("fetch", "docker://busybox")]
    [InlineData("image", "frobnicate")]
    [InlineData("nosuchverb")]
    [InlineData("image", "list", "--format=yaml")]
    [InlineData("image", "import", "--bogus", "x")]
    public void Errors_are_one_line_on_stderr_and_exit_254(params string[] args)
    {
        var (rc, stdout, stderr) = Cli(args);
        Assert.Equal(254, rc);
        Assert.Equal("", stdout);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("rkt-kvm: ", lines[0]);
    }

    [Fact]
    public void Hostile_import_names_the_entry()
    {
        var src = Fixtures.AciLayout(_tmp, "src", "example.com/x");
        File.WriteAllText(Path.Join(src, "f"), "x");
        Tool.Run("tar", src, "-cf", _tmp["evil.aci"], "--transform", "s,^f$,rootfs/../../f,", "manifest", "rootfs", "f");
        var (rc, _, err) = Cli("image", "import", _tmp["evil.aci"]);
        Assert.Equal(254, rc);
        Assert.Contains("rkt-kvm: refusing archive entry \"rootfs/../../f\": path contains a \"..\" component", err);
    }

    [Fact]
    public void Gc_parses_go_durations_and_reports()
    {
        Cli("image", "import", Fixtures.BusyboxAci(_tmp));
        var (rc, stdout, _) = Cli("image", "gc", "--grace-period=1h30m");
        Assert.Equal(0, rc);
        Assert.Contains("gc: 0 image(s)", stdout);
        Assert.Equal(TimeSpan.FromMinutes(90), Rkt.Kvm.Stage0.Commands.GcImagesCommand.ParseDuration("1h30m"));
        Assert.Contains("gc: 1 image(s)", Cli("image", "gc", "--grace-period=0").Out);
    }

    [Fact]
    public async Task Concurrent_cli_processes_share_the_store()
    {
        var aci = Fixtures.BusyboxAci(_tmp);
        var layout = Fixtures.BusyboxOci(_tmp);
        var runs = Enumerable.Range(0, 4).Select(i => CliProcess.Run("--dir", _tmp["data"], "image", "import", i % 2 == 0 ? aci : layout)).ToArray();
        var results = await Task.WhenAll(runs);
        Assert.All(results, r => Assert.True(r.Rc == 0, r.Err));
        Assert.Equal(2, results.Select(r => r.Out.Trim()).Distinct().Count());
        Assert.Equal(2, JsonNode.Parse(Cli("image", "list", "--format=json").Out)!.AsArray().Count);
    }

    [Fact]
    public async Task Import_killed_midway_leaves_no_image_and_gc_removes_its_scratch()
    {
        // The layer blob becomes a FIFO that we feed half of the real layer, then the importing
        // process is killed (SIGKILL, no clean-up) while it waits for the rest.
        var layout = Fixtures.BusyboxOci(_tmp);
        var layer = Fixtures.LayerBlobs(layout, "1.36").Single();
        var bytes = File.ReadAllBytes(layer);
        File.Delete(layer);
        Tool.Run("mkfifo", null, layer);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { CliProcess.Dll, "--dir", _tmp["data"], "image", "import", layout })
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        await using (var fifo = new FileStream(layer, FileMode.Open, FileAccess.Write))
        {
            await fifo.WriteAsync(bytes.AsMemory(0, bytes.Length / 2));
            await fifo.FlushAsync();
            var scratch = Path.Join(_tmp["data"], "cas", "tmp");
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!Directory.EnumerateFiles(scratch, "layer-0", SearchOption.AllDirectories).Any(f => new FileInfo(f).Length > 0))
            {
                Assert.True(DateTime.UtcNow < deadline, "the import never started writing its scratch copy");
                await Task.Delay(10);
            }
            process.Kill();
            await process.WaitForExitAsync();
        }
        Assert.Equal("[]", Cli("image", "list", "--format=json").Out.Trim());
        Assert.Contains("1 interrupted operation(s) removed", Cli("image", "gc").Out);
        _store.AssertEmpty();
    }
}

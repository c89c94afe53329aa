using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Confinement;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Tests.Support;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Images.Tests;

/// <summary>
/// The confined extraction (rkt-kvm re-executed as <c>__extract</c>): it writes the same trees as the
/// in-process one, refuses what it refuses with the same error, and is confined: its root holds
/// only the destination, a socket kills it, and every thread runs under its own id with no
/// capability but extraction's. Runs as root, as rkt-kvm does.
/// </summary>
public sealed class ConfinedExtractionTests : StoreTest
{
    /// <summary>A tree with what extraction must carry: owners, set-id and sticky bits, modes that lock out
    /// their owner, symlinks, hardlinks, a FIFO, user xattrs, times.</summary>
    private string RichAci()
    {
        var layout = Fixtures.AciLayout(_tmp, "rich", "example.com/rich");
        Tool.Shell("""
            cd rootfs
            mkdir -p bin etc/private home/user locked ro sticky
            printf 'root:x:0:0::/root:/bin/sh\n' > etc/passwd
            printf 'su' > bin/su && chmod 4755 bin/su
            printf 'wall' > bin/wall && chown 0:5 bin/wall && chmod 2711 bin/wall
            printf 'mine' > home/user/file && chown -R 1000:1000 home/user && chmod 0600 home/user/file && chmod 0750 home/user
            printf 'x' > locked/inside && chmod 0000 locked/inside && chmod 0000 locked
            printf 'y' > ro/inside && chmod 0555 ro
            chmod 1777 sticky
            chown 123:456 etc/private && chmod 2770 etc/private
            ln -s /bin/su bin/absolute-link && ln -s ../etc/passwd bin/relative-link
            printf 'shared' > bin/a && ln bin/a bin/b && ln bin/a etc/c
            mkfifo etc/fifo
            : > etc/empty
            setfattr -n user.rkt-test -v kept etc/passwd
            setfattr -n user.dir -v yes etc
            touch -h -d '2020-02-02 02:02:02Z' bin/absolute-link
            touch -d '2021-03-04 05:06:07Z' etc/passwd etc
            """, layout);
        var aci = _tmp["rich.aci"];
        Tool.Run("tar", layout, "--xattrs", "--xattrs-include=user.*", "--format=pax", "--numeric-owner", "-cf", aci, "manifest", "rootfs");
        return aci;
    }

    private static string Xattrs(string root) => Tool.Run("getfattr", root, "-R", "-h", "-d", "-m", "-", ".");

    /// <summary>Renders <paramref name="source"/> in-process and confined, each in a store of its own, and compares the trees.</summary>
    private void AssertSameTree(string source)
    {
        var inProcess = new StoreHarness(_tmp, sandbox: null, data: "in-process");
        var confined = new StoreHarness(_tmp, Confined.Sandbox(), data: "confined");
        var expected = inProcess.Render(inProcess.Import(source), _tmp["expected"]);
        var actual = confined.Render(confined.Import(source), _tmp["actual"]);
        TreeSnapshot.Take(actual).AssertSameAs(TreeSnapshot.Take(expected));
        Assert.Equal(Xattrs(expected), Xattrs(actual));
    }

    [Fact]
    public void A_confined_render_writes_the_same_tree_as_in_process()
    {
        var aci = RichAci();
        AssertSameTree(aci);
        var confined = new StoreHarness(_tmp, Confined.Sandbox(), data: "confined");
        var tree = confined.Render(confined.Store.Resolve("example.com/rich"), _tmp["again"]);
        var su = Native.Libc.LStat(Path.Join(tree, "bin/su"));
        Assert.Equal(Convert.ToUInt32("4755", 8), su.Mode & 0xFFF);
        var wall = Native.Libc.LStat(Path.Join(tree, "bin/wall"));
        Assert.Equal((Convert.ToUInt32("2711", 8), 5u), (wall.Mode & 0xFFF, wall.Gid));
        Assert.Equal("kept", Tool.Run("getfattr", null, "--only-values", "-n", "user.rkt-test", Path.Join(tree, "etc/passwd")));
    }

    [Fact]
    public void A_confined_render_of_a_layered_image_and_a_tarred_layout_writes_the_same_tree()
    {
        var layout = Fixtures.BusyboxOci(_tmp);
        AssertSameTree(layout);
        var tarred = _tmp["layout.tar"];
        Tool.Run("tar", layout, "-cf", tarred, "."); // imported through the confined unpacking
        var confined = new StoreHarness(_tmp, Confined.Sandbox(), data: "tarred");
        var tree = confined.Render(confined.Import(tarred, new ImportOptions(Reference: "1.36")), _tmp["tarred-tree"]);
        TreeSnapshot.Take(tree).AssertSameAs(TreeSnapshot.Take(_tmp["expected"]));
    }

    [Fact]
    public void A_hostile_archive_gets_the_same_error_confined()
    {
        var src = Fixtures.AciLayout(_tmp, "src", "example.com/hostile");
        File.CreateSymbolicLink(Path.Join(src, "rootfs/escape"), "../../../../../etc");
        File.WriteAllText(Path.Join(src, "rootfs/evil"), "x");
        Tool.Run("mknod", null, Path.Join(src, "rootfs/null"), "c", "1", "3");
        var cases = new (string Name, string[] TarArgs)[]
        {
            ("symlink", ["manifest", "rootfs", "rootfs/escape"]),
            ("dotdot", ["--transform", "s,^rootfs/evil$,rootfs/../../evil,", "manifest", "rootfs", "rootfs/evil"]),
            ("device", ["manifest", "rootfs", "rootfs/null"]),
        };
        foreach (var (name, tarArgs) in cases)
        {
            var aci = _tmp[name + ".aci"];
            Tool.Run("tar", src, ["-cf", aci, "--no-recursion", .. tarArgs]);
            var plan = new ExtractionPlan { Archives = [new PlannedArchive(ArchiveLayout.Aci, 0, "ACI " + name)] };
            var expected = Record.Exception(() => PlannedExtraction.Run(null, plan, _tmp.Dir(name + "-in"), [aci]));
            Assert.True(expected is ImageException, $"{name}: {expected}");
            var actual = Assert.ThrowsAny<ImageException>(() => PlannedExtraction.Run(Confined.Sandbox(), plan, _tmp.Dir(name + "-confined"), [aci]));
            Assert.Equal(expected.GetType(), actual.GetType());
            Assert.Equal(expected.Message, actual.Message);
            Assert.Equal((expected as UnsafeEntryException)?.Entry, (actual as UnsafeEntryException)?.Entry);
        }
    }

    [Fact]
    public void The_child_sees_no_host_path_and_dies_on_a_socket()
    {
        var aci = RichAci();
        var lines = new List<string>();
        var plan = new ExtractionPlan { Archives = [new PlannedArchive(ArchiveLayout.Aci, 0, "ACI rich")] };
        var sandbox = Confined.Sandbox(ExtractionContract.TestHook.Escape, (line, _) => lines.Add(line));
        var error = Assert.Throws<ImageException>(() => sandbox.Run(plan, _tmp.Dir("escape"), [aci]));
        Assert.Contains("killed by SIGSYS", error.Message);
        Assert.Equal(
        [
            "open /etc/passwd: No such file or directory",
            "open /proc/1/root/etc/passwd: No such file or directory",
            "open /proc/self/exe: No such file or directory",
            "socket(AF_INET)",
        ], lines);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_tmp["escape"])); // it died before extracting
    }

    [Fact]
    public void The_child_runs_under_its_own_id_with_extraction_capabilities_only()
    {
        var aci = RichAci();
        var plan = new ExtractionPlan { Archives = [new PlannedArchive(ArchiveLayout.Aci, 0, "ACI rich")] };
        var seen = new List<string>();
        string root = "";
        var sandbox = Confined.Sandbox(ExtractionContract.TestHook.Pause, (line, pid) =>
        {
            if (!line.StartsWith("paused", StringComparison.Ordinal)) return;
            root = string.Join(",", Directory.EnumerateFileSystemEntries($"/proc/{pid}/root").Select(Path.GetFileName).Order(StringComparer.Ordinal));
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                var status = File.ReadAllLines(Path.Join(task, "status")).ToDictionary(l => l[..l.IndexOf(':')], l => l[(l.IndexOf(':') + 1)..].Trim());
                bool main = Path.GetFileName(task) == pid.ToString();
                seen.Add($"{(main ? "main" : "other")} uid={status["Uid"]} gid={status["Gid"]} eff={status["CapEff"]} prm={status["CapPrm"]} inh={status["CapInh"]} amb={status["CapAmb"]}"
                    + $" nnp={status["NoNewPrivs"]} seccomp={status["Seccomp"]}" + (main ? $" bnd={status["CapBnd"]}" : ""));
            }
        });
        sandbox.Run(plan, _tmp.Dir("paused"), [aci]);
        Assert.Equal("rootfs", root); // the child's whole root: the destination, nothing of the host
        string id = ExtractionJail.Id.ToString();
        string ids = $"uid={id}\t{id}\t{id}\t{id} gid={id}\t{id}\t{id}\t{id}";
        string needed = ExtractionJail.Needed(devices: false).ToString("x16");
        Assert.Contains($"main {ids} eff={needed} prm={needed} inh=0000000000000000 amb=0000000000000000 nnp=1 seccomp=2 bnd={needed}", seen);
        var others = seen.Where(s => s.StartsWith("other", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(others); // the runtime's threads
        Assert.All(others, s => Assert.Equal($"other {ids} eff=0000000000000000 prm=0000000000000000 inh=0000000000000000 amb=0000000000000000 nnp=1 seccomp=2", s));
        Assert.True(File.Exists(Path.Join(_tmp["paused"], "bin/su"))); // and then it extracted
    }

    [Fact]
    public async Task Rkt_kvm_confines_its_renders()
    {
        var aci = Fixtures.BusyboxAci(_tmp);
        var dir = _tmp["cli-data"];
        var import = await CliProcess.Run("--dir", dir, "image", "import", aci);
        Assert.True(import.Rc == 0, import.Err);
        var extract = await CliProcess.Run("--debug", "--dir", dir, "image", "extract", Fixtures.AciName, _tmp["cli-out"]);
        Assert.True(extract.Rc == 0, extract.Err);
        Assert.Contains("Extraction child", extract.Err);
        Assert.DoesNotContain("in-process", extract.Err);
        Assert.True(File.Exists(Path.Join(_tmp["cli-out"], "rootfs/bin/busybox")));
    }

    [Fact]
    public void A_test_host_extracts_in_process()
    {
        Assert.Null(ExtractionSandbox.ForThisProcess()); // not rkt-kvm: it cannot re-execute itself as it
    }

    [Fact]
    public void The_filter_kills_what_extraction_never_does_and_lets_files_through()
    {
        var program = ExtractionSyscallFilter.Build();
        const uint Kill = ExtractionSyscallFilter.RetKillProcess, Allow = ExtractionSyscallFilter.RetAllow;
        foreach (var name in new[] { "socket", "execve", "ptrace", "mount", "pivot_root", "unshare", "setns", "setresuid", "bpf", "io_uring_setup", "open_by_handle_at" })
            Assert.Equal(Kill, ExtractionSyscallFilter.Evaluate(program, ExtractionSyscallFilter.Denied[name]));
        foreach (int nr in new[] { 0, 1, 3, 9, 10, 56, 83, 86, 88, 92, 94, 133, 188, 257, 260, 263, 280 }) // read … utimensat
            Assert.Equal(Allow, ExtractionSyscallFilter.Evaluate(program, nr));
        // Threads but no namespaces: clone with CLONE_NEWUSER is killed; clone3 says ENOSYS, so glibc clones.
        Assert.Equal(Allow, ExtractionSyscallFilter.Evaluate(program, 56, firstArgument: 0x003D0F00));
        Assert.Equal(Kill, ExtractionSyscallFilter.Evaluate(program, 56, firstArgument: 0x003D0F00 | 0x10000000));
        Assert.Equal(Rkt.Kvm.Posix.SeccompProgram.RetErrno | 38, ExtractionSyscallFilter.Evaluate(program, 435));
        Assert.Equal(Kill, ExtractionSyscallFilter.Evaluate(program, 0, arch: 0x40000003 /* i386 */));
        Assert.Equal(Kill, ExtractionSyscallFilter.Evaluate(program, 0x40000000 | 41 /* x32 socket */));
    }

    [Fact]
    public void Errors_cross_the_report_line_unchanged()
    {
        var entry = "rootfs/evil\tname\nwith\\breaks";
        var refused = new UnsafeEntryException(entry, "it is evil");
        var back = Assert.IsType<UnsafeEntryException>(ExtractionContract.ParseError(ExtractionContract.ErrorLine(refused)));
        Assert.Equal((refused.Entry, refused.Message), (back.Entry, back.Message));
        var image = ExtractionContract.ParseError(ExtractionContract.ErrorLine(new ImageException("bad\nimage")));
        Assert.Equal((typeof(ImageException), "bad\nimage"), (image.GetType(), image.Message));
        Assert.IsType<IOException>(ExtractionContract.ParseError(ExtractionContract.ErrorLine(new IOException("disk full"))));
        Assert.Equal(["__extract", "--debug", "--test-hook=pause"], ExtractionContract.ToArgs(new(true, ExtractionContract.TestHook.Pause)));
        Assert.Equal(new ExtractionContract.Arguments(true, ExtractionContract.TestHook.Escape), ExtractionContract.Parse(["--debug", "--test-hook=escape"]));
        Assert.Throws<ArgumentException>(() => ExtractionContract.Parse(["--root=/"]));
    }
}

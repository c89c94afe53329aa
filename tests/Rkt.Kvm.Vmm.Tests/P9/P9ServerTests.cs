using System.Buffers.Binary;
using System.Diagnostics;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Vmm.Tests.NineP;

/// <summary>
/// A real temporary directory full of traps, exported read-write ("rw") and read-only ("ro"), with a
/// secret file next to it that no request may ever reach.
/// </summary>
public sealed class TrapTree : IDisposable
{
    public string Root { get; } = Directory.CreateTempSubdirectory("rkt-kvm-9p-").FullName;
    public string Export => Path.Combine(Root, "export");
    public string Secret => Path.Combine(Root, "secret.txt");
    public bool HasDeviceNode { get; }

    public TrapTree()
    {
        Directory.CreateDirectory(Path.Combine(Export, "sub"));
        File.WriteAllText(Secret, "TOP SECRET");
        File.WriteAllText(Path.Combine(Export, "file.txt"), "hello");
        File.WriteAllText(Path.Combine(Export, "sub", "inner.txt"), "inner");
        File.CreateSymbolicLink(Path.Combine(Export, "link_root"), "/");
        File.CreateSymbolicLink(Path.Combine(Export, "link_up"), "../..");
        File.CreateSymbolicLink(Path.Combine(Export, "link_secret"), Secret);
        File.CreateSymbolicLink(Path.Combine(Export, "link_abs"), "/etc/hostname");
        Directory.CreateSymbolicLink(Path.Combine(Export, "link_sub"), "sub");
        Run("ln", Path.Combine(Export, "file.txt"), Path.Combine(Export, "hard.txt"));
        Run("mkfifo", Path.Combine(Export, "fifo"));
        HasDeviceNode = Run("mknod", Path.Combine(Export, "null"), "c", "1", "3") == 0;
    }

    private static int Run(string program, params string[] args)
    {
        var p = Process.Start(new ProcessStartInfo(program, args) { RedirectStandardError = true })!;
        p.WaitForExit();
        return p.ExitCode;
    }

    public P9Server Server(int maxFids = P9FidTable.DefaultMaxFids)
    {
        var server = new P9Server(P9TestClient.Log, maxFids);
        server.AddExport("rw", Export, readOnly: false);
        server.AddExport("ro", Export, readOnly: true);
        return server;
    }

    public void Dispose() => Directory.Delete(Root, recursive: true);
}

public sealed class P9ServerTests : IClassFixture<TrapTree>
{
    private const uint Root = 0, A = 1, B = 2, C = 3;
    private const uint ORdonly = 0, OWronly = 1, ORdwr = 2, OTrunc = 0x200;
    private readonly TrapTree _tree;

    public P9ServerTests(TrapTree tree) => _tree = tree;

    private P9TestClient Session(string export = "rw", int maxFids = P9FidTable.DefaultMaxFids)
    {
        var c = new P9TestClient(_tree.Server(maxFids));
        c.Version();
        c.Attach(Root, export);
        return c;
    }

    [Fact]
    public void Version_negotiates_msize_and_an_unknown_version_is_answered_unknown()
    {
        var c = new P9TestClient(_tree.Server());
        var r = c.Rpc<Tversion, Rversion>(new Tversion(1 << 30, "9P2000.L"));
        Assert.Equal(P9.MaxMsize, r.Msize);
        Assert.Equal("9P2000.L", r.Version);
        Assert.Equal("unknown", c.Rpc<Tversion, Rversion>(new Tversion(8192, "9P2000.u")).Version);
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tversion(100, "9P2000.L")));
    }

    [Fact]
    public void Attach_picks_the_export_by_aname()
    {
        var c = new P9TestClient(_tree.Server());
        c.Version();
        Assert.Equal(HostFs.ENOENT, c.Errno(new Tattach(Root, P9.NoFid, "u", "nope", 0)));
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tattach(Root, 5, "u", "rw", 0)));
        Assert.Equal(HostFs.EOPNOTSUPP, c.Errno(new Tauth(5, "u", "rw", 0)));
        Assert.Equal(P9.QidDir, c.Attach(Root, "rw").Type);
    }

    [Fact]
    public void The_listing_root_lists_the_exports_leads_into_them_and_reaches_nothing_else()
    {
        var c = new P9TestClient(_tree.Server());
        c.Version();
        Assert.Equal(P9.QidDir, c.Attach(Root, "/").Type);
        Assert.Equal(["." , "..", "ro", "rw"], Names(c, Root));
        var attr = c.Stat(Root);
        Assert.Equal(2UL, attr.Nlink);
        // Into an export by name, then on as usual; ".." around the root stays in the listing.
        var qids = c.Walk(Root, A, "..", ".", "rw", "sub", "inner.txt");
        Assert.Equal(5, qids.Length);
        c.Open(A, ORdonly);
        Assert.Equal("inner"u8.ToArray(), c.Read(A, 0, 100));
        Assert.Equal(HostFs.ENOENT, c.Errno(new Twalk(Root, B, ["nope"])));
        Assert.Single(c.Walk(Root, B, "rw", "nope", "x")); // a partial walk answers the qids it got: "rw"
        Assert.Equal(HostFs.ENOENT, c.Errno(new Twalk(Root, C, ["secret.txt"])));
        // Read-only: nothing can be made in the listing itself.
        Assert.Equal(HostFs.EROFS, c.Errno(new Tmkdir(Root, "x", 0x1ED, 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tlcreate(Root, "x", 0, 0x1A4, 0)));
        Assert.Equal(HostFs.EISDIR, c.Errno(new Tlopen(Root, OWronly)));
        // An export removed while walked into through the listing: its fids fail, the listing forgets it.
        var server = c.Server;
        server.RemoveExport("rw");
        Assert.Equal(HostFs.EIO, c.Errno(new Tgetattr(A, P9.StatsBasic)));
        Assert.Equal([".", "..", "ro"], Names(c, Root));
    }

    [Fact]
    public void Dotdot_at_the_root_stays_at_the_root()
    {
        var c = Session();
        var rootQid = c.Stat(Root).Qid;
        var qids = c.Walk(Root, A, "..", "..", "..");
        Assert.All(qids, q => Assert.Equal(rootQid, q));
        Assert.Contains("file.txt", Names(c, A));
        // The secret next to the export is never found, however many ".." come first.
        var partial = c.Walk(Root, B, "..", "..", "secret.txt");
        Assert.Equal(2, partial.Length);
        Assert.Equal(HostFs.EBADF, c.Errno(new Tgetattr(B, P9.StatsBasic)));
        // ".." below the root goes back by name inside the export.
        c.Walk(Root, C, "sub", "..", "sub", "inner.txt");
        c.Open(C, ORdonly);
        Assert.Equal("inner"u8.ToArray(), c.Read(C, 0, 100));
    }

    [Theory]
    [InlineData("link_root", "etc")]
    [InlineData("link_up", "secret.txt")]
    [InlineData("link_sub", "inner.txt")]
    [InlineData("link_secret", null)]
    public void Symlinks_are_never_followed_on_the_host(string link, string? next)
    {
        var c = Session();
        var names = next is null ? new[] { link } : new[] { link, next };
        var qids = c.Walk(Root, A, names);
        Assert.Equal(P9.QidSymlink, qids[0].Type);
        if (next is not null)
        {
            Assert.Single(qids); // the walk stops at the symlink: no fid
            return;
        }
        // Walked to the link itself: opening it is refused, reading it gives the text only.
        Assert.Equal(HostFs.ELOOP, c.Errno(new Tlopen(A, ORdonly)));
        Assert.Equal(_tree.Secret, c.Rpc<Treadlink, Rreadlink>(new Treadlink(A)).Target);
    }

    [Fact]
    public void Readlink_returns_the_text_of_absolute_links()
    {
        var c = Session();
        c.Walk(Root, A, "link_abs");
        Assert.Equal("/etc/hostname", c.Rpc<Treadlink, Rreadlink>(new Treadlink(A)).Target);
        Assert.Equal(HostFs.EINVAL, c.Errno(new Treadlink(Root)));
    }

    [Fact]
    public void Fifos_and_device_nodes_are_never_opened()
    {
        var c = Session();
        c.Walk(Root, A, "fifo");
        var watch = Stopwatch.StartNew();
        Assert.Equal(HostFs.EPERM, c.Errno(new Tlopen(A, ORdonly)));
        Assert.True(watch.ElapsedMilliseconds < 2000);
        // Creating over the FIFO's name is refused too (and does not block).
        Assert.Contains(c.Errno(new Tlcreate(Root, "fifo", OWronly, 0x1a4, 0)), new[] { HostFs.EEXIST, 6 /* ENXIO: no reader */ });
        if (_tree.HasDeviceNode)
        {
            c.Walk(Root, B, "null");
            Assert.Equal(HostFs.EPERM, c.Errno(new Tlopen(B, ORdwr)));
        }
        Assert.Equal(HostFs.EPERM, c.Errno(new Tmknod(Root, "dev", HostFs.S_IFCHR | 0x1b6, 1, 3, 0)));
        Assert.Equal(HostFs.EPERM, c.Errno(new Tmknod(Root, "pipe", HostFs.S_IFIFO | 0x1b6, 0, 0, 0)));
        Assert.False(File.Exists(Path.Combine(_tree.Export, "dev")));
    }

    [Theory]
    [InlineData("")]
    [InlineData("a/b")]
    [InlineData("..")]
    [InlineData(".")]
    [InlineData("x\0y")]
    public void Bad_names_are_refused_everywhere(string name)
    {
        var c = Session();
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tlcreate(Root, name, OWronly, 0x1a4, 0)));
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tmkdir(Root, name, 0x1ed, 0)));
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tsymlink(Root, name, "t", 0)));
        Assert.Equal(HostFs.EINVAL, c.Errno(new Trenameat(Root, "file.txt", Root, name)));
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tunlinkat(Root, name, 0)));
        if (name is not ("." or "..")) Assert.Equal(HostFs.EINVAL, c.Errno(new Twalk(Root, A, [name])));
        Assert.Equal(HostFs.ENAMETOOLONG, c.Errno(new Tmkdir(Root, new string('n', 256), 0x1ed, 0)));
    }

    [Fact]
    public void Hardlinks_inside_the_export_read_their_file()
    {
        var c = Session();
        c.Walk(Root, A, "hard.txt");
        c.Open(A, ORdonly);
        Assert.Equal("hello"u8.ToArray(), c.Read(A, 0, 100));
    }

    /// <summary>On a directory setgid only means "new entries take this group" (and is how shared group
    /// directories work), so it stays, with the sticky bit; setuid goes, as on files.</summary>
    [Fact]
    public void Directories_keep_setgid_and_sticky_but_never_setuid()
    {
        var c = Session();
        string dir = $"shared-{Guid.NewGuid():N}";
        c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(Root, dir, 0x1ED, 0));
        string host = Path.Combine(_tree.Export, dir);
        c.Walk(Root, A, dir);
        c.Rpc<Tsetattr, Rsetattr>(new Tsetattr(A, P9.AttrMode, 0xDFD /* 06775 */, 0, 0, 0, 0, 0, 0, 0));
        Assert.Equal(0x5FDu, UnixMode(host) & 0xFFF); // 02775
        Assert.Equal(0x5FDu, c.Stat(A).Mode & 0xFFF);
        c.Rpc<Tsetattr, Rsetattr>(new Tsetattr(A, P9.AttrMode, 0xFFD /* 07775 */, 0, 0, 0, 0, 0, 0, 0));
        Assert.Equal(0x7FDu, UnixMode(host) & 0xFFF); // 03775
    }

    [Fact]
    public void File_operations_work_and_stay_inside_the_export()
    {
        var c = Session();
        string dir = $"work-{Guid.NewGuid():N}";
        c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(Root, dir, 0x1ed, 0));
        c.Walk(Root, A, dir);
        c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(A, "f", ORdwr, 0xde4 /* 06744: set-id bits must go */, 0));
        Assert.Equal(5u, c.Write(A, 0, "12345"u8.ToArray()));
        Assert.Equal("2345"u8.ToArray(), c.Read(A, 1, 100));
        Assert.Equal(5ul, c.Stat(A).Size);
        string host = Path.Combine(_tree.Export, dir, "f");
        Assert.Equal(0x1e4u, UnixMode(host) & 0xFFF);
        c.Rpc<Tsetattr, Rsetattr>(new Tsetattr(A, P9.AttrSize | P9.AttrMode, 0x9c0 /* 04700 */, 0, 0, 2, 0, 0, 0, 0));
        Assert.Equal("12", File.ReadAllText(host));
        Assert.Equal(0x1c0u, UnixMode(host) & 0xFFF);
        c.Walk(Root, B, dir);
        c.Rpc<Tsymlink, Rsymlink>(new Tsymlink(B, "s", "/etc/passwd", 0));
        c.Walk(Root, C, dir, "f");
        c.Rpc<Tlink, Rlink>(new Tlink(B, C, "h"));
        c.Rpc<Trenameat, Rrenameat>(new Trenameat(B, "h", B, "h2"));
        Assert.Equal("12", File.ReadAllText(Path.Combine(_tree.Export, dir, "h2")));
        c.Open(B, ORdonly);
        Assert.Equal(new[] { ".", "..", "f", "h2", "s" }, c.ReadDir(B, count: 40).Order());
        Assert.Equal(HostFs.ENOTEMPTY, c.Errno(new Tunlinkat(Root, dir, 0x200)));
    }

    [Fact]
    public void A_read_only_export_refuses_every_mutation()
    {
        var c = Session("ro");
        c.Walk(Root, A, "file.txt");
        c.Walk(Root, B, "sub");
        Assert.Equal(HostFs.EROFS, c.Errno(new Tlcreate(B, "n", OWronly, 0x1a4, 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tmkdir(Root, "n", 0x1ed, 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tsymlink(Root, "n", "t", 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tlink(Root, A, "n")));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tmknod(Root, "n", HostFs.S_IFREG | 0x1a4, 0, 0, 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Trenameat(Root, "file.txt", Root, "n")));
        Assert.Equal(HostFs.EROFS, c.Errno(new Trename(A, Root, "n")));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tunlinkat(Root, "file.txt", 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tsetattr(A, P9.AttrSize, 0, 0, 0, 0, 0, 0, 0, 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tsetattr(A, P9.AttrMode, 0x1ff, 0, 0, 0, 0, 0, 0, 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Txattrcreate(A, "user.x", 1, 0)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tlopen(A, OWronly)));
        Assert.Equal(HostFs.EROFS, c.Errno(new Tlopen(A, ORdonly | OTrunc)));
        c.Walk(Root, C, "file.txt");
        Assert.Equal(HostFs.EROFS, c.Errno(new Tremove(C)));
        Assert.Equal(HostFs.EBADF, c.Errno(new Tgetattr(C, P9.StatsBasic))); // Tremove clunks even when it fails
        c.Open(A, ORdonly);
        Assert.Equal(HostFs.EROFS, c.Errno(new Twrite(A, 0, 1), [1]));
        Assert.Equal("hello", File.ReadAllText(Path.Combine(_tree.Export, "file.txt")));
    }

    private static uint UnixMode(string path) => OperatingSystem.IsWindows() ? 0 : (uint)File.GetUnixFileMode(path);

    [Fact]
    public async Task Removing_an_export_waits_for_requests_inside_it()
    {
        var server = new P9Server(P9TestClient.Log);
        server.AddExport("busy", _tree.Export, readOnly: false);
        var c = new P9TestClient(server);
        c.Version();
        c.Attach(Root, "busy");
        var errors = 0;
        using var stop = new CancellationTokenSource();
        var readers = Enumerable.Range(0, 3).Select(i => Task.Run(() =>
        {
            var mine = new P9TestClient(server);
            uint fid = 100 + (uint)i;
            try
            {
                mine.Walk(Root, fid, "file.txt");
                mine.Open(fid, ORdonly);
                while (!stop.IsCancellationRequested) mine.Read(fid, 0, 5);
            }
            catch (P9Error e) when (e.Errno is HostFs.EIO or HostFs.EBADF) { }
            catch (Exception) { Interlocked.Increment(ref errors); }
        })).ToArray();
        Thread.Sleep(100);
        server.RemoveExport("busy");
        stop.Cancel();
        await Task.WhenAll(readers);
        Assert.Equal(0, errors);
        Assert.Empty(server.ListExports());
    }

    [Fact]
    public void The_fid_table_is_bounded()
    {
        var c = Session(maxFids: 8);
        for (uint i = 1; i < 8; i++) c.Walk(Root, i);
        Assert.Equal(HostFs.EMFILE, c.Errno(new Twalk(Root, 8, [])));
        c.Clunk(1);
        c.Walk(Root, 8);
        Assert.Equal(HostFs.EEXIST, c.Errno(new Twalk(Root, 8, [])));
        Assert.Equal(HostFs.EBADF, c.Errno(new Tgetattr(999, P9.StatsBasic)));
    }

    [Fact]
    public void The_fid_limit_counts_the_second_host_fd_of_an_open_fid()
    {
        // An open fid holds its path fd and its I/O fd: a limit on fids alone would let a guest hold
        // twice the limit in host fds, past the VMM's own file limit (LockDown.MaxOpenFiles).
        const uint OExcl = 0x80;
        var c = Session(maxFids: 8); // Root: 1 host fd
        var fids = c.Server.FidTable;
        for (uint i = 1; i <= 3; i++)
        {
            c.Walk(Root, i, "file.txt");
            c.Open(i, ORdonly);
        }
        c.Walk(Root, 4, "sub"); // 1 + 3 * 2 + 1 = 8
        Assert.Equal(8, fids.HostFds);
        Assert.Equal(HostFs.EMFILE, c.Errno(new Twalk(Root, 5, [])));
        Assert.Equal(HostFs.EMFILE, c.Errno(new Tlopen(4, ORdonly)));

        c.Clunk(1); // gives back both of its fds
        c.Open(4, ORdonly);
        c.Walk(Root, 5);
        Assert.Equal(8, fids.HostFds);
        string name = $"fdlimit-{Guid.NewGuid():N}";
        Assert.Equal(HostFs.EMFILE, c.Errno(new Tlcreate(5, name, ORdwr, 0x1a4, 0)));
        Assert.False(File.Exists(Path.Combine(_tree.Export, name)));

        c.Clunk(2);
        for (int i = 0; i < 3; i++) Assert.Equal(HostFs.EEXIST, c.Errno(new Tlcreate(5, "file.txt", ORdwr | OExcl, 0x1a4, 0)));
        Assert.Equal(HostFs.ELOOP, c.Errno(new Tlopen(RootLink(c, 6), ORdonly))); // failed opens reserve nothing
        c.Clunk(6);
        Assert.Equal(6, fids.HostFds);
        c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(5, name, ORdwr, 0x1a4, 0)); // fid 5 is now the open file
        c.Walk(Root, 6);
        Assert.Equal(8, fids.HostFds);
        Assert.Equal(HostFs.EMFILE, c.Errno(new Twalk(Root, 7, [])));

        foreach (uint f in new uint[] { 3, 4, 5, 6 }) c.Clunk(f);
        Assert.Equal(1, fids.HostFds);
        c.Version(); // a new session starts from nothing
        Assert.Equal(0, fids.HostFds);
    }

    /// <summary>Walks <paramref name="fid"/> to the export's symlink "link_sub" (opening it fails with ELOOP).</summary>
    private static uint RootLink(P9TestClient c, uint fid)
    {
        c.Walk(Root, fid, "link_sub");
        return fid;
    }

    [Fact]
    public void Locks_conflict_between_two_fids_without_blocking()
    {
        var c = Session();
        string name = $"lock-{Guid.NewGuid():N}";
        c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(Root, name, ORdwr, 0x1a4, 0)); // fid Root is now the file
        c.Attach(A, "rw");
        c.Walk(A, B, name);
        c.Open(B, ORdwr);
        Assert.Equal(P9.LockSuccess, c.Rpc<Tlock, Rlock>(new Tlock(Root, P9.LockWrite, 0, 0, 0, 1, "g")).Status);
        Assert.Equal(P9.LockBlocked, c.Rpc<Tlock, Rlock>(new Tlock(B, P9.LockWrite, 1, 0, 0, 2, "g")).Status);
        Assert.Equal(P9.LockWrite, c.Rpc<Tgetlock, Rgetlock>(new Tgetlock(B, P9.LockWrite, 0, 0, 2, "g")).LockType);
        Assert.Equal(P9.LockSuccess, c.Rpc<Tlock, Rlock>(new Tlock(Root, P9.LockUnlock, 0, 0, 0, 1, "g")).Status);
        Assert.Equal(P9.LockSuccess, c.Rpc<Tlock, Rlock>(new Tlock(B, P9.LockRead, 0, 0, 0, 2, "g")).Status);
        Assert.Equal(P9.LockUnlock, c.Rpc<Tgetlock, Rgetlock>(new Tgetlock(B, P9.LockRead, 0, 0, 2, "g")).LockType);
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tlock(B, 7, 0, 0, 0, 2, "g")));
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tlock(B, P9.LockRead, 0, ulong.MaxValue, 1, 2, "g")));
    }

    [Fact]
    public void Xattrs_are_read_through_an_xattr_fid()
    {
        string file = Path.Combine(_tree.Export, $"x-{Guid.NewGuid():N}");
        File.WriteAllText(file, "x");
        var set = Process.Start(new ProcessStartInfo("setfattr", ["-n", "user.color", "-v", "blue", file]))!;
        set.WaitForExit();
        var c = Session();
        c.Walk(Root, A, Path.GetFileName(file));
        Assert.Equal(4ul, c.Rpc<Txattrwalk, Rxattrwalk>(new Txattrwalk(A, B, "user.color")).Size);
        Assert.Equal("blue"u8.ToArray(), c.Read(B, 0, 100));
        var list = c.Rpc<Txattrwalk, Rxattrwalk>(new Txattrwalk(A, C, ""));
        Assert.Equal("user.color\0"u8.ToArray(), c.Read(C, 0, (uint)list.Size));
        Assert.Equal(HostFs.ENODATA, c.Errno(new Txattrwalk(A, 50, "trusted.x")));
        Assert.Equal(HostFs.EOPNOTSUPP, c.Errno(new Txattrcreate(A, "user.y", 1, 0)));
    }

    [Fact]
    public void Malformed_truncated_oversized_and_unknown_requests_get_rlerror()
    {
        var c = Session();
        Assert.Equal(HostFs.EPROTO, P9TestClient.ErrnoOf(c.Raw([1, 2, 3])));
        var clunk = P9TestClient.Encode(new Tclunk(77));
        Assert.Equal(HostFs.EPROTO, P9TestClient.ErrnoOf(c.Raw(clunk, total: clunk.Length - 1))); // size says more than was sent
        var huge = new byte[64];
        BinaryPrimitives.WriteUInt32LittleEndian(huge, 600 * 1024);
        huge[4] = P9.Tgetattr;
        Assert.Equal(HostFs.EMSGSIZE, P9TestClient.ErrnoOf(c.Raw(huge, total: 600 * 1024)));
        var unknown = P9TestClient.Encode(new Tclunk(77));
        unknown[4] = 99;
        Assert.Equal(HostFs.EINVAL, P9TestClient.ErrnoOf(c.Raw(unknown)));
        var reply = P9TestClient.Encode(new Rclunk());
        Assert.Equal(HostFs.EINVAL, P9TestClient.ErrnoOf(c.Raw(reply)));
        var shortWalk = P9TestClient.Encode(new Twalk(0, 1, ["abc"]));
        BinaryPrimitives.WriteUInt32LittleEndian(shortWalk, (uint)shortWalk.Length - 2);
        Assert.Equal(HostFs.EPROTO, P9TestClient.ErrnoOf(c.Raw(shortWalk)));
        // A write whose count exceeds the data sent.
        var write = P9TestClient.Encode(new Twrite(0, 0, 1000), data: new byte[10]);
        Assert.Equal(HostFs.EPROTO, P9TestClient.ErrnoOf(c.Raw(write)));
        // Reads beyond what the guest's buffer holds are cut to it, never past it.
        c.Walk(Root, A, "file.txt");
        c.Open(A, ORdonly);
        Assert.Equal(HostFs.EINVAL, c.Errno(new Tread(A, ulong.MaxValue, 10)));
        var small = c.Raw(P9TestClient.Encode(new Tread(A, 0, 1000)), replyCapacity: 13);
        Assert.Equal(13, small.Length);
        Assert.Empty(c.Raw(P9TestClient.Encode(new Tread(A, 0, 1000)), replyCapacity: 5));
    }

    private static List<string> Names(P9TestClient c, uint dirFid)
    {
        c.Walk(dirFid, 900);
        c.Open(900, ORdonly);
        var names = c.ReadDir(900);
        c.Clunk(900);
        return names;
    }
}

/// <summary>Counts the whole process's descriptors, so it runs alone (see <see cref="SoloCollection"/>).</summary>
[Collection(SoloCollection.Name)]
public sealed class P9ExportRemovalTests : IClassFixture<TrapTree>
{
    private const uint Root = 0, A = 1, B = 2, C = 3, ORdonly = 0;
    private readonly TrapTree _tree;

    public P9ExportRemovalTests(TrapTree tree) => _tree = tree;

    /// <summary>Descriptors open on the export (finalizers of other tests' sessions may close unrelated ones meanwhile).</summary>
    private int OpenFdCount()
    {
        int n = 0;
        foreach (var fd in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            try { if (new FileInfo(fd).LinkTarget?.StartsWith(_tree.Export, StringComparison.Ordinal) == true) n++; }
            catch (IOException) { }
        }
        return n;
    }

    [Fact]
    public void Removing_an_export_closes_its_fds_and_later_requests_fail_cleanly()
    {
        var server = new P9Server(P9TestClient.Log);
        int before = OpenFdCount();
        server.AddExport("gone", _tree.Export, readOnly: false);
        var c = new P9TestClient(server);
        c.Version();
        c.Attach(Root, "gone");
        c.Walk(Root, A, "file.txt");
        c.Open(A, ORdonly);
        c.Walk(Root, B, "sub");
        c.Open(B, ORdonly);
        Assert.Equal(before + 6, OpenFdCount()); // root + 3 O_PATH fids + 2 open fds
        Assert.Equal(6, server.RemoveExport("gone"));
        Assert.Equal(before, OpenFdCount());
        Assert.Equal(HostFs.EIO, c.Errno(new Tread(A, 0, 10)));
        Assert.Equal(HostFs.EIO, c.Errno(new Twalk(Root, C, ["sub"])));
        Assert.Equal(HostFs.ENOENT, c.Errno(new Tattach(C, P9.NoFid, "u", "gone", 0)));
        c.Clunk(A);
        Assert.Throws<ArgumentException>(() => server.RemoveExport("gone"));
    }

}

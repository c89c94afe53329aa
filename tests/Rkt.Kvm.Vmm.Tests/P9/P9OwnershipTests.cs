using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Tmds.Linux;

namespace Rkt.Kvm.Vmm.Tests.NineP;

/// <summary>
/// New entries belong to the guest user that made them (the attach's uid, the request's gid) with
/// exactly the mode asked for, whatever the VMM's umask; set-id rules as everywhere. Each test has
/// its own export directory; the tests run as root, so every chown works.
/// </summary>
public sealed class P9OwnershipTests : IDisposable
{
    private const uint Root = 0, A = 1, B = 2, C = 3, D = 4, E = 5, F = 6;
    private const uint ORdonly = 0, ORdwr = 2, OExcl = 0x80;
    private const uint App = 1000;
    private readonly string _export = Directory.CreateTempSubdirectory("rkt-kvm-9p-owner-").FullName;
    private readonly P9Server _server;

    public P9OwnershipTests()
    {
        _server = new P9Server(P9TestClient.Log);
        _server.AddExport("rw", _export, readOnly: false);
    }

    public void Dispose()
    {
        _server.Dispose();
        Directory.Delete(_export, recursive: true);
    }

    /// <summary>A session attached as <paramref name="uid"/> on fid <see cref="Root"/>.</summary>
    private P9TestClient Session(uint uid)
    {
        var c = new P9TestClient(_server);
        c.Version();
        c.Rpc<Tattach, Rattach>(new Tattach(Root, P9.NoFid, "app", "rw", uid));
        return c;
    }

    /// <summary>The host's lstat of an entry in the export.</summary>
    private HostStat Lstat(string name)
    {
        using var fd = HostFs.OpenHostPath(Path.Combine(_export, name), HostFs.O_PATH | HostFs.O_NOFOLLOW);
        return HostFs.Stat(fd);
    }

    private void AssertOwner(string name, uint uid, uint gid)
    {
        var st = Lstat(name);
        Assert.True(st.Uid == uid && st.Gid == gid, $"{name} is {st.Uid}:{st.Gid} on the host, not {uid}:{gid}");
    }

    /// <summary>Makes one entry of each kind in the export root through <paramref name="dirFid"/> (which Tlcreate turns into the file).</summary>
    private static void MakeAll(P9TestClient c, uint dirFid, uint scratch, string prefix, uint gid)
    {
        c.Walk(dirFid, scratch);
        c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(scratch, prefix + "dir", HostFs.S_IFDIR | 0x1ED, gid));
        c.Rpc<Tsymlink, Rsymlink>(new Tsymlink(scratch, prefix + "link", "/etc/passwd", gid));
        c.Rpc<Tmknod, Rmknod>(new Tmknod(scratch, prefix + "node", HostFs.S_IFREG | 0x1A4, 0, 0, gid));
        c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(dirFid, prefix + "file", ORdwr, 0x1A4, gid));
    }

    [Fact]
    public void Entries_made_by_a_guest_user_are_that_users_on_the_host()
    {
        var c = Session(App);
        MakeAll(c, Root, A, "", 1001);
        foreach (var name in new[] { "dir", "link", "node", "file" }) AssertOwner(name, App, 1001);
        Assert.True(Lstat("link").IsSymlink); // the link itself was chowned, not /etc/passwd
        Assert.Equal(0u, Lstat("/etc/passwd").Uid);
        // The guest sees the same through 9p (fid Root is now the created file).
        var attr = c.Stat(Root);
        Assert.Equal((App, 1001u), (attr.Uid, attr.Gid));
    }

    [Fact]
    public void An_attach_without_a_uid_makes_roots_entries()
    {
        var c = Session(P9.NoUid);
        MakeAll(c, Root, A, "", 1001);
        foreach (var name in new[] { "dir", "link", "node", "file" }) AssertOwner(name, 0, 1001);
    }

    [Fact]
    public void Walked_fids_keep_the_user_that_attached_and_each_attach_has_its_own()
    {
        var c = Session(App);
        c.Rpc<Tattach, Rattach>(new Tattach(D, P9.NoFid, "other", "rw", 2000));
        c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(Root, "sub", HostFs.S_IFDIR | 0x1ED, 1001));
        // A clone, a clone of the clone, a walk into a directory and back out, a walk in place (fid == newfid).
        c.Walk(Root, A);
        c.Walk(A, B);
        MakeAll(c, B, C, "clone-", 1001);
        c.Walk(Root, E, "sub", "..", "sub");
        c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(E, "deep", HostFs.S_IFDIR | 0x1ED, 1001));
        c.Walk(E, E, "deep");
        c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(E, "file", ORdwr, 0x1A4, 1001));
        foreach (var name in new[] { "sub", "clone-dir", "clone-link", "clone-node", "clone-file", "sub/deep", "sub/deep/file" }) AssertOwner(name, App, 1001);
        // Another user's attach in the same session: its own fids, its own entries.
        c.Walk(D, F, "sub");
        c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(F, "theirs", HostFs.S_IFDIR | 0x1ED, 2000));
        AssertOwner("sub/theirs", 2000, 2000);
    }

    /// <summary>The guest applied its own umask already: the VMM's (022 here, set for the test) must not take more bits.</summary>
    [Fact]
    public void Modes_arrive_exactly_whatever_the_VMMs_umask()
    {
        var old = LibC.umask(0x12); // 022
        try
        {
            var c = Session(App);
            c.Walk(Root, A);
            c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(A, "dir", HostFs.S_IFDIR | 0x5FF /* 02777 */, 1001));
            c.Rpc<Tmkdir, Rmkdir>(new Tmkdir(A, "dir-suid", HostFs.S_IFDIR | 0xFFF /* 07777 */, 1001));
            c.Rpc<Tmknod, Rmknod>(new Tmknod(A, "node", HostFs.S_IFREG | 0xDFF /* 06777 */, 0, 0, 1001));
            c.Walk(Root, B);
            c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(B, "file", ORdwr, 0x1FF /* 0777 */, 1001));
            c.Walk(Root, C);
            c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(C, "file-setid", ORdwr, 0xDFF /* 06777 */, 1001));
            Assert.Equal(0x5FFu, Lstat("dir").Mode & 0xFFF); // 02777: a directory keeps setgid after its chown
            Assert.Equal(0x7FFu, Lstat("dir-suid").Mode & 0xFFF); // 03777: never setuid
            Assert.Equal(0x1FFu, Lstat("node").Mode & 0xFFF); // files never set-id
            Assert.Equal(0x1FFu, Lstat("file").Mode & 0xFFF);
            Assert.Equal(0x1FFu, Lstat("file-setid").Mode & 0xFFF);
            Assert.Equal(0x1FFu, c.Stat(B).Mode & 0xFFF);
            // The kernel keeps a directory's setgid on a later chown too (it clears set-id bits on files only).
            c.Walk(Root, D, "dir");
            c.Rpc<Tsetattr, Rsetattr>(new Tsetattr(D, P9.AttrUid | P9.AttrGid, 0, 2000, 2002, 0, 0, 0, 0, 0));
            AssertOwner("dir", 2000, 2002);
            Assert.Equal(0x5FFu, Lstat("dir").Mode & 0xFFF);
        }
        finally
        {
            LibC.umask(old);
        }
    }

    /// <summary>Tlcreate without O_EXCL on a name that exists opens the file as it is: only what the server made changes hands.</summary>
    [Fact]
    public void An_existing_file_keeps_its_owner_and_mode()
    {
        string host = Path.Combine(_export, "existing");
        File.WriteAllText(host, "root's");
        using (var fd = HostFs.OpenHostPath(host, HostFs.O_PATH)) HostFs.Chmod(fd, 0x180); // 0600
        var c = Session(App);
        c.Walk(Root, A);
        Assert.Equal(HostFs.EEXIST, c.Errno(new Tlcreate(A, "existing", ORdwr | OExcl, 0x1FF, 1001)));
        c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(A, "existing", ORdonly, 0x1FF, 1001));
        Assert.Equal("root's"u8.ToArray(), c.Read(A, 0, 100));
        AssertOwner("existing", 0, 0);
        Assert.Equal(0x180u, Lstat("existing").Mode & 0xFFF); // 0600
    }

    /// <summary>A new entry whose owner cannot be set is removed: the request fails and nothing the guest user could not use stays.</summary>
    [Fact]
    public void An_entry_whose_owner_cannot_be_set_is_removed()
    {
        var c = Session(App);
        File.WriteAllText(Path.Combine(_export, "keep"), "x");
        _server.ChownNewEntries = (_, _, _) => throw new P9Error(HostFs.EPERM, "chown refused (test)");
        c.Walk(Root, A);
        int fds = _server.FidTable.HostFds;
        Assert.Equal(HostFs.EPERM, c.Errno(new Tmkdir(A, "dir", HostFs.S_IFDIR | 0x1ED, 1001)));
        Assert.Equal(HostFs.EPERM, c.Errno(new Tsymlink(A, "link", "/etc/passwd", 1001)));
        Assert.Equal(HostFs.EPERM, c.Errno(new Tmknod(A, "node", HostFs.S_IFREG | 0x1A4, 0, 0, 1001)));
        Assert.Equal(HostFs.EPERM, c.Errno(new Tlcreate(A, "file", ORdwr, 0x1A4, 1001)));
        Assert.Equal(["keep"], Directory.EnumerateFileSystemEntries(_export).Select(Path.GetFileName));
        // The failed Tlcreate left fid A the directory it was, holding no I/O fd.
        Assert.Equal(fds, _server.FidTable.HostFds);
        Assert.Equal(P9.QidDir, c.Stat(A).Qid.Type);
        // Opening an existing file sets no owner, so that still works.
        c.Rpc<Tlcreate, Rlcreate>(new Tlcreate(A, "keep", ORdonly, 0x1A4, 1001));
    }
}

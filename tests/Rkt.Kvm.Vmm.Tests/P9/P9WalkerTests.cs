using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Vmm.Tests.NineP;

public sealed class P9WalkerTests
{
    /// <summary>The host fds this process holds on files under <paramref name="dir"/>.</summary>
    private static int FdsUnder(string dir) =>
        new DirectoryInfo("/proc/self/fd").EnumerateFileSystemInfos()
            .Count(f => { try { return f.LinkTarget?.StartsWith(dir + "/", StringComparison.Ordinal) == true; } catch (IOException) { return false; } });

    [Fact]
    public void A_walk_from_the_root_that_fails_half_way_closes_what_it_opened()
    {
        var root = Directory.CreateTempSubdirectory("rkt-kvm-9p-walk-").FullName;
        try
        {
            var export = Path.Combine(root, "export");
            Directory.CreateDirectory(Path.Combine(export, "a", "b"));
            File.WriteAllText(Path.Combine(export, "a", "b", "file"), "x");
            using var server = new P9Server(P9TestClient.Log);
            server.AddExport("w", export, readOnly: false);
            var c = new P9TestClient(server);
            c.Version();
            c.Attach(0, "w");
            c.Walk(0, 1, "a", "b", "file");
            // The host moves the fid's parent away: Trename must walk a/b from the root again, and "a" is gone.
            Directory.Move(Path.Combine(export, "a"), Path.Combine(export, "gone"));
            int before = FdsUnder(root);
            Assert.Equal(HostFs.ENOENT, c.Errno(new Trename(1, 0, "moved")));
            Assert.Equal(HostFs.ENOENT, c.Errno(new Tremove(1)));
            Assert.Equal(before - 1, FdsUnder(root)); // Tremove clunked fid 1; nothing else stays open
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}

using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Rkt.Kvm.Vmm.Client;
using Rkt.Kvm.Vmm.Client.Control;
using Tmds.Linux;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// One boot of a hostile guest (issue 17): root in the VM runs its own code against the VMM's 9p
/// server (tests/guest/hostile.c, `rkt.init=hostile`, out/hostile-initrd.cpio). The host serves
/// exports "a" and "b" (read-write) and "ro" (read-only) from one directory that also holds a
/// secret file and a sibling directory, fingerprints everything outside the read-write exports
/// before the boot and after the VM ended, and, while the guest holds every fid the server will
/// give, asks the VMM for its status on a new control connection (the VMM must still have file
/// descriptors for it). Then it stops the VM through the control socket. The VMM is confined as
/// stage1 runs a pod's: jailed, its seccomp filter on, and dropped to an unprivileged user.
/// The guest then takes the vsock device (tests/guest/hostile-vsock.c) and the net device
/// (hostile-net.c) from its kernel and sends them malformed traffic; the host serves an echo
/// listener (<c>&lt;vsock&gt;_5000</c>) and a listener that never reads (<c>_5002</c>), connects
/// into the guest through the hybrid socket when it says "vsock-serving", and counts the VMM's
/// threads and file descriptors before and after the attacks.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostileGuestFixture : IDisposable
{
    /// <summary>The guest knows only the prefix: it looks for it in whatever an escape attempt reads.</summary>
    public readonly string Secret = "HOSTILE-SECRET-" + Guid.NewGuid().ToString("N");
    private const string Holding = "rkt-kvm-guest: hostile holding", Done = "rkt-kvm-guest: hostile done",
        VsockStart = "rkt-kvm-guest: hostile info vsock: device", VsockServing = "rkt-kvm-guest: hostile vsock-serving",
        NetReady = "rkt-kvm-guest: hostile net-ready";
    public const int EchoPort = 5000, SinkPort = 5002, GuestServePort = 5005;

    public readonly string Root = Directory.CreateTempSubdirectory("rkt-kvm-hostile-vm-").FullName;
    /// <summary>The exports and the sentinels beside them; the VMM's control socket lives outside it.</summary>
    public string Tree => Path.Combine(Root, "tree");
    public string A => Path.Combine(Tree, "a");
    public string B => Path.Combine(Tree, "b");
    public string Ro => Path.Combine(Tree, "ro");
    public string ControlPath => Path.Combine(Root, "control.sock");
    /// <summary>The hybrid vsock socket, in a directory of its own that the VMM's user may search.</summary>
    public string VsockPath => Path.Combine(Root, "vsock", "v.sock");

    /// <summary>What the host got back when it connected into the guest (CONNECT 5005), or why it failed.</summary>
    public readonly string HostConnectResult = "(not tried)";
    public int EchoConnections => _echoConnections;
    private int _echoConnections;
    /// <summary>The VMM's threads and open fds as the vsock attacks began and after the guest finished (-1: not read).</summary>
    public readonly int ThreadsBefore = -1, FdsBefore = -1, ThreadsAfter = -1, FdsAfter = -1;
    public readonly bool AliveAfterAttacks;

    /// <summary>Null when the guest gets a NIC: a tap in a network namespace of the test's own (root and /dev/net/tun needed).</summary>
    public readonly string? NetUnavailable;
    public readonly string Netns = $"rkt-kvm-hostile-{Guid.NewGuid():N}"[..24];
    public const string Tap = "rkvmh0", GuestMac = "02:00:00:00:00:c1";
    public static readonly IPAddress HostIp = IPAddress.Parse("10.124.0.1"), GuestIp = IPAddress.Parse("10.124.0.2");
    public const int GuestUdpPort = 7777, HostUdpPort = 7778;
    /// <summary>The datagrams the guest sent to the host's port, as text.</summary>
    public readonly List<string> FromGuest = [];
    public int SentToGuest => _sentToGuest;
    private int _sentToGuest;
    public string? NetHostFailure;

    public readonly IReadOnlyList<HostFileState> Before = [], After = [];
    public readonly bool SawHolding, SawDone;
    /// <summary>The status asked on a new connection while the guest held every fid, or why it failed.</summary>
    public readonly string HoldingStatus = "(not asked)";
    public readonly ControlReply? HoldingReply, FinalReply, StopReply;
    public readonly string FinalStatus = "(not asked)";
    public readonly string Stdout = "", Stderr = "";
    public readonly int ExitCode = -1;

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public HostileGuestFixture()
    {
        if (!TestEnvironment.HasKvm) return;
        Directory.CreateDirectory(Path.Combine(A, "dir"));
        Directory.CreateDirectory(B);
        Directory.CreateDirectory(Path.Combine(Ro, "dir"));
        Directory.CreateDirectory(Path.Combine(Ro, "empty"));
        Directory.CreateDirectory(Path.Combine(Tree, "sibling", "sub"));
        File.WriteAllText(Path.Combine(A, "victim.txt"), "victim\n");
        File.WriteAllText(Path.Combine(A, "link-src.txt"), "link\n");
        File.WriteAllText(Path.Combine(A, "dir", "inner.txt"), "inner\n");
        File.WriteAllText(Path.Combine(B, "signal.txt"), "wait\n");
        File.WriteAllText(Path.Combine(Ro, "file.txt"), "read-only\n");
        File.SetUnixFileMode(Path.Combine(Ro, "file.txt"), (UnixFileMode)0b110_100_100); // 0644: the guest checks it
        File.WriteAllText(Path.Combine(Ro, "dir", "keep.txt"), "keep\n");
        File.WriteAllText(Path.Combine(Tree, "secret.txt"), Secret + "\n");
        File.SetUnixFileMode(Path.Combine(Tree, "secret.txt"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllText(Path.Combine(Tree, "sibling", "notes.txt"), "sibling notes\n");
        File.WriteAllText(Path.Combine(Tree, "sibling", "sub", "deep.txt"), "deep\n");
        Before = HostFileState.Outside(Tree, "a", "b");
        // The VMM dials <vsock>_<port> as its own unprivileged user: the directory must be searchable, the sockets writable.
        Directory.CreateDirectory(Path.GetDirectoryName(VsockPath)!);
        File.SetUnixFileMode(Root, (UnixFileMode)0b111_001_001);
        File.SetUnixFileMode(Path.GetDirectoryName(VsockPath)!, (UnixFileMode)0b111_001_001);
        using var echo = Listen(VsockPath + "_" + EchoPort);
        using var sink = Listen(VsockPath + "_" + SinkPort);
        using var hostSide = new CancellationTokenSource();
        var sunk = new List<Socket>();
        var echoLoop = Task.Run(() => ServeEcho(echo, hostSide.Token));
        var sinkLoop = Task.Run(() => HoldSink(sink, sunk, hostSide.Token));

        NetUnavailable = Environment.UserName != "root" ? "the NIC part needs root (a network namespace and a tap)"
            : !File.Exists("/dev/net/tun") ? "/dev/net/tun is absent" : null;
        using var netReady = new ManualResetEventSlim();
        Thread? receiver = null, sender = null;
        if (NetUnavailable is null)
        {
            Ip("netns", "add", Netns);
            Ip("-n", Netns, "link", "set", "lo", "up");
            Ip("-n", Netns, "tuntap", "add", "dev", Tap, "mode", "tap");
            Ip("-n", Netns, "addr", "add", $"{HostIp}/24", "dev", Tap);
            Ip("-n", Netns, "link", "set", Tap, "up");
            // The guest's raw driver answers no ARP: the host knows its address, so the flood is not held back by resolution.
            Ip("-n", Netns, "neigh", "replace", GuestIp.ToString(), "lladdr", GuestMac, "dev", Tap, "nud", "permanent");
            receiver = InNetns(() => ReceiveFromGuest(hostSide.Token));
            sender = InNetns(() => SendToGuest(netReady, hostSide.Token));
        }

        var commandLine = new VmmCommandLine
        {
            Kernel = TestEnvironment.Vmlinux,
            Initrd = TestEnvironment.HostileInitrd,
            MemoryMiB = 256,
            // The guest gets the host's paths: the worst case is a guest that knows where it lives.
            Cmdline = $"quiet rkt.init=hostile rkt.hostile.tree={Tree}",
            Control = ControlPath,
            Vsock = VsockPath,
            Net = NetUnavailable is null ? [NetDeviceSpec.Parse($"tap={Tap},netns=/var/run/netns/{Netns},mac={GuestMac}")] : [],
            Exports = [new P9ExportSpec("a", A, false), new P9ExportSpec("b", B, false), new P9ExportSpec("ro", Ro, true)],
            // Confined as a pod's VMM is: jailed (the default) and dropped to an unprivileged user of its own.
            User = new VmmUser(Rkt.Kvm.Stage1.Runtime.PodVmmUser.First + 17, Rkt.Kvm.Stage1.Runtime.PodVmmUser.First + 17),
        };
        using var vmm = new ConsoleVmm(commandLine.ToArguments(), Holding, Done, VsockStart, VsockServing, NetReady);
        try
        {
            var control = new VmmControlClient(ControlPath);
            var first = vmm.WaitForAny(VmmProcess.BootTimeout, Holding, Done);
            if (first == Holding)
            {
                SawHolding = true;
                try
                {
                    // Each call is a new connection: the VMM must accept one while the guest holds its fids.
                    HoldingReply = control.Status();
                    HoldingStatus = $"ok: state {HoldingReply.State}, {HoldingReply.Fids} fids";
                }
                catch (VmmControlException e) { HoldingStatus = e.Message; }
                finally { File.WriteAllText(Path.Combine(B, "signal.txt"), "go\n"); }
            }
            if (vmm.WaitForAny(VmmProcess.BootTimeout, VsockStart, Done) == VsockStart)
                (ThreadsBefore, FdsBefore) = Usage(vmm.Pid);
            if (vmm.WaitForAny(VmmProcess.BootTimeout, VsockServing, Done) == VsockServing)
                HostConnectResult = ConnectIntoGuest(GuestServePort);
            if (vmm.WaitForAny(VmmProcess.BootTimeout, NetReady, Done) == NetReady) netReady.Set();
            SawDone = vmm.WaitFor(Done, VmmProcess.BootTimeout);
            AliveAfterAttacks = !vmm.HasExited;
            if (AliveAfterAttacks) (ThreadsAfter, FdsAfter) = Usage(vmm.Pid);
            if (SawDone)
            {
                try
                {
                    FinalReply = control.Status();
                    FinalStatus = $"ok: state {FinalReply.State}, {FinalReply.Fids} fids";
                    StopReply = control.Stop();
                }
                catch (VmmControlException e) { FinalStatus = e.Message; }
            }
            ExitCode = vmm.WaitForExit(TimeSpan.FromMinutes(1));
            After = HostFileState.Outside(Tree, "a", "b");
            // Kept for reading the guest's timings and escape attempts after a passing run.
            File.WriteAllText(Path.Combine(TestEnvironment.RepositoryRoot, "out", "hostile-console.log"), vmm.Stdout + $"# host: {this}\n".Split("\n--- stdout")[0] + "\n");
        }
        finally
        {
            Stdout = vmm.Stdout;
            Stderr = vmm.Stderr;
            hostSide.Cancel();
            foreach (var s in sunk) s.Dispose();
            if (receiver is not null && !receiver.Join(TimeSpan.FromSeconds(10))) NetHostFailure ??= "the receiver never stopped";
            if (sender is not null && !sender.Join(TimeSpan.FromSeconds(10))) NetHostFailure ??= "the sender never stopped";
        }
    }

    private void ReceiveFromGuest(CancellationToken stop)
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 200 };
        s.Bind(new IPEndPoint(HostIp, HostUdpPort));
        var buffer = new byte[2048];
        while (!stop.IsCancellationRequested)
        {
            try
            {
                int n = s.Receive(buffer);
                lock (FromGuest) FromGuest.Add(Encoding.ASCII.GetString(buffer, 0, n));
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock) { }
        }
    }

    /// <summary>When the guest is ready: a flood of full-size datagrams (it posts no rx buffers meanwhile), then one small one every 20 ms.</summary>
    private void SendToGuest(ManualResetEventSlim ready, CancellationToken stop)
    {
        try { ready.Wait(stop); }
        catch (OperationCanceledException) { return; }
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var to = new IPEndPoint(GuestIp, GuestUdpPort);
        var big = new byte[1400];
        var small = Encoding.ASCII.GetBytes("hostile-host-to-guest");
        for (int i = 0; i < 2000 && !stop.IsCancellationRequested; i++)
        {
            try { s.SendTo(big, to); Interlocked.Increment(ref _sentToGuest); }
            catch (SocketException) { } // the tap's queue is full: that is the point
        }
        while (!stop.IsCancellationRequested)
        {
            try { s.SendTo(small, to); Interlocked.Increment(ref _sentToGuest); }
            catch (SocketException) { }
            stop.WaitHandle.WaitOne(20);
        }
    }

    /// <summary>A background thread that enters the test's network namespace first: its sockets live there.</summary>
    private Thread InNetns(Action work)
    {
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle($"/var/run/netns/{Netns}");
                if (setns((int)ns.DangerousGetHandle(), CloneNewNet) != 0) throw new InvalidOperationException($"setns into {Netns} failed: errno {Marshal.GetLastPInvokeError()}");
                work();
            }
            catch (Exception e) { NetHostFailure ??= e.ToString(); }
        }) { IsBackground = true };
        thread.Start();
        return thread;
    }

    private const int CloneNewNet = 0x4000_0000;
    [DllImport("libc", SetLastError = true)]
    private static extern int setns(int fd, int nstype);

    private static void Ip(params string[] args) => Rkt.Kvm.Stage1.Networking.HostCommand.Check("ip", args);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static Socket Listen(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(path));
        s.Listen(4096);
        File.SetUnixFileMode(path, (UnixFileMode)0b110_110_110);
        return s;
    }

    /// <summary>Echoes every connection's bytes back until it closes.</summary>
    private async Task ServeEcho(Socket listener, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            Socket c;
            try { c = await listener.AcceptAsync(stop); }
            catch (Exception) { return; }
            Interlocked.Increment(ref _echoConnections);
            _ = Task.Run(async () =>
            {
                using (c)
                {
                    var buffer = new byte[64 * 1024];
                    try
                    {
                        int n;
                        while ((n = await c.ReceiveAsync(buffer, SocketFlags.None, stop)) > 0)
                            await c.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, stop);
                    }
                    catch (Exception) { }
                }
            });
        }
    }

    /// <summary>Accepts and never reads: the guest's bytes pile up in the VMM (bounded by the credit it gave).</summary>
    private static async Task HoldSink(Socket listener, List<Socket> held, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                var c = await listener.AcceptAsync(stop);
                lock (held) held.Add(c);
            }
            catch (Exception) { return; }
        }
    }

    /// <summary>The hybrid handshake into the guest's port, one line there and its answer back; what came back, or why nothing did.</summary>
    private string ConnectIntoGuest(int port)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        string last = "no attempt";
        while (DateTime.UtcNow < deadline)
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5000, SendTimeout = 5000 };
            try
            {
                s.Connect(new UnixDomainSocketEndPoint(VsockPath));
                s.Send(Encoding.ASCII.GetBytes($"CONNECT {port}\n"));
                string ok = ReadLine(s);
                if (!ok.StartsWith("OK ", StringComparison.Ordinal)) { last = $"handshake answered '{ok}'"; Thread.Sleep(200); continue; }
                s.Send(Encoding.ASCII.GetBytes("hello-from-host\n"));
                string answer = ReadLine(s);
                s.Shutdown(SocketShutdown.Both);
                return answer;
            }
            catch (SocketException e) { last = e.Message; Thread.Sleep(200); }
        }
        return "failed: " + last;
    }

    private static string ReadLine(Socket s)
    {
        var line = new StringBuilder();
        var one = new byte[1];
        while (s.Receive(one) == 1 && one[0] != (byte)'\n') line.Append((char)one[0]);
        return line.ToString();
    }

    /// <summary>Threads and open file descriptors of a process, from /proc.</summary>
    private static (int Threads, int Fds) Usage(int pid)
    {
        try
        {
            int threads = int.Parse(File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("Threads:", StringComparison.Ordinal))[8..].Trim());
            return (threads, Directory.GetFileSystemEntries($"/proc/{pid}/fd").Length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException) { return (-1, -1); }
    }

    /// <summary>Every file under the exports (symlinks not followed), for what must never reach the host.</summary>
    public IEnumerable<HostFileState> InExports() => new[] { A, B, Ro }.SelectMany(e => HostFileState.Outside(e));

    public override string ToString() =>
        $"exit {ExitCode}; holding: {(SawHolding ? HoldingStatus : "never seen")}; final: {FinalStatus}; host connect: {HostConnectResult}; " +
        $"threads {ThreadsBefore} -> {ThreadsAfter}, fds {FdsBefore} -> {FdsAfter}; echo connections {EchoConnections}; " +
        $"net: {NetUnavailable ?? "on"}, {SentToGuest} datagrams sent to the guest, from it: [{string.Join(", ", FromGuest)}]{(NetHostFailure is null ? "" : "; host failure: " + NetHostFailure)}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";

    public void Dispose()
    {
        if (NetUnavailable is null && TestEnvironment.HasKvm)
        {
            try { Ip("netns", "del", Netns); }
            catch (Rkt.Kvm.Stage1.Stage1Exception) { }
        }
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

/// <summary>What a host file looks like (access time aside): enough to tell that anything about it changed.</summary>
public sealed record HostFileState(string Path, uint Mode, uint Uid, uint Gid, long Size, long Mtime, long Ctime, string Content)
{
    // Constants for patterns (Tmds.LibC has these as properties).
    public const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000, S_ISUID = 0x800, S_ISGID = 0x400;

    public uint Type => Mode & S_IFMT;

    /// <summary>
    /// <paramref name="root"/> and everything under it, except the entries named <paramref name="skipped"/>
    /// directly in it; paths relative to <paramref name="root"/>, in order. Symlinks are recorded, never followed.
    /// </summary>
    public static IReadOnlyList<HostFileState> Outside(string root, params string[] skipped)
    {
        var states = new List<HostFileState>();
        void Visit(string path)
        {
            var state = Of(root, path);
            states.Add(state);
            if (state.Type != S_IFDIR) return;
            foreach (var entry in Directory.GetFileSystemEntries(path).Order(StringComparer.Ordinal))
                if (path != root || !skipped.Contains(System.IO.Path.GetFileName(entry))) Visit(entry);
        }
        Visit(root);
        return states;
    }

    private static unsafe HostFileState Of(string root, string path)
    {
        stat st;
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
            if (LibC.lstat(p, &st) != 0) throw new IOException($"lstat {path}: errno {LibC.errno}");
        uint mode = (uint)st.st_mode;
        string content = (mode & S_IFMT) == S_IFREG ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)))
            : (mode & S_IFMT) == S_IFLNK ? "-> " + new FileInfo(path).LinkTarget
            : "";
        static long Nanoseconds(timespec t) => (long)t.tv_sec * 1_000_000_000L + (long)t.tv_nsec;
        return new HostFileState(System.IO.Path.GetRelativePath(root, path), mode, (uint)st.st_uid, (uint)st.st_gid, (long)st.st_size,
            Nanoseconds(st.st_mtim), Nanoseconds(st.st_ctim), content);
    }

    public override string ToString() => $"{Path} mode {Convert.ToString(Mode, 8)} {Uid}:{Gid} size {Size} mtime {Mtime} ctime {Ctime} {Content}";
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostileGuestTests(HostileGuestFixture vm) : IClassFixture<HostileGuestFixture>
{
    private const uint S_IFDIR = HostFileState.S_IFDIR, S_IFREG = HostFileState.S_IFREG, S_IFLNK = HostFileState.S_IFLNK,
        S_ISUID = HostFileState.S_ISUID, S_ISGID = HostFileState.S_ISGID;

    /// <summary>What tests/guest/hostile.c checks, phase by phase; each must print "hostile ok NAME".</summary>
    public static readonly string[] Checks =
    [
        // Phase 1, through the guest kernel's 9p client on the export-listing root.
        "mount-listing",
        "rename-file-a-to-b", "link-file-a-to-b", "rename-file-a-to-ro", "link-file-a-to-ro", "rename-dir-a-to-b",
        "rename-dir-a-to-ro", "rename-ro-to-a", "link-ro-to-a", "rename-within-ro", "link-within-ro", "rename-export-root",
        "move-export-into-export", "rmdir-export-root", "mkdir-in-listing", "create-in-listing", "symlink-in-listing",
        "ro-open-write", "ro-open-append", "ro-open-truncate", "ro-create", "ro-truncate", "ro-chmod", "ro-chown", "ro-utimes",
        "ro-setxattr", "ro-unlink", "ro-mkdir", "ro-rmdir", "ro-symlink", "ro-mknod", "ro-unchanged",
        "mknod-char-refused", "mknod-block-refused", "mknod-fifo-refused", "mknod-socket-refused", "bind-socket-refused",
        "mknod-regular-setid-stripped", "create-setid-stripped", "chmod-file-setuid-stripped", "chmod-file-setgid-stripped",
        "chmod-dir-setgid-kept", "chmod-dir-sticky-kept", "chmod-dir-setuid-stripped", "chmod-dir-all-bits",
        "create-in-setgid-dir-stripped", "chown-file", "chown-root-then-setid-stripped",
        "dotdot-from-export", "cd-up-from-export", "symlink-dotdot", "symlink-dotdot-deep", "symlink-host-path-read",
        "symlink-host-path-write", "symlink-text-kept", "symlink-host-dir-create", "symlink-sibling", "hardlink-symlink-refused",
        "setxattr-refused", "setxattr-capability-refused",
        // Phase 2, the guest's own virtio-9p driver: what the kernel would never send, and fid exhaustion.
        "raw-setup", "raw-attach",
        "raw-walk-dotdot-stays-in-export", "raw-walk-dotdot-secret", "raw-walk-bad-names", "raw-walk-listing-escape", "raw-attach-bad-aname",
        "raw-renameat-a-to-b", "raw-rename-a-to-b", "raw-link-a-to-b", "raw-link-a-to-ro", "raw-rename-into-ro", "raw-listing-changes",
        "raw-mknod-special", "raw-mknod-setid-stripped", "raw-setattr-file-setid-stripped", "raw-setattr-chown-setid-stripped",
        "raw-lcreate-setid-stripped", "raw-mkdir-setuid-stripped", "raw-setattr-dir-setuid-stripped",
        "raw-bad-names", "raw-symlink-not-followed", "raw-readonly", "raw-readonly-unchanged", "raw-xattrcreate-refused",
        "raw-fid-limit", "raw-open-refused-cleanly", "raw-held-fid-serves", "raw-host-handshake", "raw-release",
        "raw-serves-after-exhaustion", "raw-give-back",
        // Phase 3, the kernel's client again.
        "serves-after-attack",
        // Phase 4, the guest's own virtio-vsock driver (hostile-vsock.c); each check ends with an echo through the host.
        "vsock-setup", "vsock-bad-len", "vsock-split-header", "vsock-foreign-cids", "vsock-unknown-type-op",
        "vsock-packets-before-request", "vsock-shutdown-garbage-flags", "vsock-credit-violation", "vsock-oversized-payload",
        "vsock-zero-credit-respected", "vsock-malformed-chains", "vsock-bad-rx-buffers", "vsock-event-queue-and-notify-abuse",
        "vsock-config-read-only", "vsock-bad-features", "vsock-bad-queue-setup", "vsock-avail-index-jump",
        "vsock-request-flood-no-listener", "vsock-connection-limit", "vsock-reset-mid-traffic", "vsock-reset-mid-setup",
        "vsock-host-connects-in", "vsock-give-back", "vsock-kernel-after-attack",
    ];

    /// <summary>Phase 5, the guest's own virtio-net driver (hostile-net.c): only when the guest got a NIC.</summary>
    public static readonly string[] NetChecks =
    [
        "net-bad-queue-setup", "net-setup", "net-bad-vnet-headers", "net-short-frames", "net-giant-frames", "net-malformed-chains",
        "net-bad-rx-buffers", "net-rx-tiny-buffers-after-starving", "net-reset-mid-traffic", "net-indirect-abuse",
        "net-avail-index-jump", "net-give-back",
    ];

    public static TheoryData<string> CheckNames => new(Checks);
    public static TheoryData<string> NetCheckNames => new(NetChecks);

    [SkippableTheory]
    [MemberData(nameof(NetCheckNames))]
    public void The_net_device_withstands(string name)
    {
        string stdout = Stdout;
        Skip.If(vm.NetUnavailable is not null, vm.NetUnavailable);
        Assert.True(Regex.IsMatch(stdout, $@"rkt-kvm-guest: hostile ok {Regex.Escape(name)}\r?$", RegexOptions.Multiline), vm.ToString());
    }

    [SkippableFact]
    public void The_host_received_the_guests_datagrams_after_the_net_attacks()
    {
        _ = Stdout;
        Skip.If(vm.NetUnavailable is not null, vm.NetUnavailable);
        lock (vm.FromGuest)
        {
            Assert.True(vm.FromGuest.Contains("hostile-guest-to-host"), vm.ToString());
            Assert.True(vm.FromGuest.Contains("hostile-guest-to-host-final"), vm.ToString());
        }
        Assert.True(vm.NetHostFailure is null, vm.ToString());
    }

    private string Stdout
    {
        get
        {
            Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
            return vm.Stdout;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(CheckNames))]
    public void The_server_withstands(string name)
    {
        string stdout = Stdout;
        Assert.True(Regex.IsMatch(stdout, $@"rkt-kvm-guest: hostile ok {Regex.Escape(name)}\r?$", RegexOptions.Multiline), vm.ToString());
    }

    [SkippableFact]
    public void The_guest_ran_to_the_end_and_every_check_it_made_is_listed_here()
    {
        string stdout = Stdout;
        Assert.True(vm.SawDone, vm.ToString());
        var reported = Regex.Matches(stdout, @"rkt-kvm-guest: hostile (?:ok|FAIL) ([a-z0-9-]+)").Select(m => m.Groups[1].Value).ToHashSet();
        Assert.Empty(reported.Except(Checks).Except(NetChecks));
    }

    [SkippableFact]
    public void Nothing_outside_the_read_write_exports_changed()
    {
        _ = Stdout;
        Assert.Equal(string.Join("\n", vm.Before), string.Join("\n", vm.After));
    }

    [SkippableFact]
    public void The_guest_never_read_the_secret_beside_the_exports()
    {
        string stdout = Stdout;
        Assert.Contains("rkt-kvm-guest: hostile escape", stdout);
        Assert.DoesNotContain(vm.Secret, stdout);
        Assert.Equal(vm.Secret + "\n", File.ReadAllText(Path.Combine(vm.Tree, "secret.txt")));
    }

    [SkippableFact]
    public void No_device_node_fifo_socket_or_set_id_file_reached_the_host()
    {
        _ = Stdout;
        var offenders = vm.InExports().Where(f =>
            f.Type is not (S_IFREG or S_IFDIR or S_IFLNK)
            || (f.Mode & S_ISUID) != 0
            || (f.Type != S_IFDIR && (f.Mode & S_ISGID) != 0)).ToList();
        Assert.True(offenders.Count == 0, string.Join("\n", offenders));
    }

    [SkippableFact]
    public void What_the_server_refused_to_move_across_exports_stayed_where_it_was()
    {
        _ = Stdout;
        Assert.Equal("victim\n", File.ReadAllText(Path.Combine(vm.A, "victim.txt")));
        Assert.Equal("inner\n", File.ReadAllText(Path.Combine(vm.A, "dir", "inner.txt")));
        Assert.Equal("link\n", File.ReadAllText(Path.Combine(vm.A, "link-src.txt")));
        // Nothing was moved or linked into b: it holds only what the host put there.
        Assert.Equal(new[] { "signal.txt" }, Directory.GetFileSystemEntries(vm.B).Select(e => Path.GetFileName(e)));
    }

    [SkippableFact]
    public void The_VMM_answered_a_new_control_connection_while_the_guest_held_every_fid()
    {
        _ = Stdout;
        Assert.True(vm.SawHolding, vm.ToString());
        Assert.True(vm.HoldingReply is { Ok: true, State: "running" }, vm.ToString());
        Assert.True(vm.HoldingReply.Fids > 1000, $"only {vm.HoldingReply.Fids} fids were held\n{vm}");
    }

    [SkippableFact]
    public void The_VMM_served_after_the_attack_and_stopped_with_status_0()
    {
        _ = Stdout;
        Assert.Equal("alive\n", File.ReadAllText(Path.Combine(vm.A, "after-exhaustion.txt")));
        Assert.Equal("kernel\n", File.ReadAllText(Path.Combine(vm.A, "after-rebind.txt")));
        Assert.True(vm.FinalReply is { Ok: true, State: "running" }, vm.ToString());
        Assert.True(vm.StopReply is { Ok: true, State: "stopping" }, vm.ToString());
        Assert.True(vm.ExitCode == 0, vm.ToString());
    }

    [SkippableFact]
    public void The_host_connected_into_the_guest_after_the_vsock_attacks()
    {
        _ = Stdout;
        Assert.True(vm.HostConnectResult == "guest-echo:hello-from-host", vm.ToString());
        Assert.True(vm.EchoConnections > 0, vm.ToString());
    }

    [SkippableFact]
    public void The_VMM_survived_the_device_attacks_without_leaking_threads_or_fds()
    {
        _ = Stdout;
        Assert.True(vm.AliveAfterAttacks, vm.ToString());
        Assert.True(vm.ThreadsBefore > 0 && vm.FdsBefore > 0 && vm.ThreadsAfter > 0 && vm.FdsAfter > 0, vm.ToString());
        // Thousands of connections and chains went by: a leak per attempt would show as hundreds.
        Assert.True(vm.ThreadsAfter <= vm.ThreadsBefore + 4, vm.ToString());
        Assert.True(vm.FdsAfter <= vm.FdsBefore + 8, vm.ToString());
    }

    [SkippableFact]
    public void The_VMM_logged_no_error_or_unhandled_exception()
    {
        _ = Stdout;
        // Serilog's levels as the VMM prints them ("[vmm HH:mm:ss.fff ERR] ..."); warnings about refused set-ups are expected.
        var bad = vm.Stderr.Split('\n').Where(l => l.Contains(" ERR]") || l.Contains(" FTL]") || l.Contains("Unhandled exception")
            || l.Contains("   at ")).ToList();
        Assert.True(bad.Count == 0, string.Join("\n", bad) + "\n" + vm);
    }

    [SkippableFact]
    public void The_server_met_no_request_it_failed_to_handle()
    {
        string stdout = Stdout;
        // P9Server logs this when a request threw something other than a refusal (a server bug).
        Assert.DoesNotContain("failed unexpectedly", stdout + vm.Stderr);
    }
}

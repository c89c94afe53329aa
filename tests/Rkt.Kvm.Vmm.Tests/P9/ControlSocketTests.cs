using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Rkt.Kvm.Vmm.Client.Control;
using Rkt.Kvm.Vmm.Control;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Rkt.Kvm.Vmm.Host;

namespace Rkt.Kvm.Vmm.Tests.NineP;

public sealed class ControlSocketTests : IClassFixture<TrapTree>, IDisposable
{
    private readonly TrapTree _tree;
    private readonly EventLoop _loop = new(P9TestClient.Log);
    private readonly P9Server _server = new(P9TestClient.Log);
    private readonly ControlSocket _control;
    private int _stops;

    public ControlSocketTests(TrapTree tree)
    {
        _tree = tree;
        var commands = new ControlCommands(_server, Stopwatch.StartNew(), () => Interlocked.Increment(ref _stops));
        _control = new ControlSocket(Path.Combine(tree.Root, $"ctl-{Guid.NewGuid():N}.sock"), _loop, commands, P9TestClient.Log);
        _loop.Start();
    }

    private (Socket Socket, StreamReader Reader) Connect()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(_control.Path));
        s.ReceiveTimeout = 5000;
        return (s, new StreamReader(new NetworkStream(s)));
    }

    private static string Ask((Socket Socket, StreamReader Reader) c, string line)
    {
        c.Socket.Send(Encoding.UTF8.GetBytes(line + "\n"));
        return c.Reader.ReadLine() ?? "(closed)";
    }

    [Fact]
    public void Add_list_status_remove_and_stop()
    {
        var c = Connect();
        string path = _tree.Export;
        Assert.Equal($"{{\"ok\":true,\"export\":{{\"name\":\"data\",\"path\":\"{path}\",\"readOnly\":true,\"fids\":0}}}}",
            Ask(c, $"{{\"op\":\"add-export\",\"name\":\"data\",\"path\":\"{path}\",\"readOnly\":true}}"));
        Assert.StartsWith("{\"ok\":false,\"error\":\"Export 'data' already exists.", Ask(c, $"{{\"op\":\"add-export\",\"name\":\"data\",\"path\":\"{path}\"}}"));
        Assert.Equal($"{{\"ok\":true,\"exports\":[{{\"name\":\"data\",\"path\":\"{path}\",\"readOnly\":true,\"fids\":0}}]}}", Ask(c, "{\"op\":\"list-exports\"}"));
        Assert.Matches("^\\{\"ok\":true,\"state\":\"running\",\"uptimeSeconds\":[0-9.]+,\"exports\":\\[\\{\"name\":\"data\".*\\],\"fids\":0\\}$", Ask(c, "{\"op\":\"status\"}"));
        Assert.Equal("{\"ok\":true,\"closedFds\":1}", Ask(c, "{\"op\":\"remove-export\",\"name\":\"data\"}"));
        Assert.Equal("{\"ok\":false,\"error\":\"No export is named 'data'.\"}", Ask(c, "{\"op\":\"remove-export\",\"name\":\"data\"}"));
        Assert.Equal("{\"ok\":true,\"state\":\"stopping\"}", Ask(c, "{\"op\":\"stop\"}"));
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref _stops) == 1, 5000));
    }

    [Fact]
    public void The_client_reads_every_typed_reply_the_VMM_sends()
    {
        // Both ends share the message types in Vmm.Client: what the VMM sends, the client reads back in full.
        var client = new VmmControlClient(_control.Path);
        var added = client.AddExport("data", _tree.Export, readOnly: true);
        Assert.Equal(("data", _tree.Export, true, 0), (added.Export!.Name, added.Export.Path, added.Export.ReadOnly, added.Export.Fids));
        Assert.Equal("data", Assert.Single(client.ListExports()).Name);
        var status = client.Status();
        Assert.Equal("running", status.State);
        Assert.True(status.UptimeSeconds >= 0);
        Assert.Equal(0, status.Fids);
        Assert.Single(status.Exports!);
        Assert.Equal(1, client.RemoveExport("data").ClosedFds);
        var refused = Assert.Throws<VmmControlException>(() => client.RemoveExport("data"));
        Assert.Equal("VMM remove-export data: No export is named 'data'.", refused.Message);
        Assert.Equal("stopping", client.Stop().State);
        Assert.Contains("cannot reach the VMM control socket", Assert.Throws<VmmControlException>(() => new VmmControlClient(_control.Path + ".none").Status()).Message);
    }

    [Fact]
    public void An_export_passed_as_an_open_directory_is_served_from_it_not_from_its_path()
    {
        // What a jailed VMM relies on: it cannot open host paths, so the client passes the directory open.
        var dir = Directory.CreateDirectory(Path.Combine(_tree.Root, $"passed-{Guid.NewGuid():N}")).FullName;
        File.WriteAllText(Path.Combine(dir, "marker"), "x");
        var c = Connect();
        using (var file = File.OpenHandle(Path.Combine(dir, "marker")))
        {
            ScmRights.Send((int)c.Socket.Handle, Encoding.UTF8.GetBytes($"{{\"op\":\"add-export\",\"name\":\"f\",\"path\":\"{dir}\",\"fd\":true}}\n"), (int)file.DangerousGetHandle());
            Assert.StartsWith("{\"ok\":false,\"error\":\"What was passed for export 'f'", c.Reader.ReadLine());
        }
        Assert.StartsWith("{\"ok\":false,\"error\":\"The request says a file descriptor comes with it",
            Ask(c, "{\"op\":\"add-export\",\"name\":\"g\",\"path\":\"/x\",\"fd\":true}"));
        var client = new VmmControlClient(_control.Path);
        Assert.Equal(dir, client.AddExport("passed", dir, readOnly: false).Export!.Path);
        Directory.Move(dir, dir + "-moved"); // the export is the directory it holds, whatever its name now
        var p9 = new P9TestClient(_server);
        p9.Version();
        p9.Attach(1, "passed");
        Assert.Single(p9.Walk(1, 2, "marker"));
        Assert.Equal(3, client.RemoveExport("passed").ClosedFds); // its root and the two fids
    }

    [Fact]
    public void Too_many_passed_descriptors_close_the_connection_and_leak_nothing()
    {
        int Open() => Directory.GetFiles("/proc/self/fd").Length;
        var c = Connect();
        using var file = File.OpenHandle("/dev/null");
        int before = Open();
        for (int i = 0; i <= ControlSocket.MaxPendingFds; i++) ScmRights.Send((int)c.Socket.Handle, " "u8, (int)file.DangerousGetHandle());
        Assert.StartsWith("{\"ok\":false,\"error\":\"Too many file descriptors passed", c.Reader.ReadLine());
        Assert.Null(c.Reader.ReadLine());
        Assert.True(SpinWait.SpinUntil(() => Open() <= before, 5000), "the VMM side kept passed descriptors open");
    }

    [Theory]
    [InlineData("not json", "The request is not a valid JSON object")]
    [InlineData("{\"op\":\"dance\"}", "Unknown op 'dance'")]
    [InlineData("{}", "The request has no \\\"op\\\".")]
    [InlineData("{\"op\":\"status\",\"extra\":1}", "The request is not a valid JSON object")]
    [InlineData("{\"op\":\"add-export\",\"name\":\"x\"}", "The request needs \\\"path\\\".")]
    [InlineData("{\"op\":\"add-export\",\"name\":\"../x\",\"path\":\"/tmp\"}", "Export name '../x' must be")]
    [InlineData("{\"op\":\"add-export\",\"name\":\"x\",\"path\":\"relative\"}", "Export path 'relative' must be absolute.")]
    [InlineData("{\"op\":\"add-export\",\"name\":\"x\",\"path\":\"/nonexistent/dir\"}", "Export path '/nonexistent/dir' cannot be opened")]
    [InlineData("[1,2]", "The request is not a valid JSON object")]
    public void Malformed_requests_get_one_error_line_and_the_connection_stays(string line, string error)
    {
        var c = Connect();
        string reply = Ask(c, line);
        Assert.StartsWith("{\"ok\":false,\"error\":\"" + error, reply);
        Assert.Contains("\"ok\":true", Ask(c, "{\"op\":\"list-exports\"}"));
    }

    [Fact]
    public void An_over_long_line_is_refused_and_the_connection_closed()
    {
        var c = Connect();
        c.Socket.Send(Encoding.UTF8.GetBytes(new string('x', ControlSocket.MaxLineBytes + 10)));
        Assert.StartsWith("{\"ok\":false,\"error\":\"The request line is longer than", c.Reader.ReadLine());
        Assert.Null(c.Reader.ReadLine());
    }

    [Fact]
    public void Connections_are_bounded()
    {
        var open = Enumerable.Range(0, ControlSocket.MaxConnections).Select(_ => Connect()).ToList();
        foreach (var c in open) Assert.Contains("\"ok\":true", Ask(c, "{\"op\":\"status\"}"));
        var extra = Connect();
        Assert.StartsWith("{\"ok\":false,\"error\":\"Too many control connections", extra.Reader.ReadLine());
    }

    public void Dispose()
    {
        _loop.Stop();
        _control.Dispose();
        Assert.False(File.Exists(_control.Path));
        _server.Dispose();
        _loop.Dispose();
    }
}

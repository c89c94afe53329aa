using System.Text.Json;
using Rkt.Kvm.Vmm.Client.Control;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Posix;
using Serilog;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Control;

/// <summary>
/// The VMM control socket (docs/CONTROL.md), served on the device event loop: a Unix socket where
/// each line is one JSON request and gets one JSON reply line. Lines are bounded
/// (<see cref="MaxLineBytes"/>; longer ones get an error and the connection is closed), as are
/// connections (<see cref="MaxConnections"/>) and unread replies. The socket file is removed on dispose.
/// </summary>
public sealed class ControlSocket : IDisposable
{
    public const int MaxLineBytes = 16 * 1024;
    public const int MaxConnections = 8;
    /// <summary>A client that does not read its replies is dropped past this.</summary>
    public const int MaxPendingOutput = 1 << 20;
    /// <summary>Descriptors passed (SCM_RIGHTS) and not yet taken by a request; more is a broken or hostile client.</summary>
    public const int MaxPendingFds = 4;

    private sealed class Connection(UnixSocket socket)
    {
        public UnixSocket Socket { get; } = socket;
        public ulong Token;
        public readonly byte[] Input = new byte[MaxLineBytes];
        public int InputLength;
        /// <summary>After an over-long line: replies are over (the peer got EOF), input is read and dropped until the peer closes.</summary>
        public bool Discarding;
        public readonly List<byte> Output = [];
        /// <summary>Descriptors that came with the bytes, oldest first, for the requests that say they bring one.</summary>
        public readonly Queue<FileDescriptor> Fds = new();
    }

    private readonly EventLoop _loop;
    private readonly ControlCommands _commands;
    private readonly ILogger _log;
    private readonly UnixSocket _listener;
    private readonly ulong _listenerToken;
    private readonly HashSet<Connection> _connections = [];
    private readonly List<int> _received = [];

    public string Path { get; }

    public ControlSocket(string path, EventLoop loop, ControlCommands commands, ILogger log)
    {
        Path = path;
        _loop = loop;
        _commands = commands;
        _log = log;
        _listener = UnixSocket.Listen(path, backlog: 16);
        _listenerToken = loop.Add(_listener.Handle, EPOLLIN, _ => Accept());
    }

    private void Accept()
    {
        while (_listener.Accept() is { } socket)
        {
            var c = new Connection(socket);
            if (_connections.Count >= MaxConnections)
            {
                Send(c, ControlReply.Fail($"Too many control connections (at most {MaxConnections})."));
                socket.Dispose();
                continue;
            }
            _connections.Add(c);
            c.Token = _loop.Add(socket.Handle, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, _ => OnEvent(c));
        }
    }

    private void OnEvent(Connection c)
    {
        if (!Flush(c)) { Close(c); return; }
        while (_connections.Contains(c))
        {
            int n = ScmRights.Receive(c.Socket.Handle.Number, c.Discarding ? c.Input : c.Input.AsSpan(c.InputLength), _received, out bool truncated);
            foreach (int fd in _received) c.Fds.Enqueue(new FileDescriptor(fd));
            _received.Clear();
            if (c.Discarding) CloseFds(c);
            else if (truncated || c.Fds.Count > MaxPendingFds)
            {
                CloseFds(c);
                // As for an over-long line: end our side after saying why, then drain theirs.
                Send(c, ControlReply.Fail($"Too many file descriptors passed (at most {MaxPendingFds} waiting for their requests)."));
                c.Socket.ShutdownSend();
                c.Discarding = true;
                c.InputLength = 0;
                continue;
            }
            if (n < 0) return; // would block
            if (n == 0) { Close(c); return; }
            if (c.Discarding) continue;
            c.InputLength += n;
            ProcessLines(c);
        }
    }

    private void ProcessLines(Connection c)
    {
        int start = 0;
        while (true)
        {
            int newline = c.Input.AsSpan(start, c.InputLength - start).IndexOf((byte)'\n');
            if (newline < 0) break;
            var line = c.Input.AsSpan(start, newline).TrimEnd((byte)'\r');
            start += newline + 1;
            if (line.Trim((byte)' ').IsEmpty) continue;
            var reply = _commands.Handle(line, () => c.Fds.TryDequeue(out var fd) ? fd : null);
            Send(c, reply);
            if (_commands.StopRequested)
            {
                _log.Information("Control socket: stop requested");
                _commands.Stop();
                return;
            }
        }
        c.InputLength -= start;
        c.Input.AsSpan(start, c.InputLength).CopyTo(c.Input);
        if (c.InputLength == c.Input.Length)
        {
            // Closing with unread input would reset the connection before the peer reads why: end our side, drain theirs.
            Send(c, ControlReply.Fail($"The request line is longer than {MaxLineBytes} bytes."));
            c.Socket.ShutdownSend();
            c.Discarding = true;
            c.InputLength = 0;
        }
    }

    private void Send(Connection c, ControlReply reply)
    {
        c.Output.AddRange(JsonSerializer.SerializeToUtf8Bytes(reply, ControlJsonContext.Wire.ControlReply));
        c.Output.Add((byte)'\n');
        if (!Flush(c) || c.Output.Count > MaxPendingOutput) Close(c);
    }

    /// <summary>Writes what the socket takes; false when the peer is gone.</summary>
    private static bool Flush(Connection c)
    {
        if (c.Output.Count == 0) return true;
        var bytes = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(c.Output);
        int sent = 0;
        while (sent < bytes.Length)
        {
            int n = c.Socket.Send(bytes[sent..]);
            if (n == UnixSocket.WouldBlock) break;
            if (n == UnixSocket.Broken) return false;
            sent += n;
        }
        c.Output.RemoveRange(0, sent);
        return true;
    }

    private static void CloseFds(Connection c)
    {
        while (c.Fds.TryDequeue(out var fd)) fd.Dispose();
    }

    private void Close(Connection c)
    {
        CloseFds(c);
        if (!_connections.Remove(c)) { c.Socket.Dispose(); return; }
        _loop.Remove(c.Socket.Handle, c.Token);
        c.Socket.Dispose();
    }

    public void Dispose()
    {
        foreach (var c in _connections.ToList()) Close(c);
        _loop.Remove(_listener.Handle, _listenerToken);
        _listener.Dispose();
        // Under --user the socket directory may not be ours to change: whoever made it removes it.
        try { File.Delete(Path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

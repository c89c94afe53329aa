using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// An HTTPS proxy for one test: it answers <c>CONNECT host:port</c> by tunnelling to 127.0.0.1 at
/// <paramref name="targetPort"/> whatever host was asked for, so a client configured with
/// <c>HTTPS_PROXY</c> reaches the test registry under a name nothing resolves, and no test traffic
/// leaves 127.0.0.1. It records the CONNECT lines it saw.
/// </summary>
public sealed class ConnectProxy : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;

    public ConnectProxy(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        _ = Task.Run(Accept);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
    public ConcurrentQueue<string> Connects { get; } = new();

    private async Task Accept()
    {
        while (true)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(); }
            catch (Exception e) when (e is ObjectDisposedException or SocketException) { return; }
            _ = Task.Run(() => Tunnel(client));
        }
    }

    private async Task Tunnel(TcpClient client)
    {
        using (client)
        {
            try
            {
                var stream = client.GetStream();
                var head = new StringBuilder();
                var one = new byte[1];
                while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal) && await stream.ReadAsync(one) == 1)
                    head.Append((char)one[0]);
                var requestLine = head.ToString().Split("\r\n")[0];
                Connects.Enqueue(requestLine);
                if (!requestLine.StartsWith("CONNECT ", StringComparison.Ordinal))
                {
                    await stream.WriteAsync("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"u8.ToArray());
                    return;
                }
                using var upstream = new TcpClient();
                await upstream.ConnectAsync(IPAddress.Loopback, _targetPort);
                await stream.WriteAsync("HTTP/1.1 200 Connection established\r\n\r\n"u8.ToArray());
                var up = upstream.GetStream();
                await Task.WhenAny(stream.CopyToAsync(up), up.CopyToAsync(stream));
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { }
        }
    }

    public void Dispose() => _listener.Stop();
}

using System.Net.Sockets;
using System.Text;

namespace Rkt.Kvm.Agent.Tests;

/// <summary>
/// A stand-in for the VMM's hybrid vsock socket: reads the client's <c>CONNECT &lt;port&gt;\n</c> line and then
/// behaves as told: answer <c>OK 1073741824\n</c> and bridge the bytes to an agent's Unix socket, close
/// without a reply (guest still booting), or send a reply of our choosing.
/// </summary>
public sealed class FakeVmm : IAsyncDisposable
{
    public enum Behaviour { Bridge, CloseWithoutReply, Reply }

    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly List<Task> _connections = [];
    private int _connectionCount;

    public string SocketPath { get; }
    public List<string> ConnectLines { get; } = [];
    public int Connections => Volatile.Read(ref _connectionCount);

    /// <summary>Decides what to do with the n-th connection (1-based).</summary>
    public Func<int, Behaviour> Policy { get; set; } = _ => Behaviour.Bridge;
    public string Reply { get; set; } = "OK 1073741824\n";
    public string? AgentSocket { get; set; }

    public FakeVmm(string socketPath)
    {
        SocketPath = socketPath;
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        _listener.Listen(16);
        _accepting = AcceptLoopAsync();
    }

    private async Task AcceptLoopAsync()
    {
        try
        {
            while (true)
            {
                Socket client = await _listener.AcceptAsync(_stop.Token);
                int n = Interlocked.Increment(ref _connectionCount);
                lock (_connections) _connections.Add(ServeAsync(client, n));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { }
    }

    private async Task ServeAsync(Socket client, int number)
    {
        using (client)
        {
            try
            {
                // Read the request line byte by byte, at most 32 bytes, like the VMM.
                var line = new List<byte>();
                byte[] one = new byte[1];
                while (line.Count < 32)
                {
                    if (await client.ReceiveAsync(one, SocketFlags.None, _stop.Token) == 0) return;
                    line.Add(one[0]);
                    if (one[0] == (byte)'\n') break;
                }
                lock (ConnectLines) ConnectLines.Add(Encoding.ASCII.GetString(line.ToArray()));
                switch (Policy(number))
                {
                    case Behaviour.CloseWithoutReply:
                        return;
                    case Behaviour.Reply:
                        await client.SendAsync(Encoding.ASCII.GetBytes(Reply), SocketFlags.None, _stop.Token);
                        await Task.Delay(200, _stop.Token);
                        return;
                }
                using var agent = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await agent.ConnectAsync(new UnixDomainSocketEndPoint(AgentSocket!), _stop.Token);
                await client.SendAsync(Encoding.ASCII.GetBytes(Reply), SocketFlags.None, _stop.Token);
                using var a = new NetworkStream(client, ownsSocket: false);
                using var b = new NetworkStream(agent, ownsSocket: false);
                Task up = Pump(a, b, agent), down = Pump(b, a, client);
                await Task.WhenAny(up, down);
                await Task.WhenAll(up, down).WaitAsync(TimeSpan.FromSeconds(5), _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or IOException or TimeoutException or ObjectDisposedException) { }
        }
    }

    private async Task Pump(Stream from, Stream to, Socket toSocket)
    {
        try
        {
            await from.CopyToAsync(to, 64 * 1024, _stop.Token);
            toSocket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or IOException or ObjectDisposedException) { }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Dispose();
        await _accepting;
        Task[] pending;
        lock (_connections) pending = [.. _connections];
        await Task.WhenAll(pending).WaitAsync(TimeSpan.FromSeconds(5));
        File.Delete(SocketPath);
    }
}

using System.Net.Sockets;
using System.Text;

namespace Rkt.Kvm.Agent.Client;

/// <summary>How to reach the agent's socket.</summary>
public enum AgentTransport
{
    /// <summary>The VMM's hybrid vsock Unix socket: write <c>CONNECT &lt;port&gt;\n</c>, read <c>OK &lt;n&gt;\n</c>, then bytes flow to the guest.</summary>
    HybridVsock,
    /// <summary>A plain Unix socket the agent listens on itself (host-process agent: tests, benchmark ceiling).</summary>
    Unix,
}

/// <summary>Opens byte streams to the agent, with retries: early in boot the VMM closes the socket without a reply.</summary>
public static class AgentDialer
{
    /// <summary>One attempt. Throws <see cref="AgentException"/>; <paramref name="retryable"/> says whether trying again may help.</summary>
    internal static async ValueTask<Stream> ConnectOnceAsync(string path, AgentTransport transport, uint port, TimeSpan attemptTimeout, CancellationToken cancellation)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        attempt.CancelAfter(attemptTimeout);
        try
        {
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), attempt.Token).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                throw new AgentException(AgentFailure.Unreachable, e.SocketErrorCode switch
                {
                    _ when !File.Exists(path) => $"The agent socket {path} does not exist (the VM is not running).",
                    SocketError.ConnectionRefused => $"Nothing accepts connections on the agent socket {path} (the VM has exited).",
                    _ => $"Connecting to the agent socket {path} failed: {e.Message}.",
                }, e);
            }
            if (transport == AgentTransport.HybridVsock)
                await HandshakeAsync(socket, path, port, attempt.Token).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch (OperationCanceledException e) when (!cancellation.IsCancellationRequested)
        {
            socket.Dispose();
            throw new AgentException(AgentFailure.Timeout, $"The agent socket {path} did not answer within {attemptTimeout.TotalSeconds:0.###} s.", e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static async ValueTask HandshakeAsync(Socket socket, string path, uint port, CancellationToken cancellation)
    {
        try
        {
            await socket.SendAsync(HybridVsockHandshake.ConnectLine(port), SocketFlags.None, cancellation).ConfigureAwait(false);
            // Byte by byte: the agent's HTTP/2 SETTINGS may follow the OK line in the same segment.
            byte[] line = new byte[HybridVsockHandshake.MaxReplyLength];
            int length = 0;
            while (true)
            {
                int n = await socket.ReceiveAsync(line.AsMemory(length, 1), SocketFlags.None, cancellation).ConfigureAwait(false);
                if (n == 0)
                    throw new AgentException(AgentFailure.Unreachable, $"The VM behind {path} closed the connection before the agent accepted it on vsock port {port} (still booting, or no agent listening).");
                if (line[length++] == (byte)'\n') break;
                if (length == line.Length)
                    throw new AgentException(AgentFailure.Failed, $"The VMM behind {path} sent no line end within {line.Length} bytes in reply to CONNECT {port}.");
            }
            if (!HybridVsockHandshake.TryParseOk(line.AsSpan(0, length), out _))
                throw new AgentException(AgentFailure.Failed, $"The VMM behind {path} answered CONNECT {port} with '{Printable(line.AsSpan(0, length))}' instead of 'OK <port>'.");
        }
        catch (SocketException e)
        {
            throw new AgentException(AgentFailure.Unreachable, $"The VM behind {path} dropped the connection during the vsock handshake: {e.Message}.", e);
        }
    }

    /// <summary>Connects, retrying retryable failures (<see cref="AgentFailure.Unreachable"/> and attempt time-outs)
    /// until <paramref name="overallTimeout"/> has passed; then throws the last failure, prefixed with the attempt count.</summary>
    public static async ValueTask<Stream> ConnectAsync(string path, AgentTransport transport, uint port, TimeSpan attemptTimeout, TimeSpan overallTimeout, TimeSpan retryDelay, CancellationToken cancellation = default)
    {
        long start = Environment.TickCount64;
        int attempts = 0;
        while (true)
        {
            attempts++;
            try
            {
                TimeSpan left = overallTimeout - TimeSpan.FromMilliseconds(Environment.TickCount64 - start);
                return await ConnectOnceAsync(path, transport, port, left < attemptTimeout && left > TimeSpan.Zero ? left : attemptTimeout, cancellation).ConfigureAwait(false);
            }
            catch (AgentException e) when (e.Failure is AgentFailure.Unreachable or AgentFailure.Timeout)
            {
                if (Environment.TickCount64 - start + retryDelay.TotalMilliseconds >= overallTimeout.TotalMilliseconds)
                    throw new AgentException(e.Failure, attempts == 1 ? e.Message : $"{e.Message} (gave up after {attempts} attempts in {(Environment.TickCount64 - start) / 1000.0:0.###} s)", e.InnerException);
                await Task.Delay(retryDelay, cancellation).ConfigureAwait(false);
            }
        }
    }

    internal static string Printable(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(b is >= 0x20 and < 0x7F ? (char)b : b == (byte)'\n' ? "\\n" : $"\\x{b:X2}");
        return sb.ToString();
    }
}

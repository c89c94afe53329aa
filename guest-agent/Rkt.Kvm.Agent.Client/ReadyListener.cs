using System.Net.Sockets;

namespace Rkt.Kvm.Agent.Client;

/// <summary>
/// Waits for the agent's <c>READY &lt;version&gt; &lt;ms since boot&gt;\n</c> line. The agent dials the host
/// (vsock CID 2, port 1025) once it serves; the VMM forwards that connection to the Unix socket
/// <c>&lt;vm socket path&gt;_1025</c>, which this class listens on. Create it before starting the VM.
/// </summary>
public sealed class ReadyListener : IDisposable
{
    private readonly Socket _listener;

    /// <summary>The Unix socket listened on.</summary>
    public string Path { get; }

    /// <summary>Listens on <c><paramref name="vmSocketPath"/>_<paramref name="port"/></c>.</summary>
    public static ReadyListener ForVm(string vmSocketPath, uint port = AgentProtocol.ReadyPort) => new($"{vmSocketPath}_{port}");

    /// <summary>Listens on exactly <paramref name="path"/> (a stale socket file there is replaced).</summary>
    public ReadyListener(string path)
    {
        Path = path;
        File.Delete(path);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            _listener.Bind(new UnixDomainSocketEndPoint(path));
            _listener.Listen(4);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
    }

    /// <summary>Accepts connections until one carries a READY line, and returns it parsed. Connections that
    /// close without a full line are skipped; a malformed line or the time-out throws <see cref="AgentException"/>.</summary>
    public async Task<ReadyLine> WaitAsync(TimeSpan timeout, CancellationToken cancellation = default)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        deadline.CancelAfter(timeout);
        try
        {
            while (true)
            {
                using Socket connection = await _listener.AcceptAsync(deadline.Token).ConfigureAwait(false);
                byte[] buffer = new byte[ReadyLine.MaxLength];
                int length = 0;
                while (length < buffer.Length)
                {
                    int n = await connection.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, deadline.Token).ConfigureAwait(false);
                    if (n == 0) break;
                    length += n;
                    if (buffer.AsSpan(0, length).Contains((byte)'\n')) break;
                }
                if (length == 0) continue;
                int end = buffer.AsSpan(0, length).IndexOf((byte)'\n');
                if (end >= 0 && ReadyLine.TryParse(buffer.AsSpan(0, end + 1), out ReadyLine ready)) return ready;
                if (end < 0 && length < buffer.Length) continue; // closed mid-line: not a complete announcement
                throw new AgentException(AgentFailure.Failed, $"The agent sent a malformed readiness line on {Path}: '{AgentDialer.Printable(buffer.AsSpan(0, end >= 0 ? end + 1 : length))}'.");
            }
        }
        catch (OperationCanceledException e) when (!cancellation.IsCancellationRequested)
        {
            throw new AgentException(AgentFailure.Timeout, $"The agent did not report ready on {Path} within {timeout.TotalSeconds:0.###} s.", e);
        }
    }

    public void Dispose()
    {
        _listener.Dispose();
        try { File.Delete(Path); } catch (IOException) { }
    }
}

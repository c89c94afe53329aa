using System.Text;

namespace Rkt.Kvm.Vmm.Devices.Vsock;

/// <summary>Outcome of reading the host side's first line.</summary>
public enum ConnectLineStatus
{
    /// <summary>No newline yet and still within the length limit: read more.</summary>
    NeedMore,
    Valid,
    /// <summary>Garbage, too long, or a bad port: close the socket without a reply.</summary>
    Invalid,
}

/// <summary>
/// The host half of the hybrid vsock handshake (Firecracker's protocol, see shared/VSOCK.md): a
/// client of the VM's Unix socket writes <c>CONNECT &lt;port&gt;\n</c> and, once the guest accepted,
/// reads <c>OK &lt;hostport&gt;\n</c>. Everything the client sends is untrusted.
/// </summary>
public static class HybridVsockHandshake
{
    /// <summary>The whole line, newline included, may be at most this long.</summary>
    public const int MaxLineLength = 32;
    private const string Keyword = "CONNECT ";

    /// <summary>Parses the bytes received so far. <paramref name="consumed"/> is the line length including '\n' when valid.</summary>
    public static ConnectLineStatus Parse(ReadOnlySpan<byte> received, out uint port, out int consumed)
    {
        port = 0;
        consumed = 0;
        int newline = received.IndexOf((byte)'\n');
        if (newline < 0) return received.Length < MaxLineLength ? ConnectLineStatus.NeedMore : ConnectLineStatus.Invalid;
        if (newline + 1 > MaxLineLength) return ConnectLineStatus.Invalid;
        var line = received[..newline];
        if (line.Length <= Keyword.Length) return ConnectLineStatus.Invalid;
        for (int i = 0; i < Keyword.Length; i++)
        {
            if (char.ToUpperInvariant((char)line[i]) != Keyword[i]) return ConnectLineStatus.Invalid;
        }
        ulong value = 0;
        foreach (byte b in line[Keyword.Length..])
        {
            if (b < (byte)'0' || b > (byte)'9') return ConnectLineStatus.Invalid;
            value = value * 10 + (ulong)(b - '0');
            if (value > uint.MaxValue) return ConnectLineStatus.Invalid;
        }
        port = (uint)value;
        consumed = newline + 1;
        return ConnectLineStatus.Valid;
    }

    /// <summary>The reply once the guest accepted: <c>OK &lt;hostport&gt;\n</c>.</summary>
    public static byte[] OkLine(uint hostPort) => Encoding.ASCII.GetBytes($"OK {hostPort}\n");
}

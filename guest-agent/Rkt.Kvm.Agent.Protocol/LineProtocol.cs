using System.Globalization;
using System.Text;

namespace Rkt.Kvm.Agent;

/// <summary>The agent's readiness announcement: <c>READY &lt;agent version&gt; &lt;ms since kernel boot&gt;\n</c>.</summary>
public readonly record struct ReadyLine(string AgentVersion, ulong MillisecondsSinceBoot)
{
    /// <summary>Longest READY line accepted, newline included.</summary>
    public const int MaxLength = 128;

    public override string ToString() => $"READY {AgentVersion} {MillisecondsSinceBoot.ToString(CultureInfo.InvariantCulture)}\n";

    public byte[] ToBytes() => Encoding.ASCII.GetBytes(ToString());

    /// <summary>Parses one line (with or without its trailing newline); false on anything malformed.</summary>
    public static bool TryParse(ReadOnlySpan<byte> line, out ReadyLine ready)
    {
        ready = default;
        if (line.Length > 0 && line[^1] == (byte)'\n') line = line[..^1];
        if (line.Length == 0 || line.Length >= MaxLength) return false;
        if (!line.StartsWith("READY "u8)) return false;
        line = line[6..];
        int space = line.IndexOf((byte)' ');
        if (space <= 0) return false;
        ReadOnlySpan<byte> version = line[..space], ms = line[(space + 1)..];
        foreach (byte b in version)
            if (b <= 0x20 || b >= 0x7F) return false;
        if (!LineParsing.TryParseDecimal(ms, out ulong value)) return false;
        ready = new ReadyLine(Encoding.ASCII.GetString(version), value);
        return true;
    }
}

/// <summary>The host side of the hybrid-vsock handshake: <c>CONNECT &lt;port&gt;\n</c>, answered by <c>OK &lt;host port&gt;\n</c>.</summary>
public static class HybridVsockHandshake
{
    /// <summary>Longest reply line the VMM may send, newline included.</summary>
    public const int MaxReplyLength = 32;

    public static byte[] ConnectLine(uint port) => Encoding.ASCII.GetBytes($"CONNECT {port.ToString(CultureInfo.InvariantCulture)}\n");

    /// <summary>Parses the VMM's reply (with or without the newline): <c>OK</c>, one space, a decimal u32.</summary>
    public static bool TryParseOk(ReadOnlySpan<byte> line, out uint hostPort)
    {
        hostPort = 0;
        if (line.Length > 0 && line[^1] == (byte)'\n') line = line[..^1];
        if (line.Length >= MaxReplyLength || !line.StartsWith("OK "u8)) return false;
        if (!LineParsing.TryParseDecimal(line[3..], out ulong value) || value > uint.MaxValue) return false;
        hostPort = (uint)value;
        return true;
    }
}

internal static class LineParsing
{
    /// <summary>1–20 ASCII digits, no sign, no spaces, no overflow.</summary>
    public static bool TryParseDecimal(ReadOnlySpan<byte> s, out ulong value)
    {
        value = 0;
        if (s.Length == 0 || s.Length > 20) return false;
        foreach (byte b in s)
        {
            if (b < (byte)'0' || b > (byte)'9') return false;
            ulong digit = (ulong)(b - '0');
            if (value > (ulong.MaxValue - digit) / 10) return false;
            value = value * 10 + digit;
        }
        return true;
    }
}

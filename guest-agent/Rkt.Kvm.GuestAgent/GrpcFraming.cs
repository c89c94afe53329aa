using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Google.Protobuf;

namespace Rkt.Kvm.GuestAgent;

/// <summary>A gRPC status to end a call with (the codes of grpc/doc/statuscodes.md).</summary>
internal sealed class GrpcException(int status, string message) : Exception(message)
{
    public const int Cancelled = 1, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5, AlreadyExists = 6,
        FailedPrecondition = 9, ResourceExhausted = 8,
        Unimplemented = 12, Internal = 13, Unavailable = 14;

    public int Status { get; } = status;
}

/// <summary>gRPC length-prefixed messages over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md): a compressed-flag byte,
/// a 4-byte big-endian length, then the message.</summary>
internal static class GrpcFraming
{
    public const int HeaderSize = 5;

    /// <summary>Takes one complete frame off the front of <paramref name="buffer"/>. Returns false (buffer
    /// untouched) when more bytes are needed; throws <see cref="GrpcException"/> on a frame we must refuse.</summary>
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxMessageBytes, out ReadOnlySequence<byte> frame, out ReadOnlySequence<byte> payload)
    {
        frame = payload = default;
        if (buffer.Length < HeaderSize) return false;
        Span<byte> header = stackalloc byte[HeaderSize];
        buffer.Slice(0, HeaderSize).CopyTo(header);
        if (header[0] == 1)
            throw new GrpcException(GrpcException.Unimplemented, "Compressed messages are not supported (send grpc-encoding identity).");
        if (header[0] != 0)
            throw new GrpcException(GrpcException.Internal, $"Invalid gRPC frame flag {header[0]}.");
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxMessageBytes)
            throw new GrpcException(GrpcException.ResourceExhausted, $"Received message of {length} bytes exceeds the limit of {maxMessageBytes} bytes.");
        if (buffer.Length < HeaderSize + length) return false;
        frame = buffer.Slice(0, HeaderSize + length);
        payload = frame.Slice(HeaderSize);
        buffer = buffer.Slice(frame.End);
        return true;
    }

    /// <summary>Writes <paramref name="message"/> as one uncompressed frame.</summary>
    public static void WriteMessage(IBufferWriter<byte> writer, IMessage message)
    {
        int size = message.CalculateSize();
        Span<byte> header = writer.GetSpan(HeaderSize);
        header[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(header[1..], (uint)size);
        writer.Advance(HeaderSize);
        if (size > 0) message.WriteTo(writer);
    }

    /// <summary>Parses the grpc-timeout header ("&lt;1-8 digits&gt;&lt;H|M|S|m|u|n&gt;"); null when absent or malformed.</summary>
    public static TimeSpan? ParseTimeout(string? value)
    {
        if (string.IsNullOrEmpty(value) || value.Length < 2 || value.Length > 9) return null;
        if (!long.TryParse(value.AsSpan(0, value.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out long n)) return null;
        return value[^1] switch
        {
            'H' => TimeSpan.FromHours(n),
            'M' => TimeSpan.FromMinutes(n),
            'S' => TimeSpan.FromSeconds(n),
            'm' => TimeSpan.FromMilliseconds(n),
            'u' => TimeSpan.FromTicks(n * 10),
            'n' => TimeSpan.FromTicks(n / 100),
            _ => null,
        };
    }

    /// <summary>Percent-encodes a grpc-message value: bytes outside 0x20–0x7E and '%' become %XX of their UTF-8.</summary>
    public static string PercentEncode(string message)
    {
        var sb = new StringBuilder(message.Length);
        foreach (byte b in Encoding.UTF8.GetBytes(message))
        {
            if (b >= 0x20 && b <= 0x7E && b != (byte)'%') sb.Append((char)b);
            else sb.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}

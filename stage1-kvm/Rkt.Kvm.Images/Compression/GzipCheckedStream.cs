using System.Buffers.Binary;
using System.IO.Compression;
using Rkt.Kvm.Images.IO;

namespace Rkt.Kvm.Images.Compression;

/// <summary>
/// GZipStream that notices truncation. The runtime's GZipStream checks the CRC when it reaches
/// a member's trailer, but when the input simply ends early it reports a clean end of stream.
/// We keep the last 8 input bytes and, at the end, compare the trailer's ISIZE (length mod 2^32)
/// with what was produced: a cut-off stream ends in deflate data, not in a matching trailer.
/// Multi-member gzip files are checked against the last member only, so they are accepted
/// only when that member holds everything, as single-member layers (the norm) do.
/// </summary>
internal sealed class GzipCheckedStream : ReadOnlyStream
{
    private readonly TailStream _tail;
    private readonly GZipStream _gzip;
    private long _produced;
    private bool _checked;

    public GzipCheckedStream(Stream compressed)
    {
        _tail = new TailStream(compressed);
        _gzip = new GZipStream(_tail, CompressionMode.Decompress);
    }

    public override int Read(Span<byte> buffer)
    {
        int n = _gzip.Read(buffer);
        _produced += n;
        if (n == 0 && buffer.Length > 0 && !_checked)
        {
            _checked = true;
            if (_tail.Count < 18 || BinaryPrimitives.ReadUInt32LittleEndian(_tail.Last8.AsSpan(4)) != (uint)_produced)
                throw new InvalidDataException("the gzip stream ends before its trailer (truncated)");
        }
        return n;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _gzip.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>Remembers the last 8 bytes that went through.</summary>
    private sealed class TailStream(Stream inner) : ReadOnlyStream
    {
        public readonly byte[] Last8 = new byte[8];
        public long Count;

        public override int Read(Span<byte> buffer)
        {
            int n = inner.Read(buffer);
            if (n <= 0) return 0;
            Count += n;
            if (n >= 8) buffer.Slice(n - 8, 8).CopyTo(Last8);
            else
            {
                Last8.AsSpan(n).CopyTo(Last8);
                buffer[..n].CopyTo(Last8.AsSpan(8 - n));
            }
            return n;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}

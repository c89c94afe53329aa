using System.IO.Compression;
using Rkt.Kvm.Images.IO;
using BZip2Stream = SharpCompress.Compressors.BZip2.BZip2Stream;
using XZStream = SharpCompress.Compressors.Xz.XZStream;
using ZstdDecompressionStream = SharpCompress.Compressors.ZStandard.DecompressionStream;

namespace Rkt.Kvm.Images.Compression;

public enum CompressionKind { None, Gzip, Bzip2, Xz, Zstd }

/// <summary>
/// Detects the compression of a stream from its magic bytes and wraps it in a decompressor.
/// gzip uses the runtime's zlib (fastest here); bzip2, xz and zstd use SharpCompress's codecs,
/// never its tar reader (see DOTNET.md). Every decompressor fails loudly on truncated or corrupt
/// input, which the runtime's GZipStream alone does not do on truncation.
/// </summary>
public static class Decompression
{
    public static CompressionKind Detect(ReadOnlySpan<byte> head) => head switch
    {
        [0x1f, 0x8b, ..] => CompressionKind.Gzip,
        [(byte)'B', (byte)'Z', (byte)'h', ..] => CompressionKind.Bzip2,
        [0xfd, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0x00, ..] => CompressionKind.Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => CompressionKind.Zstd,
        _ => CompressionKind.None,
    };

    /// <summary>Returns a stream of the decompressed bytes of <paramref name="raw"/>, which it owns.</summary>
    public static ReadOnlyStream Open(Stream raw, string what, out CompressionKind kind)
    {
        var peek = new PeekStream(raw, peekBytes: 6);
        var detected = kind = Detect(peek.Head);
        Stream inner;
        // Some codecs read their stream header already here (bzip2 does): a corrupt one fails as a Read would.
        try
        {
            inner = detected switch
            {
                CompressionKind.None => peek,
                CompressionKind.Gzip => new GzipCheckedStream(peek),
                CompressionKind.Bzip2 => BZip2Stream.Create(peek, SharpCompress.Compressors.CompressionMode.Decompress,
                    decompressConcatenated: true, leaveOpen: false, tolerateTruncatedStream: false),
                CompressionKind.Xz => new XZStream(peek),
                CompressionKind.Zstd => new ZstdDecompressionStream(peek, 0, checkEndOfStream: true, leaveOpen: false),
                _ => throw new InvalidOperationException(),
            };
        }
        catch (Exception e) when (CodecErrorStream.IsCodecError(e))
        {
            peek.Dispose();
            throw CodecErrorStream.Corrupt(what, detected, e);
        }
        return new CodecErrorStream(inner, what, detected);
    }

    /// <summary>
    /// Turns each codec's own exception type into one ImageException that names the stream, so
    /// the user reads "layer sha256:… is truncated or corrupt (xz)" whatever the codec threw.
    /// </summary>
    private sealed class CodecErrorStream(Stream inner, string what, CompressionKind kind) : ReadOnlyStream
    {
        public override int Read(Span<byte> buffer)
        {
            try { return inner.Read(buffer); }
            catch (Exception e) when (IsCodecError(e)) { throw Corrupt(what, kind, e); }
        }

        /// <summary>What a codec throws for bad data; programming errors (an unsupported call) must not pass for corrupt data.</summary>
        public static bool IsCodecError(Exception e) => e is not (ImageException or OperationCanceledException or OutOfMemoryException
            or NotSupportedException or NotImplementedException or ObjectDisposedException);

        public static ImageException Corrupt(string what, CompressionKind kind, Exception e)
        {
            var codec = kind == CompressionKind.None ? "" : $" ({kind.ToString().ToLowerInvariant()})";
            return new ImageException($"{what} is truncated or corrupt{codec}: {e.Message}", e);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}

using System.Security.Cryptography;

namespace Rkt.Kvm.Images.IO;

/// <summary>
/// A read-through stream that watches the bytes passing by: it counts them, hashes them, copies
/// them to a second stream, and stops a decompression bomb once a limit is passed. Digests are
/// checked this way while the data streams, so no layer is ever read twice. It also reports
/// progress, for the CLI's progress bars.
/// </summary>
public sealed class InspectingStream : ReadOnlyStream
{
    private readonly Stream _inner;
    private readonly IncrementalHash? _hash;
    private readonly Stream? _tee;
    private readonly long _limit;
    private readonly string _what;
    private readonly bool _leaveOpen;
    private readonly Action<int>? _progress;

    /// <param name="what">names the stream in the bomb-guard error ("layer sha256:…").</param>
    public InspectingStream(Stream inner, string what, HashAlgorithmName? hash = null, Stream? tee = null,
        long limit = long.MaxValue, bool leaveOpen = false, Action<int>? progress = null)
    {
        _progress = progress;
        _inner = inner;
        _what = what;
        _hash = hash is { } h ? IncrementalHash.CreateHash(h) : null;
        _tee = tee;
        _limit = limit;
        _leaveOpen = leaveOpen;
    }

    public long BytesRead { get; private set; }

    public override int Read(Span<byte> buffer)
    {
        int n = _inner.Read(buffer);
        if (n <= 0) return 0;
        BytesRead += n;
        if (BytesRead > _limit)
            throw new ImageException($"{_what} expands past the size limit of {_limit} bytes (a decompression bomb?); raise the limit if the image is genuine");
        _hash?.AppendData(buffer[..n]);
        _tee?.Write(buffer[..n]);
        _progress?.Invoke(n);
        return n;
    }

    /// <summary>The lowercase hex digest of everything read so far.</summary>
    public string HexDigest() =>
        _hash is null ? throw new InvalidOperationException("no hash requested") : Convert.ToHexStringLower(_hash.GetCurrentHash());

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash?.Dispose();
            if (!_leaveOpen) _inner.Dispose();
        }
        base.Dispose(disposing);
    }
}

namespace Rkt.Kvm.Images.IO;

/// <summary>
/// Lets a caller look at the first bytes of a forward-only stream and then read it from the
/// start: formats and compressions are detected from content, not from file names.
/// </summary>
public sealed class PeekStream : ReadOnlyStream
{
    private readonly Stream _inner;
    private readonly byte[] _head;
    private int _headPos;
    private readonly int _headLen;
    private readonly bool _leaveOpen;

    public PeekStream(Stream inner, int peekBytes = 512, bool leaveOpen = false)
    {
        _inner = inner;
        _leaveOpen = leaveOpen;
        _head = new byte[peekBytes];
        _headLen = inner.ReadAtLeast(_head, peekBytes, throwOnEndOfStream: false);
    }

    public ReadOnlySpan<byte> Head => _head.AsSpan(0, _headLen);

    /// <summary>Bytes read so far (SharpCompress's XZStream asks its input for it).</summary>
    public override long Position { get => _read; set => throw new NotSupportedException(); }

    private long _read;

    public override int Read(Span<byte> buffer)
    {
        int n;
        if (_headPos < _headLen)
        {
            n = Math.Min(buffer.Length, _headLen - _headPos);
            _head.AsSpan(_headPos, n).CopyTo(buffer);
            _headPos += n;
        }
        else n = _inner.Read(buffer);
        _read += n;
        return n;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_leaveOpen) _inner.Dispose();
        base.Dispose(disposing);
    }
}

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

    public override int Read(Span<byte> buffer)
    {
        if (_headPos < _headLen)
        {
            int n = Math.Min(buffer.Length, _headLen - _headPos);
            _head.AsSpan(_headPos, n).CopyTo(buffer);
            _headPos += n;
            return n;
        }
        return _inner.Read(buffer);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_leaveOpen) _inner.Dispose();
        base.Dispose(disposing);
    }
}

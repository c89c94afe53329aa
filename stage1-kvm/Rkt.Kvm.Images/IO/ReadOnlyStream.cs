namespace Rkt.Kvm.Images.IO;

/// <summary>Base for the forward-only read streams of this library: everything but Read is refused.</summary>
public abstract class ReadOnlyStream : Stream
{
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public abstract override int Read(Span<byte> buffer);

    /// <summary>Reads to the end, so that checks done at end of stream (digests, trailers) run.</summary>
    public void Drain()
    {
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 16);
        try { while (Read(buffer) > 0) { } }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
    }
}

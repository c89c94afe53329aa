using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace Rkt.Kvm.Images.IO;

/// <summary>
/// Reads its source on a second thread, a few chunks ahead, so that decompression (and the
/// hashing of the compressed bytes) runs alongside tar parsing and file writing, as GNU tar
/// gets from its gzip child process. An exception on the reading thread is rethrown to the
/// reader, at the point in the stream where it happened.
/// </summary>
public sealed class ReadAheadStream : ReadOnlyStream
{
    private const int ChunkSize = 1 << 20, Chunks = 4;
    private readonly BlockingCollection<Chunk> _queue = new(Chunks);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;
    private readonly Stream _source;
    private Chunk _current;
    private int _offset;
    private bool _ended;

    private readonly record struct Chunk(byte[]? Buffer, int Length, ExceptionDispatchInfo? Error);

    public ReadAheadStream(Stream source)
    {
        _source = source;
        _thread = new Thread(Produce) { IsBackground = true, Name = "rkt-kvm read-ahead" };
        _thread.Start();
    }

    private void Produce()
    {
        try
        {
            while (true)
            {
                var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
                int n = _source.ReadAtLeast(buffer, ChunkSize, throwOnEndOfStream: false);
                if (n == 0)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    break;
                }
                _queue.Add(new Chunk(buffer, n, null), _stop.Token);
            }
            _queue.Add(default, _stop.Token); // end of stream
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        catch (Exception e)
        {
            try { _queue.Add(new Chunk(null, 0, ExceptionDispatchInfo.Capture(e)), _stop.Token); }
            catch (OperationCanceledException) { }
        }
    }

    public override int Read(Span<byte> buffer)
    {
        if (buffer.Length == 0) return 0;
        while (_current.Buffer is null || _offset == _current.Length)
        {
            if (_ended) return 0;
            if (_current.Buffer is { } done) ArrayPool<byte>.Shared.Return(done);
            _current = _queue.Take();
            _offset = 0;
            _current.Error?.Throw();
            if (_current.Buffer is null) { _ended = true; return 0; }
        }
        int n = Math.Min(buffer.Length, _current.Length - _offset);
        _current.Buffer.AsSpan(_offset, n).CopyTo(buffer);
        _offset += n;
        return n;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _stop.Cancel();
            _thread.Join();
            while (_queue.TryTake(out var chunk)) if (chunk.Buffer is { } b) ArrayPool<byte>.Shared.Return(b);
            _queue.Dispose();
            _stop.Dispose();
            _source.Dispose();
        }
        base.Dispose(disposing);
    }
}

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>One chunk of an app's output as the agent read it.</summary>
internal sealed record LogRecord(int Stream, long TimestampNs, ulong Sequence, byte[] Data);

/// <summary>
/// An app's stdout/stderr records, bounded in bytes (oldest dropped and counted). Sequence numbers
/// start at 1 and follow the order in which the agent read the bytes. Readers can wait for more
/// until <see cref="Complete"/> says no more will come (the app exited and its pipes drained).
/// </summary>
internal sealed class LogBuffer(int maxBytes = LogBuffer.DefaultMaxBytes)
{
    public const int DefaultMaxBytes = 1 << 20;
    public const int Stdout = 1, Stderr = 2;

    private readonly Queue<LogRecord> _records = new();
    private long _bytes;
    private ulong _next = 1;
    private bool _complete;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ulong Dropped { get; private set; }
    public long Bytes { get { lock (_records) return _bytes; } }

    /// <summary>The sequence number the next record will get (a reader from here sees only what comes).</summary>
    public ulong NextSequence { get { lock (_records) return _next; } }

    private long _lastTimestampNs;

    public void Append(int stream, ReadOnlySpan<byte> data, long timestampNs)
    {
        if (data.IsEmpty) return;
        if (data.Length > maxBytes) data = data[^maxBytes..];
        TaskCompletionSource changed;
        lock (_records)
        {
            if (_complete) return;
            // stdout and stderr are read by two threads, each taking its clock before this lock:
            // keep timestamps in sequence order, so a record is never older than the one before it.
            timestampNs = _lastTimestampNs = Math.Max(timestampNs, _lastTimestampNs);
            _records.Enqueue(new LogRecord(stream, timestampNs, _next++, data.ToArray()));
            _bytes += data.Length;
            while (_bytes > maxBytes && _records.TryDequeue(out var old))
            {
                _bytes -= old.Data.Length;
                Dropped++;
            }
            (changed, _changed) = (_changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        }
        changed.TrySetResult();
    }

    /// <summary>No more records will come.</summary>
    public void Complete()
    {
        TaskCompletionSource changed;
        lock (_records)
        {
            _complete = true;
            changed = _changed;
        }
        changed.TrySetResult();
    }

    /// <summary>Records with sequence ≥ <paramref name="since"/>, whether the buffer is complete, and a task that completes on the next change.</summary>
    public (List<LogRecord> Records, bool Complete, Task Changed) Read(ulong since)
    {
        lock (_records)
            return (_records.Where(r => r.Sequence >= since).ToList(), _complete, _changed.Task);
    }

    /// <summary>Streams records from <paramref name="since"/>; with <paramref name="follow"/> until complete.</summary>
    public async IAsyncEnumerable<LogRecord> ReadAllAsync(ulong since, bool follow, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellation = default)
    {
        while (true)
        {
            var (records, complete, changed) = Read(since);
            foreach (var r in records)
            {
                yield return r;
                since = r.Sequence + 1;
            }
            if (!follow || complete) yield break;
            await changed.WaitAsync(cancellation).ConfigureAwait(false);
        }
    }
}

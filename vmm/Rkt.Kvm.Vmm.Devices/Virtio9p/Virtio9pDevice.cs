using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Rkt.Kvm.Vmm.Memory;
using Serilog;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p;

/// <summary>
/// virtio-9p (device 9): one request queue carrying 9P2000.L for <see cref="P9Server"/>; the guest
/// finds the device by its mount tag (config: le16 length + tag bytes, feature MOUNT_TAG).
/// Chains are taken off the ring and completed on the device thread (the event loop that also
/// serves vsock), while the requests themselves, which block on host file I/O, run on a few
/// worker threads; their completions go back to the device thread in batches, one interrupt each.
/// Tflush is answered once the request it names has completed (the reply to that request is
/// still delivered: with virtio the guest gets its buffers back either way).
/// </summary>
public sealed class Virtio9pDevice : IVirtioDevice, IDisposable
{
    public const uint Id = 9;
    public const ushort QueueSize = 128;
    public const ulong FeatureMountTag = 1;
    public const string DefaultTag = "rkt";
    public const int WorkerCount = 3;

    private readonly GuestMemory _memory;
    private readonly IDeviceExecutor _executor;
    private readonly ILogger _log;
    private readonly byte[] _config;
    private readonly ConcurrentQueue<Work> _work = new();
    private readonly SemaphoreSlim _workAvailable = new(0);
    /// <summary>Set-up steps each worker runs on itself (<see cref="RunOnEveryWorker"/>), taken before guest work.</summary>
    private readonly ConcurrentQueue<Action> _workerSteps = new();
    private readonly ConcurrentQueue<Completion> _completions = new();
    private readonly Action _drainCompletions;
    private readonly Thread[] _workers;
    // Device-thread state: the tags in flight, and the Tflush chains waiting for them.
    private readonly Dictionary<ushort, int> _inFlightTags = [];
    private readonly Dictionary<ushort, List<(DescriptorChain Chain, ushort Tag)>> _flushWaiters = [];
    private SplitQueue? _queue;
    private Action<int>? _signalUsed;
    private int _drainPosted;
    private volatile bool _stopping;
    private long _malformed;

    private readonly record struct Work(SplitQueue Queue, DescriptorChain Chain);
    private readonly record struct Completion(SplitQueue Queue, ushort Head, uint Length, ushort Tag, bool Tracked);

    public P9Server Server { get; }
    public string MountTag { get; }
    /// <summary>Chains refused by the queue (malformed descriptors), for tests and logs.</summary>
    public long MalformedChains => Interlocked.Read(ref _malformed);

    /// <param name="onWorkerStart">Runs first on each worker thread (the VMM's jail lowers the thread's capabilities there).</param>
    public Virtio9pDevice(GuestMemory memory, P9Server server, IDeviceExecutor executor, ILogger log, string mountTag = DefaultTag, Action? onWorkerStart = null)
    {
        byte[] tag = Encoding.UTF8.GetBytes(mountTag);
        if (tag.Length is 0 or > 255) throw new ArgumentException($"The 9p mount tag must be 1-255 bytes, not {tag.Length}.");
        _memory = memory;
        Server = server;
        _executor = executor;
        _log = log;
        MountTag = mountTag;
        _config = new byte[2 + tag.Length];
        BinaryPrimitives.WriteUInt16LittleEndian(_config, (ushort)tag.Length);
        tag.CopyTo(_config, 2);
        _drainCompletions = DrainCompletions;
        _workers = new Thread[WorkerCount];
        // The device exists only once every worker has run onWorkerStart: the VMM's confinement
        // steps that follow (a drop to an unprivileged user) rely on what the workers set there.
        using var started = new CountdownEvent(WorkerCount);
        Exception? startFailure = null;
        for (int i = 0; i < WorkerCount; i++)
        {
            _workers[i] = new Thread(() =>
            {
                try { onWorkerStart?.Invoke(); }
                catch (Exception e) { startFailure = e; }
                finally { started.Signal(); }
                if (startFailure is null) WorkerLoop();
            }) { IsBackground = true, Name = "9p-worker" };
            _workers[i].Start();
        }
        started.Wait();
        if (startFailure is { } failure) throw new IOException($"A 9p worker could not be set up: {failure.Message}", failure);
    }

    /// <summary>
    /// Runs <paramref name="step"/> once on each worker thread, and returns when all have (set-up
    /// only: before the guest runs, when the workers are idle). Per-thread state such as
    /// capabilities can only be changed by the thread itself. Each worker waits at a barrier after
    /// its step, so none can take two.
    /// </summary>
    public void RunOnEveryWorker(Action step)
    {
        using var barrier = new Barrier(WorkerCount);
        using var done = new CountdownEvent(WorkerCount);
        Exception? failure = null;
        for (int i = 0; i < WorkerCount; i++)
        {
            _workerSteps.Enqueue(() =>
            {
                try { step(); }
                catch (Exception e) { failure = e; }
                barrier.SignalAndWait();
                done.Signal();
            });
        }
        _workAvailable.Release(WorkerCount);
        done.Wait();
        if (failure is not null) throw new IOException($"A 9p worker could not take a set-up step: {failure.Message}", failure);
    }

    public uint DeviceId => Id;
    public ulong Features => FeatureMountTag | MmioTransport.FeatureIndirectDesc;
    public IReadOnlyList<ushort> QueueMaxSizes { get; } = [QueueSize];
    public ReadOnlySpan<byte> Config => _config;

    public void Activate(ulong acceptedFeatures, IReadOnlyList<SplitQueue> queues, Action<int> signalUsed)
    {
        _queue = queues[0];
        _signalUsed = signalUsed;
    }

    /// <summary>The driver reset the device: requests still running complete into nothing, and the session's fids are gone.</summary>
    public void Reset()
    {
        _queue = null;
        _signalUsed = null;
        _inFlightTags.Clear();
        _flushWaiters.Clear();
        Server.ResetSession();
    }

    /// <summary>Open fids name host files a restored VM would not have, and requests in flight would be lost.</summary>
    public string? SnapshotBlocker =>
        !_work.IsEmpty || _inFlightTags.Count > 0 || !_completions.IsEmpty ? "9p requests are in flight"
        : Server.FidCount > 0 ? $"the guest has {Server.FidCount} 9p fids open (a template must not mount 9p)"
        : null;

    public bool OnNotify(int index)
    {
        if (index != 0 || _queue is not { } queue) return false;
        bool used = false;
        Span<byte> header = stackalloc byte[P9.HeaderSize + 2];
        while (queue.PopValid(why =>
        {
            Interlocked.Increment(ref _malformed);
            _log.Debug("virtio-9p: refused a malformed chain: {Reason}", why);
            used = true;
        }) is { } chain)
        {
            int n = chain.ReadFrom(_memory, 0, header);
            ushort tag = n >= P9.HeaderSize ? BinaryPrimitives.ReadUInt16LittleEndian(header[5..]) : P9.NoTag;
            if (n == header.Length && header[4] == P9.Tflush && BinaryPrimitives.ReadUInt32LittleEndian(header) == header.Length)
            {
                ushort oldTag = BinaryPrimitives.ReadUInt16LittleEndian(header[P9.HeaderSize..]);
                if (_inFlightTags.ContainsKey(oldTag)) Waiters(oldTag).Add((chain, tag));
                else { CompleteFlush(queue, chain, tag); used = true; }
                continue;
            }
            bool tracked = n >= P9.HeaderSize;
            if (tracked) _inFlightTags[tag] = _inFlightTags.GetValueOrDefault(tag) + 1;
            _work.Enqueue(new Work(queue, chain));
            _workAvailable.Release();
        }
        if (queue.Broken)
        {
            _log.Warning("virtio-9p: the request queue is broken, ignoring it until the driver resets the device");
            _queue = null;
        }
        return used;
    }

    private List<(DescriptorChain, ushort)> Waiters(ushort tag)
    {
        if (!_flushWaiters.TryGetValue(tag, out var list)) _flushWaiters[tag] = list = [];
        return list;
    }

    private void CompleteFlush(SplitQueue queue, DescriptorChain chain, ushort tag)
    {
        Span<byte> reply = stackalloc byte[P9.HeaderSize];
        int length = P9Messages.Encode(reply, tag, new Rflush());
        uint written = (uint)chain.WriteTo(_memory, 0, reply);
        queue.PushUsed(chain.Head, written == length ? written : 0);
    }

    // ------------------------------------------------------------------ workers

    private void WorkerLoop()
    {
        var request = new byte[P9.MaxMsize];
        var reply = new byte[P9.MaxMsize];
        var transfer = new ChainTransfer(_memory);
        while (true)
        {
            _workAvailable.Wait();
            if (_stopping) return;
            if (_workerSteps.TryDequeue(out var step))
            {
                step();
                continue;
            }
            if (!_work.TryDequeue(out var work)) continue;
            uint used = 0;
            ushort tag = P9.NoTag;
            bool tracked = false;
            try
            {
                used = Serve(work.Chain, request, reply, transfer, out tag, out tracked);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Serve answers guest errors itself; this is a VMM bug or a torn-down guest memory: complete empty.
                _log.Error(e, "virtio-9p: a request failed unexpectedly");
            }
            _completions.Enqueue(new Completion(work.Queue, work.Chain.Head, used, tag, tracked));
            if (Interlocked.Exchange(ref _drainPosted, 1) == 0) _executor.Post(_drainCompletions);
        }
    }

    private uint Serve(DescriptorChain chain, byte[] request, byte[] reply, ChainTransfer transfer, out ushort tag, out bool tracked)
    {
        long readable = 0, writable = 0;
        var buffers = chain.Buffers;
        for (int i = 0; i < buffers.Count; i++)
        {
            if (buffers[i].DeviceWritable) writable += buffers[i].Length;
            else readable += buffers[i].Length;
        }
        int n = chain.ReadFrom(_memory, 0, request.AsSpan(0, (int)Math.Min(readable, P9.HeaderSize)));
        tag = P9.NoTag;
        tracked = n >= P9.HeaderSize;
        if (tracked)
        {
            tag = BinaryPrimitives.ReadUInt16LittleEndian(request.AsSpan(5));
            uint size = BinaryPrimitives.ReadUInt32LittleEndian(request);
            // Twrite's data stays in guest memory (pwritev reads it there); everything else is copied whole.
            long want = request[4] == P9.Twrite ? P9.WriteRequestHeader : size;
            int total = (int)Math.Min(Math.Min(want, readable), request.Length);
            if (total > n) n += chain.ReadFrom(_memory, n, request.AsSpan(n, total - n));
        }
        transfer.Use(chain, writable);
        var replySpan = reply.AsSpan(0, (int)Math.Min(writable, reply.Length));
        var result = Server.Process(request.AsSpan(0, n), readable, replySpan, transfer);
        if (result.Length == 0) return 0;
        chain.WriteTo(_memory, 0, replySpan[..result.Length]);
        return (uint)result.Used;
    }

    // ------------------------------------------------------------------ completions (device thread)

    private void DrainCompletions()
    {
        Volatile.Write(ref _drainPosted, 0);
        bool any = false;
        while (_completions.TryDequeue(out var c))
        {
            // After a reset the old queue is gone: its late completions go nowhere.
            if (c.Queue != _queue) continue;
            c.Queue.PushUsed(c.Head, c.Length);
            any = true;
            if (c.Tracked && _inFlightTags.TryGetValue(c.Tag, out int count))
            {
                if (count > 1) _inFlightTags[c.Tag] = count - 1;
                else
                {
                    _inFlightTags.Remove(c.Tag);
                    if (_flushWaiters.Remove(c.Tag, out var waiters))
                        foreach (var (chain, tag) in waiters) CompleteFlush(c.Queue, chain, tag);
                }
            }
        }
        if (any) _signalUsed?.Invoke(0);
    }

    /// <summary>Stops the workers (waiting for the requests they run, so nothing touches guest memory afterwards) and closes every export and fid.</summary>
    public void Dispose()
    {
        _stopping = true;
        _workAvailable.Release(WorkerCount);
        foreach (var t in _workers) t.Join(TimeSpan.FromSeconds(10));
        Server.Dispose();
        _workAvailable.Dispose();
    }
}

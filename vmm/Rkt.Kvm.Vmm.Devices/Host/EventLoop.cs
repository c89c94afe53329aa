using System.Collections.Concurrent;
using Rkt.Kvm.Vmm.Devices;
using Rkt.Kvm.Posix;
using Serilog;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>A pending timer of the <see cref="EventLoop"/>; cancel it to stop it firing.</summary>
public sealed class LoopTimer
{
    internal LoopTimer(Action action) => Action = action;
    internal Action Action { get; }
    public bool Cancelled { get; private set; }
    public void Cancel() => Cancelled = true;
}

/// <summary>
/// The VMM's device thread: one epoll set for every file descriptor a device waits on (queue
/// notify eventfds, the vsock Unix sockets), work posted by vCPU threads, and timers. Devices
/// keep their state on this thread only, so they need no locks of their own. Handlers run one
/// at a time; an exception in one is logged and the loop goes on (it is a VMM bug, never the
/// guest's doing, but it must not take the other devices down).
/// </summary>
public sealed unsafe class EventLoop : IDeviceExecutor, IDisposable
{
    private const int MaxEventsPerWait = 64;

    private readonly FileDescriptor _epoll;
    private readonly EventFd _wake = new();
    private readonly ConcurrentQueue<Action> _posted = new();
    private readonly ConcurrentDictionary<ulong, Action<uint>> _handlers = new();
    private readonly PriorityQueue<LoopTimer, long> _timers = new();
    private readonly ILogger _log;
    private ulong _nextToken = 1;
    private Thread? _thread;
    private volatile bool _stopping;

    public EventLoop(ILogger log)
    {
        _log = log;
        int fd = epoll_create1(EPOLL_CLOEXEC);
        if (fd < 0) throw new ErrnoException("epoll_create1", errno);
        _epoll = new FileDescriptor(fd);
        Add(_wake.Handle, EPOLLIN, _ => _wake.Drain());
    }

    /// <summary>True on the loop's own thread (before <see cref="Start"/>, on any thread: nothing runs concurrently yet).</summary>
    public bool OnLoopThread => _thread is null || Thread.CurrentThread == _thread;

    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "devices" };
        _thread.Start();
    }

    /// <summary>Watches <paramref name="fd"/> for <paramref name="events"/> (EPOLL* bits); returns the token that identifies the registration.</summary>
    public ulong Add(FileDescriptor fd, int events, Action<uint> handler)
    {
        ulong token = Interlocked.Increment(ref _nextToken);
        _handlers[token] = handler;
        var ev = new epoll_event { events = events };
        ev.data.u64 = token;
        if (epoll_ctl(_epoll.Number, EPOLL_CTL_ADD, fd.Number, &ev) < 0)
        {
            int error = errno;
            _handlers.TryRemove(token, out _);
            throw new ErrnoException("epoll_ctl(ADD)", error);
        }
        return token;
    }

    /// <summary>Changes which <paramref name="events"/> a registration from <see cref="Add"/> waits for (0: only errors and hang-ups).</summary>
    public void Modify(FileDescriptor fd, ulong token, int events)
    {
        var ev = new epoll_event { events = events };
        ev.data.u64 = token;
        if (epoll_ctl(_epoll.Number, EPOLL_CTL_MOD, fd.Number, &ev) < 0) throw new ErrnoException("epoll_ctl(MOD)", errno);
    }

    /// <summary>Stops watching <paramref name="fd"/>; events already fetched for it are dropped. Call before closing the fd.</summary>
    public void Remove(FileDescriptor fd, ulong token)
    {
        _handlers.TryRemove(token, out _);
        if (!fd.IsClosed) epoll_ctl(_epoll.Number, EPOLL_CTL_DEL, fd.Number, null);
    }

    /// <summary>Runs <paramref name="action"/> after <paramref name="delay"/> on the loop thread. Loop thread only.</summary>
    public LoopTimer Schedule(TimeSpan delay, Action action)
    {
        var timer = new LoopTimer(action);
        _timers.Enqueue(timer, Environment.TickCount64 + (long)delay.TotalMilliseconds);
        return timer;
    }

    public void Post(Action action)
    {
        _posted.Enqueue(action);
        _wake.Signal();
    }

    public void Invoke(Action action)
    {
        if (OnLoopThread) { action(); return; }
        using var done = new ManualResetEventSlim();
        Exception? failure = null;
        Post(() =>
        {
            try { action(); }
            catch (Exception e) { failure = e; }
            finally { done.Set(); }
        });
        done.Wait();
        if (failure is not null) throw new InvalidOperationException($"Device work failed: {failure.Message}", failure);
    }

    private void Run()
    {
        var events = stackalloc epoll_event[MaxEventsPerWait];
        while (!_stopping)
        {
            int n = epoll_wait(_epoll.Number, events, MaxEventsPerWait, NextTimeoutMs());
            if (n < 0 && errno != EINTR) { _log.Error("epoll_wait failed (errno {Errno}); the device thread stops", errno); return; }
            for (int i = 0; i < n; i++)
            {
                if (_handlers.TryGetValue(events[i].data.u64, out var handler)) Guard(() => handler((uint)events[i].events));
            }
            while (_posted.TryDequeue(out var action)) Guard(action);
            RunDueTimers();
        }
    }

    private int NextTimeoutMs()
    {
        if (!_posted.IsEmpty) return 0;
        while (_timers.TryPeek(out var timer, out long due))
        {
            if (timer.Cancelled) { _timers.Dequeue(); continue; }
            return (int)Math.Clamp(due - Environment.TickCount64, 0, int.MaxValue);
        }
        return -1;
    }

    private void RunDueTimers()
    {
        long now = Environment.TickCount64;
        while (_timers.TryPeek(out var timer, out long due) && due <= now)
        {
            _timers.Dequeue();
            if (!timer.Cancelled) Guard(timer.Action);
        }
    }

    private void Guard(Action action)
    {
        try
        {
            action();
        }
        catch (Exception e)
        {
            _log.Error(e, "Device thread: unexpected failure in a device handler (continuing)");
        }
    }

    /// <summary>Ends the loop thread; registrations stay valid so owners can still remove them before <see cref="Dispose"/>.</summary>
    public void Stop()
    {
        _stopping = true;
        _wake.Signal();
        if (_thread is { } t && t != Thread.CurrentThread) t.Join(TimeSpan.FromSeconds(5));
    }

    public void Dispose()
    {
        Stop();
        _wake.Dispose();
        _epoll.Dispose();
    }
}

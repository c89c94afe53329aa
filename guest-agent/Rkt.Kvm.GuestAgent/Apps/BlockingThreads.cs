namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// Parked threads for blocking work on an app's start path (pipe readers, file I/O over 9p). Starting a
/// thread costs 100-250 ms in a guest on a nested host, and blocking thread-pool threads risks the
/// pool's slow thread injection; threads made ahead (<see cref="Prestart"/>, before the agent reports
/// ready, so a template VM holds them) are handed work instead. A thread that finishes its work parks
/// again, up to <see cref="MaxIdle"/>; beyond that it ends.
/// </summary>
internal static class BlockingThreads
{
    public const int MaxIdle = 16;

    private static readonly Lock s_lock = new();
    private static readonly Stack<Worker> s_idle = new();

    /// <summary>Makes threads now so that the next <paramref name="count"/> pieces of work start without one.</summary>
    public static void Prestart(int count)
    {
        lock (s_lock)
            while (s_idle.Count < Math.Min(count, MaxIdle)) s_idle.Push(new Worker());
    }

    private static int s_created;

    public static int Idle { get { lock (s_lock) return s_idle.Count; } }

    /// <summary>Threads made so far (for tests: work handed to a parked thread makes none).</summary>
    public static int Created => Volatile.Read(ref s_created);

    /// <summary>Runs <paramref name="work"/> on a parked thread (or a new one); the task ends with it.</summary>
    public static Task<T> Run<T>(Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Worker? worker;
        lock (s_lock) s_idle.TryPop(out worker);
        (worker ?? new Worker()).Give(() =>
        {
            try { done.SetResult(work()); }
            catch (Exception e) { done.SetException(e); }
        });
        return done.Task;
    }

    public static Task Run(Action work) => Run(() => { work(); return true; });

    private sealed class Worker
    {
        private readonly SemaphoreSlim _ready = new(0);
        private Action? _work;

        public Worker()
        {
            Interlocked.Increment(ref s_created);
            new Thread(Loop, maxStackSize: 256 << 10) { IsBackground = true, Name = "blocking" }.Start();
        }

        public void Give(Action work)
        {
            _work = work;
            _ready.Release();
        }

        private void Loop()
        {
            while (true)
            {
                _ready.Wait();
                Action work = _work!;
                _work = null;
                work();
                lock (s_lock)
                {
                    if (s_idle.Count >= MaxIdle) return;
                    s_idle.Push(this);
                }
            }
        }
    }
}

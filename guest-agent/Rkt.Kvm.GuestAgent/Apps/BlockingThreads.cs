namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// Parked threads for blocking work on an app's start path (pipe readers, the stage2 helper's status).
/// Starting a thread costs 100-250 ms in a guest on a nested host, and blocking thread-pool threads
/// risks the pool's slow thread injection; a thread that finished its work parks and takes the next
/// piece (a later app's, an exec's), up to <see cref="MaxIdle"/> parked; beyond that it ends. None
/// are made ahead: in an A/B of 4 pods each (Dec 2026), a template holding six parked threads
/// restored ~0.2 s slower and started its first app no faster.
/// </summary>
internal static class BlockingThreads
{
    public const int MaxIdle = 16;

    private static readonly Lock s_lock = new();
    private static readonly Stack<Worker> s_idle = new();

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

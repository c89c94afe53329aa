using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Stage1.Pods;

/// <summary>
/// The pod's lock, as rkt keeps it: an flock on the pod <em>directory</em> (a <see cref="FileLock"/>).
/// A pod is running exactly while some process holds it exclusively. Stage0 takes it, clears
/// FD_CLOEXEC and hands the fd to stage1 run as <c>RKT_LOCK_FD</c>; stage1 keeps it for the pod's
/// life and sets FD_CLOEXEC again before spawning anything, so no helper outlives the pod holding it.
/// </summary>
public sealed class PodLock : IDisposable
{
    public const string EnvironmentVariable = "RKT_LOCK_FD";

    private readonly FileLock _lock;

    private PodLock(FileLock fileLock) => _lock = fileLock;

    public int Fd => _lock.Fd;

    /// <summary>Takes the exclusive lock; null when another process holds it (the pod runs).</summary>
    public static PodLock? TryExclusive(string podDir) => FileLock.TryDirectory(podDir, exclusive: true) is { } l ? new PodLock(l) : null;

    /// <summary>Whether some process holds the pod's exclusive lock, i.e. the pod is running.</summary>
    public static bool IsHeld(string podDir)
    {
        using var probe = FileLock.TryDirectory(podDir, exclusive: false);
        return probe is null;
    }

    /// <summary>Adopts the fd stage0 passed in <c>RKT_LOCK_FD</c> and makes it close-on-exec.</summary>
    public static PodLock FromEnvironment()
    {
        var text = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!int.TryParse(text, out int fd) || fd < 0)
            throw new Stage1Exception($"{EnvironmentVariable} is \"{text}\": stage0 must pass the pod lock's file descriptor");
        if (!FileLock.IsOpen(fd)) throw new Stage1Exception($"{EnvironmentVariable}={fd} is not an open file descriptor");
        var podLock = new PodLock(FileLock.Adopt(fd));
        podLock.SetInheritable(false);
        return podLock;
    }

    /// <summary>Clears or sets FD_CLOEXEC: cleared only for the exec into stage1.</summary>
    public void SetInheritable(bool inheritable) => _lock.SetInheritable(inheritable);

    public void Dispose() => _lock.Dispose();
}

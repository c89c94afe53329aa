using Microsoft.Win32.SafeHandles;
using Rkt.Kvm.Stage1.Native;

namespace Rkt.Kvm.Stage1.Pods;

/// <summary>
/// The pod's lock, as rkt keeps it: an flock on the pod <em>directory</em>. A pod is running
/// exactly while some process holds it exclusively. Stage0 takes it, clears FD_CLOEXEC and hands
/// the fd to stage1 run as <c>RKT_LOCK_FD</c>; stage1 keeps it for the pod's life and sets
/// FD_CLOEXEC again before spawning anything, so no helper outlives the pod holding it.
/// </summary>
public sealed class PodLock : IDisposable
{
    public const string EnvironmentVariable = "RKT_LOCK_FD";

    private readonly SafeFileHandle _handle;

    private PodLock(SafeFileHandle handle) => _handle = handle;

    public int Fd => (int)_handle.DangerousGetHandle();

    /// <summary>Takes the exclusive lock; null when another process holds it (the pod runs).</summary>
    public static PodLock? TryExclusive(string podDir) => Acquire(podDir, Libc.LOCK_EX);

    /// <summary>Whether some process holds the pod's exclusive lock, i.e. the pod is running.</summary>
    public static bool IsHeld(string podDir)
    {
        using var probe = Acquire(podDir, Libc.LOCK_SH);
        return probe is null;
    }

    /// <summary>Adopts the fd stage0 passed in <c>RKT_LOCK_FD</c> and makes it close-on-exec.</summary>
    public static PodLock FromEnvironment()
    {
        var text = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!int.TryParse(text, out int fd) || fd < 0)
            throw new Stage1Exception($"{EnvironmentVariable} is \"{text}\": stage0 must pass the pod lock's file descriptor");
        if (Libc.fcntl(fd, Libc.F_GETFD, 0) < 0) throw new Stage1Exception($"{EnvironmentVariable}={fd} is not an open file descriptor");
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        var podLock = new PodLock(handle);
        podLock.SetInheritable(false);
        return podLock;
    }

    /// <summary>Clears or sets FD_CLOEXEC: cleared only for the exec into stage1.</summary>
    public void SetInheritable(bool inheritable)
    {
        int flags = Libc.fcntl(Fd, Libc.F_GETFD, 0);
        if (flags < 0 || Libc.fcntl(Fd, Libc.F_SETFD, inheritable ? flags & ~Libc.FD_CLOEXEC : flags | Libc.FD_CLOEXEC) < 0)
            throw Libc.Error("fcntl", "pod lock");
    }

    private static PodLock? Acquire(string podDir, int operation)
    {
        int fd = Libc.open(podDir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd < 0) throw Libc.Error("open", podDir);
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        while (Libc.flock(fd, operation | Libc.LOCK_NB) != 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR) continue;
            handle.Dispose();
            if (errno == Libc.EWOULDBLOCK) return null;
            throw new IOException($"flock {podDir}: errno {errno}");
        }
        return new PodLock(handle);
    }

    public void Dispose() => _handle.Dispose();
}

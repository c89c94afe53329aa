using Rkt.Kvm.Posix;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>
/// Ends the VM when the process that started it ends (<c>--owner-pid</c>, <c>--owner-pidfd</c>),
/// however it ends, SIGKILL included, so a VM never outlives the stage1 that owns its pod. A pidfd
/// of the owner sits in the device loop's epoll set and becomes readable when the owner exits.
/// <para>Why a pidfd: <c>PR_SET_PDEATHSIG</c> fires when the <em>thread</em> that forked us exits,
/// and .NET forks from whichever thread called Process.Start, which may end long before the owner
/// does (stage1's spawn thread for our PID namespace ends at once). A pipe from the owner would
/// need the owner's cooperation at spawn time, which Process.Start does not offer either.</para>
/// <para>By pid, the owner must be our parent: checking <c>getppid()</c> after opening the pidfd
/// closes the race in which the owner died before we looked and its PID went to another process.
/// In a PID namespace of our own the owner has no pid we could name (and <c>getppid()</c> is 0),
/// so our starter passes a pidfd of itself instead, which has no such race.</para>
/// </summary>
public sealed class OwnerWatch : IDisposable
{
    private readonly FileDescriptor _pidfd;
    private readonly EventLoop _loop;
    private readonly ulong _token;

    private OwnerWatch(FileDescriptor pidfd, EventLoop loop, Action ownerGone)
    {
        _pidfd = pidfd;
        _loop = loop;
        _token = loop.Add(pidfd, EPOLLIN, _ => ownerGone());
    }

    /// <summary>Watches <paramref name="ownerPid"/>; calls <paramref name="ownerGone"/> on the loop
    /// thread once it exits. Returns null (having called nothing) when the owner is already gone.</summary>
    public static OwnerWatch? Start(int ownerPid, EventLoop loop, Action ownerGone)
    {
        // Our parent is outside our PID namespace: no pid we could open is the owner's.
        if (getppid() == 0) throw new ArgumentException("--owner-pid names no process from inside a PID namespace of the VMM's own: pass the owner as --owner-pidfd.");
        var pidfd = Pidfd.Open(ownerPid);
        if (pidfd is null) return null;
        if (getppid() != ownerPid)
        {
            pidfd.Dispose();
            return null; // the owner died before we looked (we were re-parented); the PID may be someone else's now
        }
        return new OwnerWatch(pidfd, loop, ownerGone);
    }

    /// <summary>Watches the owner through the inherited pidfd <paramref name="fd"/>, which this
    /// watch now owns (made close-on-exec); calls <paramref name="ownerGone"/> on the loop thread
    /// once it exits, at once when it already has.</summary>
    public static OwnerWatch Adopt(int fd, EventLoop loop, Action ownerGone)
    {
        if (!Pidfd.Is(fd)) throw new ArgumentException($"--owner-pidfd {fd} is not an open pidfd.");
        ErrnoException.Check(fcntl(fd, F_SETFD, FD_CLOEXEC), $"fcntl(--owner-pidfd {fd}, FD_CLOEXEC)");
        return new OwnerWatch(new FileDescriptor(fd), loop, ownerGone);
    }

    public void Dispose()
    {
        _loop.Remove(_pidfd, _token);
        _pidfd.Dispose();
    }
}

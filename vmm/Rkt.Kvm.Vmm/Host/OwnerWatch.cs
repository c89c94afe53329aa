using System.Runtime.InteropServices;
using Rkt.Kvm.Posix;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>
/// Ends the VM when the process that started it ends (<c>--owner-pid</c>), however it ends,
/// SIGKILL included, so a VM never outlives the stage1 that owns its pod. A pidfd of the owner
/// sits in the device loop's epoll set and becomes readable when the owner exits.
/// <para>Why a pidfd: <c>PR_SET_PDEATHSIG</c> fires when the <em>thread</em> that forked us exits,
/// and .NET forks from whichever thread called Process.Start, which may end long before the owner
/// does. A pipe from the owner would need the owner's cooperation at spawn time, which
/// Process.Start does not offer either.</para>
/// <para>The owner must be our parent: checking <c>getppid()</c> after opening the pidfd closes the
/// race in which the owner died before we looked and its PID went to another process.</para>
/// </summary>
public sealed partial class OwnerWatch : IDisposable
{
    private const long SysPidfdOpen = 434;
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
        long fd = pidfd_open(SysPidfdOpen, ownerPid, 0);
        if (fd < 0)
        {
            int error = Marshal.GetLastPInvokeError();
            if (error == ESRCH) return null;
            throw new ErrnoException("pidfd_open", error);
        }
        var pidfd = new FileDescriptor((int)fd);
        if (getppid() != ownerPid)
        {
            pidfd.Dispose();
            return null; // the owner died before we looked (we were re-parented); the PID may be someone else's now
        }
        return new OwnerWatch(pidfd, loop, ownerGone);
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long pidfd_open(long number, int pid, uint flags);

    public void Dispose()
    {
        _loop.Remove(_pidfd, _token);
        _pidfd.Dispose();
    }
}

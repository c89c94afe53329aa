using System.Diagnostics;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Host;
using Serilog;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>
/// How a VMM learns that its owner is gone when it lives in a PID namespace of its own: through a
/// pidfd it inherited (<c>--owner-pidfd</c>), since no pid of its owner means anything there; and
/// how its starter puts it in that namespace (<see cref="ChildNamespaces"/>). Real processes, no VM.
/// </summary>
public sealed class OwnerWatchTests
{
    [SkippableFact]
    public void A_child_started_through_ChildNamespaces_is_pid_1_of_a_new_pid_namespace_and_the_caller_stays_in_its_own()
    {
        Skip.IfNot(ChildNamespaces.CanUnshare, "creating a PID namespace needs root with CAP_SYS_ADMIN");
        string ours = new FileInfo("/proc/thread-self/ns/pid_for_children").LinkTarget!;
        using var child = new Process { StartInfo = new ProcessStartInfo("/bin/sh", ["-c", "echo $$; exec grep NSpid /proc/self/status"]) { RedirectStandardOutput = true } };
        ChildNamespaces.Start(ChildNamespaces.Pid, () => child.Start());
        string output = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        Assert.StartsWith("1\n", output);
        Assert.Matches(@"NSpid:\t\d+\t1\n", output);
        // Only the spawning thread unshared, and it is gone: this thread's children are still born here.
        Assert.Equal(ours, new FileInfo("/proc/thread-self/ns/pid_for_children").LinkTarget);
        Assert.Throws<ArgumentException>(() => ChildNamespaces.Start(0x00020000 /* CLONE_NEWNS */, () => { }));
    }

    [Fact]
    public void An_adopted_pidfd_ends_the_vm_when_its_process_exits_and_anything_else_is_refused()
    {
        using var loop = new EventLoop(new LoggerConfiguration().CreateLogger());
        loop.Start();
        using var owner = Process.Start("/bin/sleep", "30");
        var pidfd = Pidfd.Open(owner.Id)!;
        int fd = pidfd.DangerousGetHandle().ToInt32();
        pidfd.SetHandleAsInvalid(); // the watch owns it now
        Assert.Equal(0, Tmds.Linux.LibC.fcntl(fd, Tmds.Linux.LibC.F_SETFD, 0)); // inherited as the VMM gets it: not close-on-exec
        using var gone = new ManualResetEventSlim();
        using var watch = OwnerWatch.Adopt(fd, loop, gone.Set);
        Assert.False(gone.Wait(TimeSpan.FromMilliseconds(300)), "the watch fired while its owner lives");
        owner.Kill();
        Assert.True(gone.Wait(TimeSpan.FromSeconds(10)), "the watch did not fire when its owner was killed");
        Assert.Equal(Tmds.Linux.LibC.FD_CLOEXEC, Tmds.Linux.LibC.fcntl(fd, Tmds.Linux.LibC.F_GETFD) & Tmds.Linux.LibC.FD_CLOEXEC);

        // An fd that is not a pidfd (stdin here; a pipe, a file) or not open at all is refused, not watched.
        Assert.Contains("is not an open pidfd", Assert.Throws<ArgumentException>(() => OwnerWatch.Adopt(0, loop, () => { })).Message);
        Assert.Contains("is not an open pidfd", Assert.Throws<ArgumentException>(() => OwnerWatch.Adopt(1_000_000, loop, () => { })).Message);
    }
}

using Rkt.Kvm.Posix;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>
/// A Linux eventfd: a counter one side increments (<see cref="Signal"/>) and the other reads to
/// zero (<see cref="Drain"/>). KVM writes it for ioeventfd (a guest queue notify that never exits
/// to us) and reads it for irqfd (an interrupt injected without an ioctl); the event loop polls it.
/// </summary>
public sealed unsafe class EventFd : IDisposable
{
    public FileDescriptor Handle { get; }

    public EventFd()
    {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) throw new ErrnoException("eventfd", errno);
        Handle = new FileDescriptor(fd);
    }

    internal int Number => Handle.Number;

    public void Signal()
    {
        ulong one = 1;
        // A full counter (2^64-2 pending signals) cannot happen here; EAGAIN would only mean "already signalled".
        write(Handle.Number, &one, sizeof(ulong));
    }

    /// <summary>Resets the counter; returns how many signals were pending (0 when none).</summary>
    public ulong Drain()
    {
        ulong value = 0;
        return read(Handle.Number, &value, sizeof(ulong)) == sizeof(ulong) ? value : 0;
    }

    public void Dispose() => Handle.Dispose();
}

using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>A KVM virtual machine: memory slots, the in-kernel interrupt controllers and PIT, vCPUs.</summary>
public sealed unsafe class KvmVm : IDisposable
{
    private readonly FileDescriptor _fd;
    private readonly int _vcpuMmapSize;

    internal KvmVm(FileDescriptor fd, int vcpuMmapSize)
    {
        _fd = fd;
        _vcpuMmapSize = vcpuMmapSize;
    }

    /// <summary>Three pages KVM needs for the real-mode TSS on Intel; placed just below the 4 GiB BIOS area.</summary>
    public void SetTssAddress(ulong address) => Syscall.Ioctl(_fd, KvmIoctl.SetTssAddr, address);

    /// <summary>Creates the in-kernel PIC pair, IOAPIC and per-vCPU local APICs.</summary>
    public void CreateIrqchip() => Syscall.Ioctl(_fd, KvmIoctl.CreateIrqchip, 0);

    /// <summary>Creates the in-kernel i8254 PIT (and the speaker port 0x61 that comes with it).</summary>
    public void CreatePit()
    {
        var config = stackalloc uint[16]; // struct kvm_pit_config: flags + padding, all zero.
        new Span<uint>(config, 16).Clear();
        Syscall.Ioctl(_fd, KvmIoctl.CreatePit2, config);
    }

    public void SetUserMemoryRegion(uint slot, ulong guestPhysAddr, ulong size, IntPtr hostAddress)
    {
        var region = new KvmUserspaceMemoryRegion
        {
            Slot = slot,
            GuestPhysAddr = guestPhysAddr,
            MemorySize = size,
            UserspaceAddr = (ulong)hostAddress.ToInt64(),
        };
        Syscall.Ioctl(_fd, KvmIoctl.SetUserMemoryRegion, &region);
    }

    /// <summary>Drives an interrupt line of the in-kernel PIC/IOAPIC to the given level.</summary>
    public void SetIrqLine(uint irq, bool level)
    {
        var irqLevel = new KvmIrqLevel { Irq = irq, Level = level ? 1u : 0u };
        Syscall.Ioctl(_fd, KvmIoctl.IrqLine, &irqLevel);
    }

    /// <summary>Has KVM inject <paramref name="gsi"/> (as an edge) each time <paramref name="eventFd"/> is signalled.</summary>
    public void AssignIrqfd(Host.EventFd eventFd, uint gsi)
    {
        var irqfd = new KvmIrqfd { Fd = (uint)eventFd.Handle.Number, Gsi = gsi };
        Syscall.Ioctl(_fd, KvmIoctl.Irqfd, &irqfd);
    }

    /// <summary>Has KVM signal <paramref name="eventFd"/> instead of exiting when the guest writes the 32-bit <paramref name="value"/> to MMIO <paramref name="address"/>.</summary>
    public void AssignIoeventfd(Host.EventFd eventFd, ulong address, uint value)
    {
        var ioeventfd = new KvmIoeventfd { Address = address, Length = 4, Datamatch = value, Fd = eventFd.Handle.Number, Flags = KvmIoeventfd.FlagDatamatch };
        Syscall.Ioctl(_fd, KvmIoctl.Ioeventfd, &ioeventfd);
    }

    /// <summary>Reads a VM-wide state structure (irqchip, PIT, clock) as opaque bytes; <paramref name="initial"/> fills the request's input fields.</summary>
    public byte[] GetState(uint request, int size, ReadOnlySpan<byte> initial = default)
    {
        var bytes = new byte[size];
        initial.CopyTo(bytes);
        fixed (byte* p = bytes) Syscall.Ioctl(_fd, request, p);
        return bytes;
    }

    public void SetState(uint request, byte[] bytes)
    {
        fixed (byte* p = bytes) Syscall.Ioctl(_fd, request, p);
    }

    public KvmVcpu CreateVcpu(int id)
    {
        int fd = Syscall.Ioctl(_fd, KvmIoctl.CreateVcpu, (ulong)id);
        return new KvmVcpu(id, new FileDescriptor(fd), _vcpuMmapSize);
    }

    public void Dispose() => _fd.Dispose();
}

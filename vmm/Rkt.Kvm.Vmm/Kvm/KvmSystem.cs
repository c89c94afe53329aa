using Tmds.Linux;
using static Tmds.Linux.LibC;

using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>The /dev/kvm handle: API checks, host capabilities, and the factory for VMs.</summary>
public sealed unsafe class KvmSystem : IDisposable
{
    public const string DefaultDevicePath = "/dev/kvm";
    private const int ExpectedApiVersion = 12;

    private readonly FileDescriptor _fd;

    private KvmSystem(FileDescriptor fd) => _fd = fd;

    /// <summary>Opens /dev/kvm and checks the API version and the capabilities our machine relies on.</summary>
    public static KvmSystem Open(string devicePath = DefaultDevicePath)
    {
        FileDescriptor fd;
        try
        {
            fd = Syscall.Open(devicePath, O_RDWR);
        }
        catch (KvmException e)
        {
            throw new KvmException(
                $"Cannot open {devicePath}: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(e.Errno)}. " +
                "KVM must be available and this user must be allowed to open it.");
        }
        var system = new KvmSystem(fd);
        try
        {
            int version;
            try
            {
                version = Syscall.Ioctl(fd, KvmIoctl.GetApiVersion, 0);
            }
            catch (KvmException e)
            {
                throw new KvmException($"{devicePath} is not a KVM device ({e.Message.TrimEnd('.')}).");
            }
            if (version != ExpectedApiVersion)
                throw new KvmException($"{devicePath} speaks KVM API version {version}; version {ExpectedApiVersion} is required.");
            foreach (var (cap, name) in new[] { (KvmCapability.Irqchip, "in-kernel irqchip"), (KvmCapability.UserMemory, "user memory"),
                         (KvmCapability.SetTssAddr, "TSS address"), (KvmCapability.Pit2, "in-kernel PIT"), (KvmCapability.ExtCpuid, "CPUID2") })
            {
                if (!system.HasCapability(cap))
                    throw new KvmException($"{devicePath} lacks the {name} capability this VMM requires.");
            }
            return system;
        }
        catch
        {
            system.Dispose();
            throw;
        }
    }

    public bool HasCapability(int capability) => Syscall.Ioctl(_fd, KvmIoctl.CheckExtension, (ulong)capability) > 0;

    /// <summary>KVM can inject interrupts signalled through an eventfd (KVM_IRQFD).</summary>
    public bool SupportsIrqfd => HasCapability(KvmCapability.Irqfd);

    /// <summary>KVM can turn guest MMIO writes into eventfd signals without exiting (KVM_IOEVENTFD).</summary>
    public bool SupportsIoeventfd => HasCapability(KvmCapability.Ioeventfd);

    public int CheckExtension(int capability) => Syscall.Ioctl(_fd, KvmIoctl.CheckExtension, (ulong)capability);

    /// <summary>The largest vCPU count the host supports (KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS, else 4).</summary>
    public int MaxVcpus
    {
        get
        {
            int max = CheckExtension(KvmCapability.MaxVcpus);
            if (max <= 0) max = CheckExtension(KvmCapability.NrVcpus);
            return max > 0 ? max : 4;
        }
    }

    public int VcpuMmapSize => Syscall.Ioctl(_fd, KvmIoctl.GetVcpuMmapSize, 0);

    /// <summary>The CPUID leaves KVM can present to a guest (KVM_GET_SUPPORTED_CPUID), growing the buffer on E2BIG.</summary>
    public KvmCpuidEntry2[] GetSupportedCpuid()
    {
        for (int capacity = 128; capacity <= 4096; capacity *= 2)
        {
            var buffer = new byte[8 + capacity * sizeof(KvmCpuidEntry2)];
            fixed (byte* p = buffer)
            {
                *(uint*)p = (uint)capacity;
                bool added = false;
                _fd.DangerousAddRef(ref added);
                int rc = ioctl(_fd.Number, unchecked((int)KvmIoctl.GetSupportedCpuid), p);
                int err = errno;
                if (added) _fd.DangerousRelease();
                if (rc < 0 && err == E2BIG) continue;
                if (rc < 0) throw new KvmException("KVM_GET_SUPPORTED_CPUID", err);
                uint count = *(uint*)p;
                var entries = new KvmCpuidEntry2[count];
                new ReadOnlySpan<KvmCpuidEntry2>(p + 8, (int)count).CopyTo(entries);
                return entries;
            }
        }
        throw new KvmException("KVM_GET_SUPPORTED_CPUID returned more than 4096 entries.");
    }

    /// <summary>The MSRs KVM can save and restore for a vCPU (KVM_GET_MSR_INDEX_LIST: what it saves plus what it emulates).</summary>
    public uint[] GetMsrIndexList()
    {
        uint count = 0;
        // Asked with room for none, KVM answers E2BIG and the count it needs.
        int rc = ioctl(_fd.Number, unchecked((int)KvmIoctl.GetMsrIndexList), &count);
        if (rc == 0) return [];
        if (errno != E2BIG) throw new KvmException("KVM_GET_MSR_INDEX_LIST", errno);
        var buffer = new uint[count + 1];
        fixed (uint* p = buffer)
        {
            p[0] = count;
            Syscall.Ioctl(_fd, KvmIoctl.GetMsrIndexList, p);
            return buffer.AsSpan(1, (int)p[0]).ToArray();
        }
    }

    public KvmVm CreateVm()
    {
        int fd = Syscall.Ioctl(_fd, KvmIoctl.CreateVm, 0);
        return new KvmVm(new FileDescriptor(fd), VcpuMmapSize);
    }

    public void Dispose() => _fd.Dispose();
}

namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>
/// The KVM ioctl request numbers we use, computed the way linux/kvm.h does (_IO/_IOR/_IOW/_IOWR
/// with type 0xAE), so each one documents the size of the structure it carries.
/// </summary>
internal static class KvmIoctl
{
    private const uint KvmIo = 0xAE;
    private const uint DirNone = 0, DirWrite = 1, DirRead = 2;

    private static uint Io(uint nr) => Encode(DirNone, nr, 0);
    private static uint Ior(uint nr, int size) => Encode(DirRead, nr, size);
    private static uint Iow(uint nr, int size) => Encode(DirWrite, nr, size);
    private static uint Iowr(uint nr, int size) => Encode(DirRead | DirWrite, nr, size);
    private static uint Encode(uint dir, uint nr, int size) => (dir << 30) | ((uint)size << 16) | (KvmIo << 8) | nr;

    // System ioctls (on /dev/kvm).
    public static readonly uint GetApiVersion = Io(0x00);
    public static readonly uint CreateVm = Io(0x01);
    public static readonly uint CheckExtension = Io(0x03);
    public static readonly uint GetVcpuMmapSize = Io(0x04);
    public static readonly uint GetSupportedCpuid = Iowr(0x05, 8);
    public static readonly uint GetMsrIndexList = Iowr(0x02, 4);

    // VM ioctls.
    public static readonly uint CreateVcpu = Io(0x41);
    public static readonly uint SetUserMemoryRegion = Iow(0x46, 32);
    public static readonly uint SetTssAddr = Io(0x47);
    public static readonly uint SetIdentityMapAddr = Iow(0x48, 8);
    public static readonly uint CreateIrqchip = Io(0x60);
    public static readonly uint IrqLine = Iow(0x61, 8);
    public static readonly uint CreatePit2 = Iow(0x77, 64);
    public static readonly uint Irqfd = Iow(0x76, 32);
    public static readonly uint Ioeventfd = Iow(0x79, 64);
    // State save/restore (snapshots). linux/kvm.h really declares KVM_SET_IRQCHIP as _IOR.
    public static readonly uint GetIrqchip = Iowr(0x62, 520);
    public static readonly uint SetIrqchip = Ior(0x63, 520);
    public static readonly uint GetPit2 = Ior(0x9F, 112);
    public static readonly uint SetPit2 = Iow(0xA0, 112);
    public static readonly uint GetClock = Ior(0x7C, 48);
    public static readonly uint SetClock = Iow(0x7B, 48);

    // vCPU ioctls.
    public static readonly uint Run = Io(0x80);
    public static readonly uint GetRegs = Ior(0x81, 144);
    public static readonly uint SetRegs = Iow(0x82, 144);
    public static readonly uint GetSregs = Ior(0x83, 312);
    public static readonly uint SetSregs = Iow(0x84, 312);
    public static readonly uint GetMsrs = Iowr(0x88, 8);
    public static readonly uint SetMsrs = Iow(0x89, 8);
    public static readonly uint SetCpuid2 = Iow(0x90, 8);
    public static readonly uint GetFpu = Ior(0x8C, 416);
    public static readonly uint SetFpu = Iow(0x8D, 416);
    public static readonly uint GetMpState = Ior(0x98, 4);
    public static readonly uint SetMpState = Iow(0x99, 4);
    public static readonly uint GetDebugRegs = Ior(0xA1, 128);
    public static readonly uint SetDebugRegs = Iow(0xA2, 128);
    public static readonly uint GetXsave = Ior(0xA4, 4096);
    public static readonly uint SetXsave = Iow(0xA5, 4096);
    public static readonly uint GetXcrs = Ior(0xA6, 392);
    public static readonly uint SetXcrs = Iow(0xA7, 392);
    public static readonly uint GetLapic = Ior(0x8E, 1024);
    public static readonly uint SetLapic = Iow(0x8F, 1024);
    public static readonly uint GetVcpuEvents = Ior(0x9F, 64);
    public static readonly uint SetVcpuEvents = Iow(0xA0, 64);

    /// <summary>Names for error messages, so a failure says which ioctl failed.</summary>
    /// <summary>Every request above (the VMM's seccomp filter allows ioctl with these), KVM_RUN first: the filter tests in this order.</summary>
    public static IReadOnlyList<uint> All { get; } = [Run, GetApiVersion, CreateVm, CheckExtension, GetVcpuMmapSize, GetSupportedCpuid, GetMsrIndexList, CreateVcpu, SetUserMemoryRegion, SetTssAddr, SetIdentityMapAddr, CreateIrqchip, IrqLine, CreatePit2, Irqfd, Ioeventfd, GetIrqchip, SetIrqchip, GetPit2, SetPit2, GetClock, SetClock, GetRegs, SetRegs, GetSregs, SetSregs, GetMsrs, SetMsrs, SetCpuid2, GetFpu, SetFpu, GetMpState, SetMpState, GetDebugRegs, SetDebugRegs, GetXsave, SetXsave, GetXcrs, SetXcrs, GetLapic, SetLapic, GetVcpuEvents, SetVcpuEvents];

    public static string NameOf(uint request) => request switch
    {
        _ when request == GetApiVersion => "KVM_GET_API_VERSION",
        _ when request == CreateVm => "KVM_CREATE_VM",
        _ when request == CheckExtension => "KVM_CHECK_EXTENSION",
        _ when request == GetVcpuMmapSize => "KVM_GET_VCPU_MMAP_SIZE",
        _ when request == GetSupportedCpuid => "KVM_GET_SUPPORTED_CPUID",
        _ when request == GetMsrIndexList => "KVM_GET_MSR_INDEX_LIST",
        _ when request == GetIrqchip => "KVM_GET_IRQCHIP",
        _ when request == SetIrqchip => "KVM_SET_IRQCHIP",
        _ when request == GetPit2 => "KVM_GET_PIT2",
        _ when request == SetPit2 => "KVM_SET_PIT2",
        _ when request == GetClock => "KVM_GET_CLOCK",
        _ when request == SetClock => "KVM_SET_CLOCK",
        _ when request == GetMsrs => "KVM_GET_MSRS",
        _ when request == GetFpu => "KVM_GET_FPU",
        _ when request == GetMpState => "KVM_GET_MP_STATE",
        _ when request == SetMpState => "KVM_SET_MP_STATE",
        _ when request == GetDebugRegs => "KVM_GET_DEBUGREGS",
        _ when request == SetDebugRegs => "KVM_SET_DEBUGREGS",
        _ when request == GetXsave => "KVM_GET_XSAVE",
        _ when request == SetXsave => "KVM_SET_XSAVE",
        _ when request == GetXcrs => "KVM_GET_XCRS",
        _ when request == SetXcrs => "KVM_SET_XCRS",
        _ when request == CreateVcpu => "KVM_CREATE_VCPU",
        _ when request == SetUserMemoryRegion => "KVM_SET_USER_MEMORY_REGION",
        _ when request == SetTssAddr => "KVM_SET_TSS_ADDR",
        _ when request == SetIdentityMapAddr => "KVM_SET_IDENTITY_MAP_ADDR",
        _ when request == CreateIrqchip => "KVM_CREATE_IRQCHIP",
        _ when request == IrqLine => "KVM_IRQ_LINE",
        _ when request == CreatePit2 => "KVM_CREATE_PIT2",
        _ when request == Irqfd => "KVM_IRQFD",
        _ when request == Ioeventfd => "KVM_IOEVENTFD",
        _ when request == Run => "KVM_RUN",
        _ when request == GetRegs => "KVM_GET_REGS",
        _ when request == SetRegs => "KVM_SET_REGS",
        _ when request == GetSregs => "KVM_GET_SREGS",
        _ when request == SetSregs => "KVM_SET_SREGS",
        _ when request == SetMsrs => "KVM_SET_MSRS",
        _ when request == SetCpuid2 => "KVM_SET_CPUID2",
        _ when request == SetFpu => "KVM_SET_FPU",
        _ when request == GetLapic => "KVM_GET_LAPIC",
        _ when request == SetLapic => "KVM_SET_LAPIC",
        _ when request == GetVcpuEvents => "KVM_GET_VCPU_EVENTS",
        _ when request == SetVcpuEvents => "KVM_SET_VCPU_EVENTS",
        _ => $"ioctl 0x{request:X8}",
    };
}

/// <summary>KVM_CAP_* numbers we probe.</summary>
internal static class KvmCapability
{
    public const int Irqchip = 0;
    public const int UserMemory = 3;
    public const int SetTssAddr = 4;
    public const int Pit2 = 33;
    public const int ExtCpuid = 7;
    public const int VcpuEvents = 41;
    public const int NrVcpus = 9;
    public const int MaxVcpus = 66;
    public const int Irqfd = 32;
    public const int Ioeventfd = 36;
    public const int AdjustClock = 39;
    public const int PitState2 = 35;
    public const int DebugRegs = 50;
    public const int Xsave = 55;
    public const int Xcrs = 56;
}

/// <summary>kvm_run.exit_reason values (linux/kvm.h).</summary>
public enum KvmExitReason : uint
{
    Unknown = 0,
    Exception = 1,
    Io = 2,
    Hypercall = 3,
    Debug = 4,
    Hlt = 5,
    Mmio = 6,
    IrqWindowOpen = 7,
    Shutdown = 8,
    FailEntry = 9,
    Intr = 10,
    InternalError = 17,
    SystemEvent = 24,
}

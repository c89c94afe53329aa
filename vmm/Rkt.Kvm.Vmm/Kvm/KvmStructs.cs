using System.Runtime.InteropServices;

namespace Rkt.Kvm.Vmm.Kvm;

// Mirrors of the linux/kvm.h (x86) structures we exchange with KVM. Sizes are fixed by the ABI
// and checked by unit tests against the sizes encoded in the ioctl numbers.

[StructLayout(LayoutKind.Sequential)]
public struct KvmRegs
{
    public ulong Rax, Rbx, Rcx, Rdx, Rsi, Rdi, Rsp, Rbp;
    public ulong R8, R9, R10, R11, R12, R13, R14, R15;
    public ulong Rip, Rflags;
}

[StructLayout(LayoutKind.Explicit, Size = 24)]
public struct KvmSegment
{
    [FieldOffset(0)] public ulong Base;
    [FieldOffset(8)] public uint Limit;
    [FieldOffset(12)] public ushort Selector;
    [FieldOffset(14)] public byte Type;
    [FieldOffset(15)] public byte Present;
    [FieldOffset(16)] public byte Dpl;
    [FieldOffset(17)] public byte Db;
    [FieldOffset(18)] public byte S;
    [FieldOffset(19)] public byte L;
    [FieldOffset(20)] public byte G;
    [FieldOffset(21)] public byte Avl;
    [FieldOffset(22)] public byte Unusable;
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct KvmDtable
{
    [FieldOffset(0)] public ulong Base;
    [FieldOffset(8)] public ushort Limit;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmSregs
{
    public KvmSegment Cs, Ds, Es, Fs, Gs, Ss;
    public KvmSegment Tr, Ldt;
    public KvmDtable Gdt, Idt;
    public ulong Cr0, Cr2, Cr3, Cr4, Cr8;
    public ulong Efer;
    public ulong ApicBase;
    public fixed ulong InterruptBitmap[4];
}

[StructLayout(LayoutKind.Explicit, Size = 416)]
public unsafe struct KvmFpu
{
    [FieldOffset(0)] public fixed byte Fpr[128];
    [FieldOffset(128)] public ushort Fcw;
    [FieldOffset(130)] public ushort Fsw;
    [FieldOffset(132)] public byte Ftwx;
    [FieldOffset(134)] public ushort LastOpcode;
    [FieldOffset(136)] public ulong LastIp;
    [FieldOffset(144)] public ulong LastDp;
    [FieldOffset(152)] public fixed byte Xmm[256];
    [FieldOffset(408)] public uint Mxcsr;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmUserspaceMemoryRegion
{
    public uint Slot;
    public uint Flags;
    public ulong GuestPhysAddr;
    public ulong MemorySize;
    public ulong UserspaceAddr;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmIrqLevel
{
    public uint Irq;
    public uint Level;
}

/// <summary>struct kvm_irqfd (32 bytes): inject GSI <c>Gsi</c> whenever the eventfd is written.</summary>
[StructLayout(LayoutKind.Sequential, Size = 32)]
public struct KvmIrqfd
{
    public uint Fd;
    public uint Gsi;
    public uint Flags;
    public uint ResampleFd;
}

/// <summary>struct kvm_ioeventfd (64 bytes): signal the eventfd instead of exiting when the guest writes <c>Datamatch</c> at <c>Address</c>.</summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
public struct KvmIoeventfd
{
    public const uint FlagDatamatch = 1, FlagPio = 2, FlagDeassign = 4;
    public ulong Datamatch;
    public ulong Address;
    public uint Length;
    public int Fd;
    public uint Flags;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmCpuidEntry2
{
    public uint Function;
    public uint Index;
    public uint Flags;
    public uint Eax, Ebx, Ecx, Edx;
    private uint _padding0, _padding1, _padding2;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmMsrEntry
{
    public uint Index;
    private uint _reserved;
    public ulong Data;
}

[StructLayout(LayoutKind.Explicit, Size = 1024)]
public unsafe struct KvmLapicState
{
    [FieldOffset(0)] public fixed byte Regs[1024];
}

[StructLayout(LayoutKind.Explicit, Size = 64)]
public struct KvmVcpuEvents
{
    [FieldOffset(0)] public byte ExceptionInjected;
    [FieldOffset(1)] public byte ExceptionNr;
    [FieldOffset(2)] public byte ExceptionHasErrorCode;
    [FieldOffset(3)] public byte ExceptionPending;
    [FieldOffset(4)] public uint ExceptionErrorCode;
    [FieldOffset(20)] public uint Flags;
}

/// <summary>The fixed head of the shared kvm_run page, and the exit-specific union at offset 32.</summary>
[StructLayout(LayoutKind.Explicit, Size = 304)]
public unsafe struct KvmRun
{
    [FieldOffset(0)] public byte RequestInterruptWindow;
    [FieldOffset(1)] public byte ImmediateExit;
    [FieldOffset(8)] public KvmExitReason ExitReason;

    // exit_reason == Io
    [FieldOffset(32)] public byte IoDirection; // 0 = in, 1 = out
    [FieldOffset(33)] public byte IoSize;
    [FieldOffset(34)] public ushort IoPort;
    [FieldOffset(36)] public uint IoCount;
    [FieldOffset(40)] public ulong IoDataOffset; // from the start of kvm_run

    // exit_reason == Mmio
    [FieldOffset(32)] public ulong MmioPhysAddr;
    [FieldOffset(40)] public fixed byte MmioData[8];
    [FieldOffset(48)] public uint MmioLen;
    [FieldOffset(52)] public byte MmioIsWrite;

    // exit_reason == InternalError
    [FieldOffset(32)] public uint InternalSuberror;
    [FieldOffset(36)] public uint InternalNdata;
    [FieldOffset(40)] public fixed ulong InternalData[16];

    // exit_reason == FailEntry
    [FieldOffset(32)] public ulong FailEntryReason;

    // exit_reason == SystemEvent
    [FieldOffset(32)] public uint SystemEventType;
}

using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Kvm;
using S = Rkt.Kvm.Vmm.Host.Confinement.X64Syscalls;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>The threads that handle what the guest writes, each with a filter of its own on top of the process's.</summary>
public enum VmmThreadClass
{
    /// <summary>Runs KVM_RUN and the port and MMIO exits: the UART, i8042, CMOS, boot timer and the transports' registers.</summary>
    Vcpu,
    /// <summary>The event loop: every virtio queue, vsock's host sockets, taps, the control socket and snapshots.</summary>
    Devices,
    /// <summary>Serves 9p requests on the exports, as the guest's root.</summary>
    NinePWorker,
}

/// <summary>
/// A second seccomp filter per thread class, stacked on <see cref="VmmSyscallPolicy"/> (the kernel
/// runs both and the stricter answer wins), so that a thread that parses guest input can make only
/// the calls its class makes. The classes keep every call the .NET runtime may make on any thread
/// (memory, threads and signals for the GC, time, facts, I/O on open descriptors; found by tracing
/// the VM test suite with these filters in log mode); what differs is what reaches beyond the
/// process: a vCPU thread opens no file, makes or uses no socket, and may issue only the vCPU's
/// own ioctls; a 9p worker makes or uses no socket, issues no ioctl and runs no event loop; the
/// device thread changes no file by name (that is the 9p workers' job).
///
/// One address space is shared by all threads, so this narrows what a compromised thread can do
/// by itself rather than walling it off (it could corrupt another thread's memory); the process
/// filter, the jail and the drop to the pod's user are the walls. Firecracker does the same.
/// </summary>
public static class ThreadSyscallPolicy
{
    private static readonly int[] s_common =
    [
        .. VmmSyscallPolicy.Memory, .. VmmSyscallPolicy.ThreadsAndSignals, .. VmmSyscallPolicy.Time,
        .. VmmSyscallPolicy.ProcessFacts, .. VmmSyscallPolicy.OpenFileIo,
    ];

    /// <summary>What KVM_RUN's exits need: the run itself, the emulated int3 and fwait (registers and
    /// events), the crash report (sregs), and the UART's interrupt when irqfds are off.</summary>
    private static readonly uint[] s_vcpuIoctls =
        [KvmIoctl.Run, KvmIoctl.GetRegs, KvmIoctl.SetRegs, KvmIoctl.GetSregs, KvmIoctl.GetVcpuEvents, KvmIoctl.SetVcpuEvents, KvmIoctl.IrqLine];

    /// <summary>The 9p server's file calls that change or make entries by name, which no other thread needs.</summary>
    private static readonly int[] s_entryChanges =
    [
        S.mkdirat, S.mkdir, S.linkat, S.link, S.symlinkat, S.symlink, S.fchmodat, S.chmod, S.fchownat, S.fchown, S.fchmod,
        S.mknodat, S.utimensat, S.truncate, S.setxattr, S.lsetxattr, S.fsetxattr, S.removexattr, S.lremovexattr, S.fremovexattr,
    ];

    public static IReadOnlyList<int> Allowed(VmmThreadClass threadClass) => threadClass switch
    {
        VmmThreadClass.Vcpu => s_common,
        VmmThreadClass.Devices =>
        [
            .. s_common, .. VmmSyscallPolicy.EventLoops, .. VmmSyscallPolicy.WholeFiles, .. VmmSyscallPolicy.UnixSockets,
            .. VmmSyscallPolicy.FilesByName.Except(s_entryChanges),
        ],
        VmmThreadClass.NinePWorker => [.. s_common, .. VmmSyscallPolicy.WholeFiles, .. VmmSyscallPolicy.FilesByName],
        _ => throw new ArgumentOutOfRangeException(nameof(threadClass)),
    };

    public static IReadOnlyList<ArgumentRule> Rules(VmmThreadClass threadClass)
    {
        List<ArgumentRule> rules =
        [
            VmmSyscallPolicy.NeverExecutableMmap, VmmSyscallPolicy.NeverExecutableMprotect,
            VmmSyscallPolicy.ThreadNamesAndFacts, VmmSyscallPolicy.OwnLimitsOnly,
        ];
        switch (threadClass)
        {
            case VmmThreadClass.Vcpu:
                rules.Add(new(S.ioctl, 1, [.. s_vcpuIoctls, .. VmmSyscallPolicy.TerminalIoctls]));
                break;
            case VmmThreadClass.Devices:
                // Snapshots read every vCPU's and the VM's state from here; taps follow the guest's offloads.
                rules.Add(VmmSyscallPolicy.AllIoctls);
                rules.Add(VmmSyscallPolicy.UnixSocketOnly);
                rules.Add(VmmSyscallPolicy.UnixSocketPairOnly);
                break;
            case VmmThreadClass.NinePWorker:
                break;
        }
        return rules;
    }

    public static BpfInstruction[] Build(VmmThreadClass threadClass, uint defaultAction) =>
        SeccompProgram.Build(Allowed(threadClass), Rules(threadClass), defaultAction);
}

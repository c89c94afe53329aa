namespace Rkt.Kvm.Vmm;

/// <summary>How a VM ended; the numeric value is the VMM process's exit status.</summary>
public enum VmExitStatus
{
    /// <summary>The guest reset or powered the machine off (a clean `reboot`).</summary>
    GuestShutdown = 0,
    /// <summary>The VMM itself failed: bad input, a KVM error, an internal error.</summary>
    VmmError = 1,
    /// <summary>The guest kernel panicked.</summary>
    GuestPanic = 2,
    /// <summary>The guest crashed without a panic: triple fault, an instruction KVM cannot emulate, a failed VM entry.</summary>
    GuestCrash = 3,
    /// <summary>The process that owns the VM (<c>--owner-pid</c>) exited, so the VM was ended.</summary>
    OwnerGone = 4,
}

public sealed record VmExitResult(VmExitStatus Status, string Reason);

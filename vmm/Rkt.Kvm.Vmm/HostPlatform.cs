namespace Rkt.Kvm.Vmm;

/// <summary>
/// Facts about the host's KVM that change how we must boot the guest. On a PVM-based nested KVM
/// (module kvm_pvm loaded) the in-kernel instruction emulator lacks some instructions and is slow
/// at byte-wise string ops, so the guest must not use them; see shared/PLATFORM.md §4.
/// </summary>
public static class HostPlatform
{
    public const string PvmModulePath = "/sys/module/kvm_pvm";

    /// <summary>Kernel options a PVM host needs: each hides an instruction the host cannot emulate, or a slow one.</summary>
    public const string PvmGuestOptions = "noxsave clearcpuid=erms,fsrm,cx16,smap,popcnt,rdrand,rdseed,fsgsbase,invpcid,pcid";

    public static bool IsPvmHost() => Directory.Exists(PvmModulePath);
}

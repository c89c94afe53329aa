namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>
/// Everything KVM holds for one vCPU, as the opaque structures its GET ioctls return: what a
/// snapshot must carry so the vCPU continues exactly where it stopped. Optional parts are null
/// where the host's KVM lacks the capability (XSAVE falls back to the legacy FPU area).
/// </summary>
public sealed record KvmVcpuState
{
    public const int MpStateSize = 4, RegsSize = 144, SregsSize = 312, FpuSize = 416, XsaveSize = 4096, XcrsSize = 392,
        DebugRegsSize = 128, LapicSize = 1024, EventsSize = 64;

    public required byte[] MpState { get; init; }
    public required byte[] Regs { get; init; }
    public required byte[] Sregs { get; init; }
    /// <summary>XSAVE area where KVM offers KVM_CAP_XSAVE, else null and <see cref="Fpu"/> is set.</summary>
    public byte[]? Xsave { get; init; }
    public byte[]? Fpu { get; init; }
    public byte[]? Xcrs { get; init; }
    public byte[]? DebugRegs { get; init; }
    public required byte[] Lapic { get; init; }
    public required KvmMsrEntry[] Msrs { get; init; }
    public required byte[] Events { get; init; }

    /// <summary>What this host's KVM can save; probed once per VM.</summary>
    public sealed record Capabilities(bool Xsave, bool Xcrs, bool DebugRegs, uint[] MsrIndices)
    {
        public static Capabilities Probe(KvmSystem kvm) => new(
            kvm.HasCapability(KvmCapability.Xsave), kvm.HasCapability(KvmCapability.Xcrs), kvm.HasCapability(KvmCapability.DebugRegs),
            kvm.GetMsrIndexList());
    }

    /// <summary>
    /// Reads the state of a vCPU that is out of KVM_RUN with no I/O left to complete (the caller
    /// ran it once with immediate_exit set). MSRs KVM lists but refuses to read are left out.
    /// </summary>
    public static KvmVcpuState Capture(KvmVcpu vcpu, Capabilities caps) => new()
    {
        MpState = vcpu.GetState(KvmIoctl.GetMpState, MpStateSize),
        Regs = vcpu.GetState(KvmIoctl.GetRegs, RegsSize),
        Sregs = vcpu.GetState(KvmIoctl.GetSregs, SregsSize),
        Xsave = caps.Xsave ? vcpu.GetState(KvmIoctl.GetXsave, XsaveSize) : null,
        Fpu = caps.Xsave ? null : vcpu.GetState(KvmIoctl.GetFpu, FpuSize),
        Xcrs = caps.Xcrs ? vcpu.GetState(KvmIoctl.GetXcrs, XcrsSize) : null,
        DebugRegs = caps.DebugRegs ? vcpu.GetState(KvmIoctl.GetDebugRegs, DebugRegsSize) : null,
        Lapic = vcpu.GetState(KvmIoctl.GetLapic, LapicSize),
        Msrs = ReadMsrs(vcpu, caps.MsrIndices),
        Events = vcpu.GetState(KvmIoctl.GetVcpuEvents, EventsSize),
    };

    private static KvmMsrEntry[] ReadMsrs(KvmVcpu vcpu, uint[] indices)
    {
        var result = new List<KvmMsrEntry>(indices.Length);
        int start = 0;
        while (start < indices.Length)
        {
            var batch = indices.AsSpan(start).ToArray().Select(i => new KvmMsrEntry { Index = i }).ToArray();
            int read = vcpu.GetMsrs(batch);
            result.AddRange(batch.AsSpan(0, read).ToArray());
            // KVM stops at the first MSR it cannot read: skip that one and go on.
            start += read + 1;
        }
        return result.ToArray();
    }

    /// <summary>
    /// Writes the state into a fresh vCPU (CPUID already set), in the order KVM needs: MP state and
    /// registers first, the LAPIC before the MSRs (TSC deadline), pending events last.
    /// </summary>
    public void Apply(KvmVcpu vcpu)
    {
        vcpu.SetState(KvmIoctl.SetMpState, MpState);
        vcpu.SetState(KvmIoctl.SetRegs, Regs);
        vcpu.SetState(KvmIoctl.SetSregs, Sregs);
        if (Xsave is not null) vcpu.SetState(KvmIoctl.SetXsave, Xsave);
        if (Fpu is not null) vcpu.SetState(KvmIoctl.SetFpu, Fpu);
        if (Xcrs is not null) vcpu.SetState(KvmIoctl.SetXcrs, Xcrs);
        if (DebugRegs is not null) vcpu.SetState(KvmIoctl.SetDebugRegs, DebugRegs);
        vcpu.SetState(KvmIoctl.SetLapic, Lapic);
        int written = vcpu.SetMsrs(Msrs);
        if (written != Msrs.Length)
            throw new KvmException($"KVM refused MSR 0x{Msrs[written].Index:X} (value 0x{Msrs[written].Data:X}) while restoring vCPU {vcpu.Id}.");
        vcpu.SetState(KvmIoctl.SetVcpuEvents, Events);
    }
}

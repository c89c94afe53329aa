namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>
/// The VM-wide state KVM holds outside the vCPUs: the two 8259 PICs, the IOAPIC, the PIT and the
/// kvm-clock. Opaque structures, as KVM returns them.
/// </summary>
public sealed record KvmVmState
{
    public const int IrqchipSize = 520, Pit2Size = 112, ClockSize = 48;
    /// <summary>kvm_irqchip.chip_id values: PIC master, PIC slave, IOAPIC.</summary>
    public static readonly uint[] IrqchipIds = [0, 1, 2];

    public required byte[][] Irqchips { get; init; }
    public required byte[] Pit { get; init; }
    public required byte[] Clock { get; init; }

    public static KvmVmState Capture(KvmVm vm) => new()
    {
        Irqchips = IrqchipIds.Select(id => vm.GetState(KvmIoctl.GetIrqchip, IrqchipSize, BitConverter.GetBytes(id))).ToArray(),
        Pit = vm.GetState(KvmIoctl.GetPit2, Pit2Size),
        Clock = vm.GetState(KvmIoctl.GetClock, ClockSize),
    };

    /// <summary>
    /// Restores into a VM that has its irqchip and PIT created. The clock is set to the value it had
    /// at the snapshot with no flags, so guest time continues from there (no jump for the time the
    /// template sat on disk); the agent steps the wall clock after restore.
    /// </summary>
    public void Apply(KvmVm vm)
    {
        vm.SetState(KvmIoctl.SetPit2, Pit);
        var clock = (byte[])Clock.Clone();
        Array.Clear(clock, 8, ClockSize - 8); // flags, realtime, host_tsc: only the clock value is set
        vm.SetState(KvmIoctl.SetClock, clock);
        foreach (var chip in Irqchips) vm.SetState(KvmIoctl.SetIrqchip, chip);
    }
}

namespace Rkt.Kvm.Vmm;

public enum PvmMode
{
    /// <summary>Detect a PVM host and add its guest options only there.</summary>
    Auto,
    On,
    Off,
}

/// <summary>Everything needed to build and boot one VM.</summary>
public sealed record MachineConfig
{
    public const int MaxCpus = 8;
    public const ulong DefaultMemoryMiB = 128;

    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    /// <summary>Appended after the VMM's own options, so it can override them.</summary>
    public string? ExtraCmdline { get; init; }
    public ulong MemoryMiB { get; init; } = DefaultMemoryMiB;
    public int Cpus { get; init; } = 1;
    public PvmMode Pvm { get; init; } = PvmMode.Auto;
    public string KvmDevicePath { get; init; } = Kvm.KvmSystem.DefaultDevicePath;
    /// <summary>The hybrid vsock Unix socket (shared/VSOCK.md); null for a VM without vsock.</summary>
    public string? VsockSocketPath { get; init; }
    public ulong GuestCid { get; init; } = 3;
    /// <summary>Queue notifies through KVM's ioeventfd where offered; off: MMIO exits (for measuring).</summary>
    public bool UseIoeventfd { get; init; } = true;
    /// <summary>Interrupts through KVM's irqfd where offered; off: KVM_IRQ_LINE from the device thread.</summary>
    public bool UseIrqfd { get; init; } = true;

    /// <summary>Checks what can be checked without touching the host; throws <see cref="ArgumentException"/> with a one-line reason.</summary>
    public void Validate()
    {
        if (Cpus < 1 || Cpus > MaxCpus) throw new ArgumentException($"--cpus must be between 1 and {MaxCpus}, not {Cpus}.");
        ulong bytes = MemoryMiB << 20;
        if (MemoryMiB == 0 || bytes < Memory.MemoryLayout.MinimumMemory || bytes > Memory.MemoryLayout.MaximumMemory)
            throw new ArgumentException(
                $"--memory must be between {Memory.MemoryLayout.MinimumMemory >> 20} and {Memory.MemoryLayout.MaximumMemory >> 20} MiB, not {MemoryMiB}.");
        if (string.IsNullOrEmpty(KernelPath)) throw new ArgumentException("--kernel is required.");
        if (GuestCid < 3 || GuestCid >= uint.MaxValue) throw new ArgumentException($"--vsock-cid must be between 3 and {uint.MaxValue - 1}, not {GuestCid}.");
        if (VsockSocketPath is { } path)
        {
            if (System.Text.Encoding.UTF8.GetByteCount(path) + 12 > 107) // room for "_<port>" on guest-initiated connections
                throw new ArgumentException($"--vsock path {path} is too long for a Unix socket address (at most 95 bytes).");
            string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
            if (!Directory.Exists(dir)) throw new ArgumentException($"--vsock: directory {dir} does not exist.");
        }
    }
}

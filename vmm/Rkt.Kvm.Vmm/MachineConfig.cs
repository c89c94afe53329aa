using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Vmm;

/// <summary>Everything needed to build and boot one VM.</summary>
public sealed record MachineConfig
{
    public const int MaxCpus = 8;
    /// <summary>NICs per VM: each takes a virtio-mmio slot and an IRQ line (Machine.NetSlot).</summary>
    public const int MaxNetDevices = 4;
    public const ulong DefaultMemoryMiB = VmmCommandLine.DefaultMemoryMiB;

    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    /// <summary>Appended after the VMM's own options, so it can override them.</summary>
    public string? ExtraCmdline { get; init; }
    public ulong MemoryMiB { get; init; } = DefaultMemoryMiB;
    public int Cpus { get; init; } = VmmCommandLine.DefaultCpus;
    public PvmMode Pvm { get; init; } = PvmMode.Auto;
    /// <summary>
    /// Lock the process down before the first vCPU runs (<see cref="Host.Confinement.LockDown"/>), with
    /// this action for system calls outside the filter. Null: no lock-down, for machines run inside
    /// another process (tests), which a filter would confine too. rkt-kvm-vmm always sets it.
    /// </summary>
    public SeccompAction? LockDown { get; init; }
    /// <summary>
    /// The process runs in its own namespaces (<see cref="Host.Confinement.VmmJail"/>: rkt-kvm-vmm
    /// re-executes itself into them) and, once set up, pivots into an empty root and drops the vCPU
    /// and device threads' capabilities. False for machines run inside another process (tests).
    /// </summary>
    public bool Jail { get; init; }
    /// <summary>
    /// Once set up, the process becomes this unprivileged user (<see cref="Host.Confinement.UserDrop"/>);
    /// only the 9p workers keep capabilities, file passthrough's. Null: it stays root.
    /// </summary>
    public VmmUser? User { get; init; }
    /// <summary>A fault the VMM injects into itself, for tests of its confinement (never set by stage1).</summary>
    public VmmTestFault TestFault { get; init; }
    public string KvmDevicePath { get; init; } = Kvm.KvmSystem.DefaultDevicePath;
    /// <summary>The hybrid vsock Unix socket (shared/VSOCK.md); null for a VM without vsock.</summary>
    public string? VsockSocketPath { get; init; }
    public ulong GuestCid { get; init; } = VmmCommandLine.DefaultGuestCid;
    /// <summary>Queue notifies through KVM's ioeventfd where offered; off: MMIO exits (for measuring).</summary>
    public bool UseIoeventfd { get; init; } = true;
    /// <summary>Interrupts through KVM's irqfd where offered; off: KVM_IRQ_LINE from the device thread.</summary>
    public bool UseIrqfd { get; init; } = true;

    /// <summary>The process whose exit ends the VM (it must be the VMM's parent); null: none.</summary>
    public int? OwnerPid { get; init; }
    /// <summary>An inherited pidfd of the process whose exit ends the VM (the way to name it from a PID namespace of our own); null: none.</summary>
    public int? OwnerPidfd { get; init; }

    /// <summary>The VMM control socket (docs/CONTROL.md); null for none. Implies the 9p device.</summary>
    public string? ControlSocketPath { get; init; }
    /// <summary>Exports served from the start; more can be added through the control socket.</summary>
    public IReadOnlyList<P9ExportSpec> P9Exports { get; init; } = [];
    /// <summary>The 9p device is present whenever there is a control socket or an export.</summary>
    public bool HasP9 => ControlSocketPath is not null || P9Exports.Count > 0;

    /// <summary>NICs (virtio-net over taps), in guest order: the first is eth0.</summary>
    public IReadOnlyList<NetDeviceSpec> NetDevices { get; init; } = [];

    /// <summary>
    /// A snapshot file to continue from instead of booting the kernel (its kernel, initrd, RAM,
    /// vCPUs and devices must be this configuration's; <see cref="Snapshot.SnapshotCompatibility"/>).
    /// </summary>
    public string? RestorePath { get; init; }

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
        if (ControlSocketPath is { } control)
        {
            if (System.Text.Encoding.UTF8.GetByteCount(control) > 107) throw new ArgumentException($"--control path {control} is too long for a Unix socket address (at most 107 bytes).");
            string dir = Path.GetDirectoryName(Path.GetFullPath(control))!;
            if (!Directory.Exists(dir)) throw new ArgumentException($"--control: directory {dir} does not exist.");
        }
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in P9Exports)
        {
            Devices.Virtio9p.NineP.P9Export.ValidateName(e.Name);
            if (!names.Add(e.Name)) throw new ArgumentException($"--9p-export {e.Name} is given twice.");
            if (!Path.IsPathFullyQualified(e.Path) || !Directory.Exists(e.Path)) throw new ArgumentException($"--9p-export {e.Name}: {e.Path} is not an absolute path to a directory.");
        }
        ValidateNetDevices();
        if (OwnerPid is not null && OwnerPidfd is not null) throw new ArgumentException("--owner-pid and --owner-pidfd name the same owner twice: give one.");
        if (OwnerPidfd is < 3) throw new ArgumentException($"--owner-pidfd {OwnerPidfd} is standard input, output or error, not a pidfd.");
    }

    private void ValidateNetDevices()
    {
        if (NetDevices.Count > MaxNetDevices) throw new ArgumentException($"--net is given {NetDevices.Count} times; a VM has at most {MaxNetDevices} NICs.");
        var taps = new HashSet<(string?, string)>();
        var fds = new HashSet<int>();
        var macs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var nic in NetDevices)
        {
            string arg = $"--net {nic.ToArgument()}";
            if (nic.Tap is { } tap)
            {
                if (Devices.VirtioNet.TapDevice.InvalidNameReason(tap) is { } why) throw new ArgumentException($"{arg}: the tap name {why}.");
                if (nic.Netns is { } netns && !File.Exists(netns)) throw new ArgumentException($"{arg}: the network namespace {netns} does not exist.");
                if (!taps.Add((nic.Netns, tap))) throw new ArgumentException($"{arg}: tap {tap} is given twice.");
            }
            else if (nic.Fd is { } fd)
            {
                if (fd < 3) throw new ArgumentException($"{arg}: fd {fd} is standard input, output or error, not a tap.");
                if (!fds.Add(fd)) throw new ArgumentException($"{arg}: fd {fd} is given twice.");
            }
            else if (!nic.Isolated) throw new ArgumentException($"{arg}: needs tap=, fd= or isolated.");
            if (nic.Mac is { } mac)
            {
                var bytes = NetDeviceSpec.ParseMac(mac) ?? throw new ArgumentException($"{arg}: {mac} is not a MAC address.");
                if (Devices.VirtioNet.VirtioNetDevice.InvalidMacReason(bytes) is { } why) throw new ArgumentException($"{arg}: the MAC address {why}.");
                if (!macs.Add(NetDeviceSpec.FormatMac(bytes))) throw new ArgumentException($"{arg}: MAC {mac} is given to two NICs.");
            }
            if (nic.Mtu is { } mtu && (mtu < Devices.VirtioNet.VirtioNetDevice.MinMtu || mtu > Devices.VirtioNet.VirtioNetDevice.MaxMtu))
                throw new ArgumentException($"{arg}: the MTU must be between {Devices.VirtioNet.VirtioNetDevice.MinMtu} and {Devices.VirtioNet.VirtioNetDevice.MaxMtu}, not {mtu}.");
        }
    }
}

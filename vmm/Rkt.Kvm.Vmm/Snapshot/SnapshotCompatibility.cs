namespace Rkt.Kvm.Vmm.Snapshot;

/// <summary>
/// Whether a snapshot can become the VM a configuration asks for: the same VMM build (device
/// state formats), kernel and initrd (by content), RAM, vCPUs and device set (the guest's command
/// line, in its RAM, names the virtio devices it probed).
/// </summary>
public static class SnapshotCompatibility
{
    public static void Check(string path, SnapshotHeader header, MachineConfig config)
    {
        string Refuse(string why) => throw new SnapshotException($"The snapshot {path} cannot be restored here: {why}.");
        if (header.VmmBuild != SnapshotFile.VmmBuild()) Refuse("it was written by another build of the VMM");
        if (header.MemoryMiB != config.MemoryMiB) Refuse($"it has {header.MemoryMiB} MiB of RAM, this VM {config.MemoryMiB} MiB");
        if (header.Cpus != config.Cpus) Refuse($"it has {header.Cpus} vCPUs, this VM {config.Cpus}");
        if (header.Vsock != config.VsockSocketPath is not null) Refuse(header.Vsock ? "it has a vsock device and this VM none" : "it has no vsock device and this VM has one");
        if (header.GuestCid != config.GuestCid) Refuse($"its guest CID is {header.GuestCid}, this VM's {config.GuestCid}");
        if (header.P9 != config.HasP9) Refuse(header.P9 ? "it has a 9p device and this VM none" : "it has no 9p device and this VM has one");
        if (header.Nics != config.NetDevices.Count) Refuse($"it has {header.Nics} NICs, this VM {config.NetDevices.Count}");
        var expected = Memory.MemoryLayout.RamRanges(config.MemoryMiB << 20);
        if (header.Regions.Count != expected.Count || header.Regions.Zip(expected).Any(p => p.First.GuestAddress != p.Second.GuestAddress || p.First.Size != p.Second.Size))
            Refuse("its RAM layout is not this VMM's");
        var kernel = SnapshotFile.Describe(config.KernelPath);
        if (kernel.Sha256 != header.Kernel.Sha256) Refuse($"it was made from another kernel ({header.Kernel.Path}, {header.Kernel.Size} bytes, not {kernel.Path}, {kernel.Size} bytes)");
        if (config.InitrdPath is null != header.Initrd is null) Refuse(header.Initrd is null ? "it was made without an initrd" : "it was made with an initrd and this VM has none");
        if (config.InitrdPath is { } initrdPath && SnapshotFile.Describe(initrdPath).Sha256 != header.Initrd!.Sha256)
            Refuse($"it was made from another initrd ({header.Initrd.Path})");
    }
}

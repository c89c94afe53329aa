using Rkt.Kvm.Vmm.Memory;
using Rkt.Kvm.Vmm.Snapshot;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>A snapshot only becomes the VM a configuration describes: same VMM build, kernel and initrd content, RAM, vCPUs and devices.</summary>
public sealed class SnapshotCompatibilityTests : IDisposable
{
    private const string SnapshotPath = "/var/lib/templates/t1.snapshot";
    private readonly TempDir _dir = new();
    private readonly MachineConfig _config;
    private readonly SnapshotHeader _header;

    public SnapshotCompatibilityTests()
    {
        File.WriteAllBytes(_dir.File("vmlinux"), "a kernel image"u8.ToArray());
        File.WriteAllBytes(_dir.File("initrd"), "an initrd"u8.ToArray());
        _config = new MachineConfig
        {
            KernelPath = _dir.File("vmlinux"),
            InitrdPath = _dir.File("initrd"),
            MemoryMiB = 4096, // two RAM regions: below the MMIO hole and above 4 GiB
            Cpus = 2,
            VsockSocketPath = _dir.File("vm.sock"),
            GuestCid = 7,
            ControlSocketPath = _dir.File("control.sock"),
            NetDevices = [new NetDeviceSpec { Isolated = true }],
        };
        long offset = 2 << 20;
        _header = new SnapshotHeader
        {
            FormatVersion = SnapshotFile.FormatVersion,
            VmmBuild = SnapshotFile.VmmBuild(),
            CreatedUtc = DateTime.UtcNow,
            Kernel = SnapshotFile.Describe(_config.KernelPath),
            Initrd = SnapshotFile.Describe(_config.InitrdPath),
            MemoryMiB = 4096,
            Cpus = 2,
            Cmdline = "console=ttyS0",
            Vsock = true,
            GuestCid = 7,
            P9 = true,
            Nics = 1,
            StateLength = 1000,
            Regions = MemoryLayout.RamRanges(4096UL << 20).Select(r => { var region = new SnapshotRegion(r.GuestAddress, r.Size, offset); offset += (long)r.Size; return region; }).ToList(),
            MemoryBytesWritten = 0,
        };
    }

    public void Dispose() => _dir.Dispose();

    private void Refused(SnapshotHeader header, MachineConfig config, string difference)
    {
        var e = Assert.Throws<SnapshotException>(() => SnapshotCompatibility.Check(SnapshotPath, header, config));
        Assert.Contains(SnapshotPath, e.Message);
        Assert.Contains(difference, e.Message);
    }

    [Fact]
    public void A_snapshot_of_this_configuration_passes() => SnapshotCompatibility.Check(SnapshotPath, _header, _config);

    [Fact]
    public void The_kernel_and_initrd_may_move_if_their_content_is_the_same()
    {
        File.Copy(_config.KernelPath, _dir.File("vmlinux-copy"));
        File.Copy(_config.InitrdPath!, _dir.File("initrd-copy"));
        SnapshotCompatibility.Check(SnapshotPath, _header, _config with { KernelPath = _dir.File("vmlinux-copy"), InitrdPath = _dir.File("initrd-copy") });
    }

    [Fact]
    public void Another_memory_size_is_refused() => Refused(_header, _config with { MemoryMiB = 2048 }, "it has 4096 MiB of RAM, this VM 2048 MiB");

    [Fact]
    public void Another_vcpu_count_is_refused() => Refused(_header, _config with { Cpus = 1 }, "it has 2 vCPUs, this VM 1");

    [Fact]
    public void A_vsock_device_missing_here_is_refused() => Refused(_header, _config with { VsockSocketPath = null }, "it has a vsock device and this VM none");

    [Fact]
    public void A_vsock_device_only_here_is_refused() => Refused(_header with { Vsock = false }, _config, "it has no vsock device and this VM has one");

    [Fact]
    public void Another_guest_cid_is_refused() => Refused(_header, _config with { GuestCid = 9 }, "its guest CID is 7, this VM's 9");

    [Fact]
    public void A_9p_device_missing_here_is_refused() => Refused(_header, _config with { ControlSocketPath = null }, "it has a 9p device and this VM none");

    [Fact]
    public void A_9p_device_only_here_is_refused() => Refused(_header with { P9 = false }, _config, "it has no 9p device and this VM has one");

    [Fact]
    public void Another_nic_count_is_refused() =>
        Refused(_header, _config with { NetDevices = [new NetDeviceSpec { Isolated = true }, new NetDeviceSpec { Tap = "tap1" }] }, "it has 1 NICs, this VM 2");

    [Fact]
    public void Another_kernel_at_the_same_path_is_refused()
    {
        File.WriteAllBytes(_config.KernelPath, "a rebuilt kernel image"u8.ToArray());
        Refused(_header, _config, "another kernel");
    }

    [Fact]
    public void Another_initrd_at_the_same_path_is_refused()
    {
        File.WriteAllBytes(_config.InitrdPath!, "a rebuilt initrd"u8.ToArray());
        Refused(_header, _config, "another initrd");
    }

    [Fact]
    public void An_initrd_missing_here_is_refused() => Refused(_header, _config with { InitrdPath = null }, "it was made with an initrd and this VM has none");

    [Fact]
    public void An_initrd_only_here_is_refused() => Refused(_header with { Initrd = null }, _config, "it was made without an initrd");

    [Fact]
    public void Another_vmm_build_is_refused() => Refused(_header with { VmmBuild = new string('0', 64) }, _config, "another build of the VMM");

    [Fact]
    public void Another_ram_layout_is_refused() =>
        Refused(_header with { Regions = [_header.Regions[0] with { Size = _header.Regions[0].Size - 4096 }, _header.Regions[1]] }, _config, "RAM layout");
}

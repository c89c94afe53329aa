using System.Text.Json.Serialization;

namespace Rkt.Kvm.Vmm.Snapshot;

/// <summary>A file a snapshot depends on, named by its content so a rebuilt kernel or initrd never matches an old template.</summary>
public sealed record SnapshotInput(string Path, long Size, string Sha256);

/// <summary>Where one guest RAM region lives in the snapshot file.</summary>
public sealed record SnapshotRegion(ulong GuestAddress, ulong Size, long FileOffset);

/// <summary>
/// What a snapshot was made from and how it is laid out: a restore refuses a file whose kernel,
/// initrd, VMM build, memory size, vCPU count or device set differ from the VM being built.
/// </summary>
public sealed record SnapshotHeader
{
    public required int FormatVersion { get; init; }
    /// <summary>SHA-256 (hex) of the VMM executable that wrote it: device state formats are that build's.</summary>
    public required string VmmBuild { get; init; }
    public required DateTime CreatedUtc { get; init; }
    public required SnapshotInput Kernel { get; init; }
    public SnapshotInput? Initrd { get; init; }
    public required ulong MemoryMiB { get; init; }
    public required int Cpus { get; init; }
    /// <summary>The kernel command line the guest booted with (it lives in guest memory; only informative here).</summary>
    public required string Cmdline { get; init; }
    public required bool Vsock { get; init; }
    public required ulong GuestCid { get; init; }
    public required bool P9 { get; init; }
    public required int Nics { get; init; }
    public required long StateLength { get; init; }
    public required List<SnapshotRegion> Regions { get; init; }
    /// <summary>Bytes of guest RAM that were not zero (the rest is a hole in the file).</summary>
    public required long MemoryBytesWritten { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(SnapshotHeader))]
internal sealed partial class SnapshotJsonContext : JsonSerializerContext;

namespace Rkt.Kvm.Vmm.Devices.Virtio;

/// <summary>
/// What a virtio device type provides to the MMIO transport: identity, features, config space,
/// and queue handling. The transport owns the register protocol, queue set-up and interrupts.
/// </summary>
public interface IVirtioDevice
{
    /// <summary>Virtio device ID (4 = entropy, 19 = vsock, ...).</summary>
    uint DeviceId { get; }
    /// <summary>Feature bits offered; the transport adds VIRTIO_F_VERSION_1.</summary>
    ulong Features { get; }
    /// <summary>Maximum size of each queue; the count is the number of queues.</summary>
    IReadOnlyList<ushort> QueueMaxSizes { get; }
    /// <summary>Device-specific configuration space (read-only here).</summary>
    ReadOnlySpan<byte> Config { get; }

    /// <summary>Called when the driver sets DRIVER_OK with the features it accepted.</summary>
    void Activate(ulong acceptedFeatures, IReadOnlyList<SplitQueue> queues, Action<int> signalUsed);

    /// <summary>The driver notified queue <paramref name="index"/>. Returns true when buffers were used.</summary>
    bool OnNotify(int index);

    /// <summary>The driver reset the device (status 0): drop all state.</summary>
    void Reset();

    /// <summary>
    /// Why the device cannot be snapshotted right now (requests in flight, chains it holds, host
    /// state a restored VM could not get back), or null when its queues and transport say it all.
    /// Asked on the device thread with the vCPUs paused.
    /// </summary>
    string? SnapshotBlocker => null;

    /// <summary>The VM was restored from a snapshot and the device re-activated with its queues: tell the driver what it must know (e.g. vsock's transport reset).</summary>
    void OnRestored() { }
}

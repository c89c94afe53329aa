namespace Rkt.Kvm.Vmm.Devices;

/// <summary>
/// Where device work runs. Virtio devices keep their state on one thread (the VMM's event loop),
/// so vCPU threads hand them work instead of touching device state themselves.
/// </summary>
public interface IDeviceExecutor
{
    /// <summary>Runs <paramref name="action"/> on the device thread and waits for it.</summary>
    void Invoke(Action action);

    /// <summary>Queues <paramref name="action"/> for the device thread and returns at once.</summary>
    void Post(Action action);
}

/// <summary>Runs device work on the caller's thread: for unit tests that drive a device directly.</summary>
public sealed class InlineExecutor : IDeviceExecutor
{
    public static readonly InlineExecutor Instance = new();
    public void Invoke(Action action) => action();
    public void Post(Action action) => action();
}

using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Memory;
using Serilog;

namespace Rkt.Kvm.Vmm.Devices.VirtioRng;

/// <summary>
/// virtio-rng (device 4): one request queue; every device-writable buffer the guest offers is
/// filled from the host's getrandom(2). Readable buffers make a chain invalid (the spec has none).
/// </summary>
public sealed class VirtioRng(GuestMemory memory, ILogger log) : IVirtioDevice
{
    public const uint Id = 4;
    public const ushort QueueSize = 256;
    /// <summary>At most this much entropy per request, so one guest request cannot make the VMM allocate without bound.</summary>
    public const int MaxRequestBytes = 64 * 1024;

    private SplitQueue? _queue;

    public uint DeviceId => Id;
    public ulong Features => 0;
    public IReadOnlyList<ushort> QueueMaxSizes { get; } = [QueueSize];
    public ReadOnlySpan<byte> Config => [];

    public void Activate(ulong acceptedFeatures, IReadOnlyList<SplitQueue> queues, Action<int> signalUsed) => _queue = queues[0];

    public void Reset() => _queue = null;

    public bool OnNotify(int index)
    {
        if (_queue is not { } queue) return false;
        bool used = false;
        while (queue.PopValid(why => { log.Warning("virtio-rng: refused a malformed request: {Reason}", why); used = true; }) is { } chain)
        {
            uint written = 0;
            if (chain.ReadableLength == 0)
            {
                foreach (var buffer in chain.Writable)
                {
                    int n = (int)Math.Min(buffer.Length, (uint)(MaxRequestBytes - (int)written));
                    if (n <= 0) break;
                    Rkt.Kvm.Posix.Entropy.Fill(memory.GetSpan(buffer.Address, n));
                    written += (uint)n;
                }
            }
            queue.PushUsed(chain.Head, written);
            used = true;
        }
        if (queue.Broken)
        {
            log.Warning("virtio-rng: the request queue is broken, ignoring it until the driver resets the device");
            _queue = null;
        }
        return used;
    }
}

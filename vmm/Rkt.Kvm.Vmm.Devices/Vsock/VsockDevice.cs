using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.Memory;
using Serilog;

namespace Rkt.Kvm.Vmm.Devices.Vsock;

/// <summary>
/// virtio-vsock (device 19) emulated in the VMM: the virtio side only. It takes the guest's
/// packets off the tx queue, validates every descriptor, address and length (the guest is
/// hostile: a bad packet is dropped or answered with RST, never an exception), and hands them to
/// <see cref="HybridVsockMuxer"/>, which bridges each connection to a host Unix socket (shared/VSOCK.md)
/// with a <see cref="VsockConnection"/> deciding the protocol. It fills the guest's receive
/// buffers with what the muxer has for it, and owns the event queue's transport reset. Runs
/// entirely on the VMM's event loop thread. No guest behaviour makes the VMM buffer without bound
/// (see <see cref="VsockConnection"/>).
/// </summary>
public sealed class VsockDevice : IVirtioDevice, IDisposable
{
    public const uint Id = 19;
    public const ushort QueueSize = 256;
    public const int RxQueue = 0, TxQueue = 1, EventQueue = 2;
    /// <summary>VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the guest drops every connection it had and re-reads its CID.</summary>
    public const uint EventTransportReset = 0;

    private readonly GuestMemory _memory;
    private readonly ILogger _log;
    private readonly byte[] _config = new byte[8];
    private readonly HybridVsockMuxer _muxer;
    /// <summary>A payload the driver split over several descriptors, gathered for the muxer (allocated the first time one comes).</summary>
    private byte[]? _splitPayload;
    private SplitQueue? _rx, _tx, _event;
    private Action<int>? _signalUsed;
    /// <summary>
    /// A transport reset was sent after a restore and the guest has not handled it yet: a
    /// connection made now could be reset along with the old ones (the driver handles events and
    /// packets in separate work items). The guest re-posts its event buffer once it has handled
    /// the event, and that notify ends this.
    /// </summary>
    private bool _resetPending;

    public ulong GuestCid { get; }
    public string SocketPath => _muxer.SocketPath;
    public int ConnectionCount => _muxer.ConnectionCount;
    /// <summary>Packets the guest sent that failed validation (for tests and the exit summary).</summary>
    public long MalformedPackets { get; private set; }

    public VsockDevice(GuestMemory memory, ulong guestCid, string socketPath, EventLoop loop, ILogger log)
    {
        if (guestCid < 3 || guestCid > uint.MaxValue - 1) throw new ArgumentException($"The guest CID must be between 3 and {uint.MaxValue - 1}, not {guestCid}.");
        _memory = memory;
        _log = log;
        GuestCid = guestCid;
        BinaryPrimitives.WriteUInt64LittleEndian(_config, guestCid);
        _muxer = new HybridVsockMuxer(guestCid, socketPath, loop, log, guestAcceptsConnections: () => _rx is not null && !_resetPending, packetsForGuest: ProcessRx);
    }

    public uint DeviceId => Id;
    public ulong Features => 0; // stream sockets only (no SEQPACKET)
    public IReadOnlyList<ushort> QueueMaxSizes { get; } = [QueueSize, QueueSize, QueueSize];
    public ReadOnlySpan<byte> Config => _config;

    public void Activate(ulong acceptedFeatures, IReadOnlyList<SplitQueue> queues, Action<int> signalUsed)
    {
        _rx = queues[RxQueue];
        _tx = queues[TxQueue];
        _event = queues[EventQueue];
        _signalUsed = signalUsed;
    }

    /// <summary>
    /// After a restore the guest still believes in the connections of the VM it was snapshotted
    /// from, whose host ends are gone: tell it to reset them (listening sockets survive), as the
    /// Linux driver expects after a migration.
    /// </summary>
    public void OnRestored()
    {
        if (_event is not { } events) return;
        if (TryPop(events, "event") is not { } chain)
        {
            _log.Warning("vsock: the guest posted no event buffer; it is not told that its connections were reset");
            return;
        }
        Span<byte> resetEvent = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(resetEvent, EventTransportReset);
        int written = chain.WriteTo(_memory, 0, resetEvent);
        events.PushUsed(chain.Head, (uint)written);
        _resetPending = true;
        _signalUsed?.Invoke(EventQueue);
    }

    /// <summary>The driver reset the device: every connection is gone (the guest dropped its side too).</summary>
    public void Reset()
    {
        _muxer.Reset();
        _rx = _tx = _event = null;
        _signalUsed = null;
        _resetPending = false;
    }

    public bool OnNotify(int index)
    {
        switch (index)
        {
            case TxQueue: return ProcessTx();
            case RxQueue: ProcessRx(); return false; // new receive buffers: deliver what waited for them
            default:
                // The event queue only matters for transport resets (restores): a new buffer means the last event was handled.
                _resetPending = false;
                return false;
        }
    }

    // ---------------------------------------------------------------- guest -> host (tx queue)

    private bool ProcessTx()
    {
        if (_tx is not { } tx) return false;
        bool used = false;
        Span<byte> headerBytes = stackalloc byte[VsockPacketHeader.Size];
        while (TryPop(tx, "tx") is { } chain)
        {
            HandleTxPacket(chain, headerBytes);
            tx.PushUsed(chain.Head, 0);
            used = true;
        }
        // Replies (RESPONSE, RST, credit) may now be due.
        ProcessRx();
        return used;
    }

    private void HandleTxPacket(DescriptorChain chain, Span<byte> headerBytes)
    {
        if (chain.ReadFrom(_memory, 0, headerBytes) < VsockPacketHeader.Size)
        {
            Malformed("a tx chain shorter than the 44-byte packet header");
            return;
        }
        var header = VsockPacketHeader.Read(headerBytes);
        if (header.ValidateFromGuest(GuestCid, chain.ReadableLength - VsockPacketHeader.Size) is { } problem)
        {
            Malformed(problem);
            // A bad packet that plausibly names one of our connections ends it, so neither side waits on it; an RST is never answered.
            if (header.SrcCid == GuestCid && header.DstCid == VsockPacketHeader.HostCid && header.Op != VsockOp.Rst)
                _muxer.RefuseGuestPacket(header.DstPort, header.SrcPort);
            return;
        }
        if (_muxer.OnGuestPacket(header, Payload(chain, header.Length)) is { } violation) Malformed(violation);
    }

    /// <summary>
    /// The packet's <paramref name="length"/> payload bytes (validated to be in the chain). Linux
    /// puts a payload in one buffer, which is forwarded straight from guest memory; one the driver
    /// split over several descriptors is gathered into a device buffer (at most 64 KiB, once).
    /// </summary>
    private ReadOnlySpan<byte> Payload(DescriptorChain chain, uint length)
    {
        if (length == 0) return default;
        foreach (var (address, n) in chain.ReadableSegments(VsockPacketHeader.Size, length))
        {
            if (n == length) return _memory.GetSpan(address, n);
            break;
        }
        _splitPayload ??= new byte[VsockPacketHeader.MaxPayload];
        int copied = chain.ReadFrom(_memory, VsockPacketHeader.Size, _splitPayload.AsSpan(0, (int)length));
        return _splitPayload.AsSpan(0, copied);
    }

    // ---------------------------------------------------------------- host -> guest (rx queue)

    /// <summary>Fills the guest's receive buffers with whatever is due, one packet per buffer, connections taking turns.</summary>
    private void ProcessRx()
    {
        if (_rx is not { } rx) return;
        bool used = false;
        Span<byte> headerBytes = stackalloc byte[VsockPacketHeader.Size];
        while (_muxer.HasPacketsForGuest)
        {
            if (TryPop(rx, "rx") is not { } chain) break; // wait for the guest to post buffers
            if (chain.ReadableLength != 0 || chain.WritableLength < VsockPacketHeader.Size)
            {
                Malformed("an rx buffer that is not a writable area of at least 44 bytes");
                rx.PushUsed(chain.Head, 0);
                used = true;
                continue;
            }
            // Host data is read straight into the first writable run after the header (the connection decides how much).
            var (address, room) = chain.FirstWritableSegment(VsockPacketHeader.Size);
            var payloadRoom = room == 0 ? Span<byte>.Empty : _memory.GetSpan(address, room);
            if (!_muxer.TryTakePacketForGuest(payloadRoom, out var packet))
            {
                rx.UndoPop();
                break;
            }
            packet.Write(headerBytes);
            chain.WriteTo(_memory, 0, headerBytes);
            rx.PushUsed(chain.Head, VsockPacketHeader.Size + packet.Length);
            used = true;
        }
        if (used) _signalUsed?.Invoke(RxQueue);
    }

    // ---------------------------------------------------------------- helpers

    private DescriptorChain? TryPop(SplitQueue queue, string name)
    {
        var chain = queue.PopValid(why => Malformed($"{name} queue: {why}"));
        if (queue.Broken && _rx is not null)
        {
            _log.Warning("vsock: the {Queue} queue is broken, ignoring the device until the driver resets it", name);
            _rx = _tx = null;
        }
        return chain;
    }

    private void Malformed(string why)
    {
        MalformedPackets++;
        _log.Debug("vsock: dropped a malformed packet: {Reason}", why);
    }

    public void Dispose() => _muxer.Dispose();
}

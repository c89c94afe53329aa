using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Client;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.Memory;
using Serilog;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Devices.VirtioNet;

/// <summary>
/// virtio-net (device 1), one rx/tx queue pair, backed by a <see cref="TapDevice"/>. Runs on the
/// VMM's event loop: the tap's fd is watched for readability only while the guest has receive
/// buffers (never a busy loop), and for writability only while a tx packet waits on a full tap.
/// Offers checksum and TSO offload both ways plus mergeable receive buffers, and tells the tap
/// what the guest accepted (TUNSETOFFLOAD) so the host kernel segments whatever the guest cannot
/// take. Each queue does at most <see cref="MaxPacketsPerWake"/> packets per wake-up, then yields
/// to the other fds of the loop. Guest chains are validated; a bad one is completed empty and
/// counted, never an exception. The per-packet path allocates nothing.
/// </summary>
public sealed class VirtioNetDevice : IVirtioDevice, IDisposable
{
    public const uint Id = 1;
    public const ushort QueueSize = 256;
    public const int RxQueue = 0, TxQueue = 1;
    /// <summary>Per queue and wake-up, so a flooding guest (or host) cannot starve the rest of the loop.</summary>
    public const int MaxPacketsPerWake = 256;
    public const int EthernetHeaderSize = 14;
    /// <summary>A 64 KiB GSO frame plus its Ethernet header.</summary>
    public const int MaxFrameLength = 65536 + EthernetHeaderSize;
    /// <summary>Header plus frame: 65562 bytes.</summary>
    public const int MaxPacketLength = VirtioNetHeader.Size + MaxFrameLength;
    /// <summary>IOV_MAX: a tx chain in more pieces than writev takes is refused.</summary>
    public const int MaxTxSegments = 1024;
    public const int MinMtu = 68, MaxMtu = 65535;

    // Feature bits, virtio 1.x §5.1.3.
    public const ulong FeatureCsum = 1UL << 0, FeatureGuestCsum = 1UL << 1, FeatureMtu = 1UL << 3, FeatureMac = 1UL << 5,
        FeatureGuestTso4 = 1UL << 7, FeatureGuestTso6 = 1UL << 8, FeatureGuestEcn = 1UL << 9, FeatureGuestUfo = 1UL << 10,
        FeatureHostTso4 = 1UL << 11, FeatureHostTso6 = 1UL << 12, FeatureHostEcn = 1UL << 13, FeatureHostUfo = 1UL << 14,
        FeatureMrgRxbuf = 1UL << 15, FeatureStatus = 1UL << 16;
    public const ushort StatusLinkUp = 1;

    /// <summary>
    /// What we offer: checksum and TCP segmentation offload in both directions (what Linux needs for
    /// speed), mergeable rx buffers, MAC and link status. No UFO (Linux stopped producing it), no
    /// control queue (so no runtime offload changes, promiscuous or VLAN filters: a tap needs none).
    /// </summary>
    public const ulong BaseFeatures = FeatureCsum | FeatureGuestCsum | FeatureGuestTso4 | FeatureGuestTso6 | FeatureGuestEcn
        | FeatureHostTso4 | FeatureHostTso6 | FeatureHostEcn | FeatureMrgRxbuf | FeatureMac | FeatureStatus | MmioTransport.FeatureIndirectDesc;

    private enum RxOutcome { Delivered, Dropped, NoBuffers }

    /// <summary>An rx chain taken off the ring and not yet used (reused: the buffers list is never reallocated).</summary>
    private sealed class RxChain
    {
        public readonly List<DescriptorBuffer> Buffers = new(8);
        public ushort Head;
        public long Writable;
    }

    private readonly GuestMemory _memory;
    private readonly TapDevice _tap;
    private readonly EventLoop _loop;
    private readonly ILogger _log;
    private readonly byte[] _config = new byte[12];
    private readonly ulong _tapToken;
    /// <summary>A tx burst over its budget signals this to continue after the other ready fds.</summary>
    private readonly EventFd _txResume;
    private readonly ulong _txResumeToken;
    private readonly Action<string> _onRxMalformed, _onTxMalformed;

    // tx: one packet at a time, gathered straight from guest memory.
    private readonly List<DescriptorBuffer> _txBuffers = new(32);
    private readonly IoVectors _txVectors = new(MaxTxSegments);
    private ushort _txHead;
    /// <summary>The tap said EAGAIN: <see cref="_txHead"/> and <see cref="_txVectors"/> hold the packet to retry when it is writable.</summary>
    private bool _txPending;

    // rx: a frame is read whole into a scratch buffer, then copied into as many chains as it needs.
    private readonly byte[] _rxFrame = GC.AllocateUninitializedArray<byte>(MaxPacketLength, pinned: true);
    /// <summary>Length of a frame read from the tap that waits for rx buffers (0: none).</summary>
    private int _rxFrameLength;
    private readonly RxChain[] _rxChains;
    private int _rxChainCount;
    private long _rxCapacity;
    /// <summary>The guest ran out of rx buffers: the tap is not watched until it posts more.</summary>
    private bool _rxStarved;

    private SplitQueue? _rx, _tx;
    private Action<int>? _signalUsed;
    private bool _mergeable, _guestCsum;
    private int _interest;
    private bool _tapGone;
    private long _rxCompletions, _txCompletions;

    public ulong Features { get; }
    public ReadOnlySpan<byte> Mac => _config.AsSpan(0, 6);
    public int? Mtu { get; }
    public string TapName => _tap.Name;
    /// <summary>The TUNSETOFFLOAD flags in force (for tests and logs).</summary>
    public uint TapOffloads { get; private set; }

    // Counters for tests and the exit summary.
    public long RxPackets { get; private set; }
    public long RxDropped { get; private set; }
    public long TxPackets { get; private set; }
    public long TxDropped { get; private set; }
    public long MalformedChains { get; private set; }
    /// <summary>Wake-ups by the tap's fd: stays flat while the guest has no rx buffers (no busy loop).</summary>
    public long TapEvents { get; private set; }
    /// <summary>Packets per queue per wake-up; lowered only by tests (the ring size caps a single pass anyway).</summary>
    internal int PacketBudget { get; init; } = MaxPacketsPerWake;

    /// <summary>Takes ownership of <paramref name="tap"/>.</summary>
    public VirtioNetDevice(GuestMemory memory, TapDevice tap, ReadOnlySpan<byte> mac, int? mtu, EventLoop loop, ILogger log)
    {
        if (InvalidMacReason(mac) is { } why) throw new ArgumentException($"The MAC address {NetDeviceSpec.FormatMac(mac)} {why}.");
        if (mtu is { } m && (m < MinMtu || m > MaxMtu)) throw new ArgumentException($"The MTU must be between {MinMtu} and {MaxMtu}, not {m}.");
        _memory = memory;
        _tap = tap;
        _loop = loop;
        _log = log;
        Mtu = mtu;
        Features = BaseFeatures | (mtu is null ? 0 : FeatureMtu);
        mac.CopyTo(_config);
        BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(6), StatusLinkUp);
        BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(8), 1); // max_virtqueue_pairs
        BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(10), (ushort)(mtu ?? 0));
        _rxChains = Enumerable.Range(0, QueueSize).Select(_ => new RxChain()).ToArray();
        _onRxMalformed = why => { _rxCompletions++; Malformed("rx", why); };
        _onTxMalformed = why => { _txCompletions++; Malformed("tx", why); };
        _txResume = new EventFd();
        try
        {
            _txResumeToken = loop.Add(_txResume.Handle, EPOLLIN, _ =>
            {
                _txResume.Drain();
                if (ProcessTx()) _signalUsed?.Invoke(TxQueue);
            });
            // Registered with no events (errors only) until the driver is up.
            _tapToken = loop.Add(tap.Handle, 0, OnTapEvent);
        }
        catch
        {
            _loop.Remove(_txResume.Handle, _txResumeToken);
            _txResume.Dispose();
            throw;
        }
    }

    public uint DeviceId => Id;
    public IReadOnlyList<ushort> QueueMaxSizes { get; } = [QueueSize, QueueSize];
    public ReadOnlySpan<byte> Config => _config;

    /// <summary>Why <paramref name="mac"/> cannot be a NIC's address (null when it can): six bytes, unicast, not all zero.</summary>
    public static string? InvalidMacReason(ReadOnlySpan<byte> mac)
    {
        if (mac.Length != 6) return "is not six bytes";
        if ((mac[0] & 1) != 0) return "is a multicast address";
        if (!mac.ContainsAnyExcept((byte)0)) return "is all zero";
        return null;
    }

    /// <summary>A random locally administered unicast address, 02:xx:xx:xx:xx:xx.</summary>
    public static byte[] RandomMac()
    {
        var mac = new byte[6];
        Rkt.Kvm.Posix.Entropy.Fill(mac.AsSpan(1));
        mac[0] = 0x02;
        return mac;
    }

    /// <summary>
    /// The TUNSETOFFLOAD flags for the features the driver accepted: the tap may hand us packets
    /// with a partial checksum only if the guest takes GUEST_CSUM, and GSO packets only of the
    /// kinds it takes (TSO needs the checksum offload too); everything else the host kernel finishes.
    /// </summary>
    public static uint TapOffloadsFor(ulong acceptedFeatures)
    {
        if ((acceptedFeatures & FeatureGuestCsum) == 0) return 0;
        uint flags = TapDevice.OffloadCsum;
        if ((acceptedFeatures & FeatureGuestTso4) != 0) flags |= TapDevice.OffloadTso4;
        if ((acceptedFeatures & FeatureGuestTso6) != 0) flags |= TapDevice.OffloadTso6;
        if ((acceptedFeatures & FeatureGuestEcn) != 0 && (flags & (TapDevice.OffloadTso4 | TapDevice.OffloadTso6)) != 0) flags |= TapDevice.OffloadTsoEcn;
        if ((acceptedFeatures & FeatureGuestUfo) != 0) flags |= TapDevice.OffloadUfo;
        return flags;
    }

    public void Activate(ulong acceptedFeatures, IReadOnlyList<SplitQueue> queues, Action<int> signalUsed)
    {
        ClearState();
        _rx = queues[RxQueue];
        _tx = queues[TxQueue];
        _signalUsed = signalUsed;
        _mergeable = (acceptedFeatures & FeatureMrgRxbuf) != 0;
        _guestCsum = (acceptedFeatures & FeatureGuestCsum) != 0;
        SetTapOffloads(TapOffloadsFor(acceptedFeatures));
        _log.Debug("virtio-net {Tap}: driver accepted features 0x{Features:X}; tap offloads 0x{Offloads:X}", _tap.Name, acceptedFeatures, TapOffloads);
        UpdateInterest();
    }

    /// <summary>A packet waiting for the tap or rx buffers taken for a frame would be lost in a snapshot.</summary>
    public string? SnapshotBlocker => _txPending || _rxChainCount > 0 || _rxFrameLength > 0 ? $"virtio-net {_tap.Name} holds packets in flight" : null;

    public void Reset()
    {
        ClearState();
        _rx = _tx = null;
        _signalUsed = null;
        SetTapOffloads(0);
        UpdateInterest();
    }

    private void ClearState()
    {
        _txPending = false;
        _rxFrameLength = 0;
        _rxChainCount = 0;
        _rxCapacity = 0;
        _rxStarved = false;
    }

    private void SetTapOffloads(uint flags)
    {
        if (_tapGone) return;
        int error = _tap.SetOffload(flags);
        // On failure the tap keeps what it had; at worst the host kernel segments more than needed.
        if (error != 0) _log.Warning("virtio-net {Tap}: TUNSETOFFLOAD 0x{Flags:X} failed (errno {Errno})", _tap.Name, flags, error);
        else TapOffloads = flags;
    }

    public bool OnNotify(int index)
    {
        switch (index)
        {
            case TxQueue: return ProcessTx();
            case RxQueue:
                // New buffers: deliver what waited for them and watch the tap again.
                if (_rxStarved)
                {
                    _rxStarved = false;
                    UpdateInterest();
                }
                return ProcessRx();
            default: return false;
        }
    }

    private void OnTapEvent(uint events)
    {
        TapEvents++;
        if ((events & (uint)(EPOLLERR | EPOLLHUP)) != 0)
        {
            TapLost("the tap reported an error or hang-up (deleted?)");
            return;
        }
        if ((events & (uint)EPOLLOUT) != 0 && ProcessTx()) _signalUsed?.Invoke(TxQueue);
        if ((events & (uint)EPOLLIN) != 0 && ProcessRx()) _signalUsed?.Invoke(RxQueue);
    }

    // ---------------------------------------------------------------- guest -> tap (tx queue)

    /// <summary>Writes up to <see cref="PacketBudget"/> packets to the tap; true when chains were completed.</summary>
    private bool ProcessTx()
    {
        if (_tx is not { } tx) return false;
        long before = _txCompletions;
        for (int budget = PacketBudget; budget > 0; budget--)
        {
            if (!_txPending)
            {
                if (!tx.PopValid(_txBuffers, out _txHead, _onTxMalformed))
                {
                    if (tx.Broken) QueueBroken("tx");
                    return _txCompletions != before;
                }
                if (GatherTx() is { } problem)
                {
                    Malformed("tx", problem);
                    CompleteTx(tx);
                    continue;
                }
            }
            if (_tapGone) TxDropped++;
            else
            {
                int n = _tap.Write(_txVectors);
                if (n == TapDevice.WouldBlock)
                {
                    // Kept, not dropped: a full tap is back-pressure, and TCP in the guest recovers
                    // faster from a delayed packet than from a lost one. The ring stalls meanwhile.
                    if (!_txPending)
                    {
                        _txPending = true;
                        UpdateInterest();
                    }
                    return _txCompletions != before;
                }
                if (n < 0)
                {
                    TxDropped++;
                    _log.Debug("virtio-net {Tap}: the tap refused a {Length}-byte packet (errno {Errno}); dropped", _tap.Name, _txVectors.TotalLength, _tap.LastError);
                }
                else TxPackets++;
            }
            if (_txPending)
            {
                _txPending = false;
                UpdateInterest();
            }
            CompleteTx(tx);
        }
        // Budget spent: come back after whatever else the loop has ready.
        _txResume.Signal();
        return _txCompletions != before;
    }

    private void CompleteTx(SplitQueue tx)
    {
        tx.PushUsed(_txHead, 0);
        _txCompletions++;
    }

    /// <summary>Builds the writev list for the chain in <see cref="_txBuffers"/>; returns what is wrong with it, or null.</summary>
    private string? GatherTx()
    {
        _txVectors.Clear();
        long total = 0;
        foreach (var buffer in _txBuffers)
        {
            if (buffer.DeviceWritable) return "a tx chain with a device-writable buffer";
            total += buffer.Length;
            if (total > MaxPacketLength) return "a tx packet longer than the 12-byte header plus 64 KiB + 14";
            if (!_txVectors.Add(_memory.GetSpan(buffer.Address, (int)buffer.Length))) return "a tx packet in more pieces than writev takes";
        }
        if (total < VirtioNetHeader.Size + EthernetHeaderSize) return "a tx packet shorter than the 12-byte header and an Ethernet header";
        return null;
    }

    // ---------------------------------------------------------------- tap -> guest (rx queue)

    /// <summary>Moves up to <see cref="PacketBudget"/> frames from the tap to the guest; true when chains were completed.</summary>
    private bool ProcessRx()
    {
        if (_rx is not { } rx || _tapGone) return false;
        long before = _rxCompletions;
        // Level-triggered: frames left over after the budget wake us again on the next loop turn.
        for (int budget = PacketBudget; budget > 0 && _rx is not null; budget--)
        {
            if (_rxFrameLength == 0)
            {
                int n = _tap.Read(_rxFrame);
                if (n == TapDevice.WouldBlock) break;
                if (n == TapDevice.Failed)
                {
                    TapLost($"reading the tap failed (errno {_tap.LastError})");
                    break;
                }
                // The tap reports a truncated frame with its full length.
                if (n < VirtioNetHeader.Size + EthernetHeaderSize || n > _rxFrame.Length)
                {
                    RxDropped++;
                    continue;
                }
                _rxFrameLength = n;
            }
            var outcome = DeliverFrame(rx);
            if (outcome == RxOutcome.NoBuffers)
            {
                // Keep the frame; the guest's next rx notify delivers it and re-arms the tap.
                if (_rx is not null)
                {
                    _rxStarved = true;
                    UpdateInterest();
                }
                break;
            }
            _rxFrameLength = 0;
            if (outcome == RxOutcome.Delivered) RxPackets++;
            else RxDropped++;
        }
        return _rxCompletions != before;
    }

    /// <summary>Copies the frame in <see cref="_rxFrame"/> into rx chains: as many as it needs with MRG_RXBUF, else exactly one.</summary>
    private RxOutcome DeliverFrame(SplitQueue rx)
    {
        int length = _rxFrameLength;
        int count;
        if (_mergeable)
        {
            while (_rxCapacity < length)
            {
                // We hold every chain the ring can have outstanding and it is not enough (tiny
                // buffers): waiting would wait forever, so the frame goes.
                if (_rxChainCount >= Math.Min(rx.Size, _rxChains.Length)) return RxOutcome.Dropped;
                if (!PopRxChain(rx)) return RxOutcome.NoBuffers;
            }
            count = 0;
            for (long room = 0; room < length; count++) room += _rxChains[count].Writable;
        }
        else
        {
            if (_rxChainCount == 0 && !PopRxChain(rx)) return RxOutcome.NoBuffers;
            // The chain stays ours for the next frame.
            if (_rxChains[0].Writable < length) return RxOutcome.Dropped;
            count = 1;
        }

        VirtioNetHeader.SetNumBuffers(_rxFrame, (ushort)count);
        // Without GUEST_CSUM the flags must be 0 (virtio 1.x §5.1.6.3.1); the tap may still set DATA_VALID.
        if (!_guestCsum) _rxFrame[0] = 0;
        int offset = 0;
        for (int i = 0; i < count; i++)
        {
            var chain = _rxChains[i];
            int n = CopyToChain(chain, _rxFrame.AsSpan(offset, (int)Math.Min(chain.Writable, length - offset)));
            rx.PushUsed(chain.Head, (uint)n);
            _rxCompletions++;
            offset += n;
        }
        // Chains not needed (left from a dropped frame) move to the front, in ring order.
        for (int i = count; i < _rxChainCount; i++) (_rxChains[i - count], _rxChains[i]) = (_rxChains[i], _rxChains[i - count]);
        _rxChainCount -= count;
        _rxCapacity = 0;
        for (int i = 0; i < _rxChainCount; i++) _rxCapacity += _rxChains[i].Writable;
        return RxOutcome.Delivered;
    }

    private int CopyToChain(RxChain chain, ReadOnlySpan<byte> data)
    {
        int copied = 0;
        foreach (var buffer in chain.Buffers)
        {
            if (copied == data.Length) break;
            int n = (int)Math.Min(buffer.Length, (uint)(data.Length - copied));
            data.Slice(copied, n).CopyTo(_memory.GetSpan(buffer.Address, n));
            copied += n;
        }
        return copied;
    }

    /// <summary>Takes the next usable rx chain into the pending list; malformed ones are completed empty on the way.</summary>
    private bool PopRxChain(SplitQueue rx)
    {
        var chain = _rxChains[_rxChainCount];
        while (rx.PopValid(chain.Buffers, out chain.Head, _onRxMalformed))
        {
            long writable = 0;
            bool readOnly = false;
            foreach (var buffer in chain.Buffers)
            {
                readOnly |= !buffer.DeviceWritable;
                writable += buffer.Length;
            }
            if (readOnly || writable < VirtioNetHeader.Size)
            {
                Malformed("rx", readOnly ? "an rx chain with a device-readable buffer" : "an rx chain too small for the 12-byte header");
                rx.PushUsed(chain.Head, 0);
                _rxCompletions++;
                continue;
            }
            chain.Writable = writable;
            _rxChainCount++;
            _rxCapacity += writable;
            return true;
        }
        if (rx.Broken) QueueBroken("rx");
        return false;
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>Watches the tap for what we can act on now: frames while the guest has buffers, room while a packet waits.</summary>
    private void UpdateInterest()
    {
        if (_tapGone) return;
        int wanted = 0;
        if (_rx is not null && !_rxStarved) wanted |= EPOLLIN;
        if (_tx is not null && _txPending) wanted |= EPOLLOUT;
        if (wanted == _interest) return;
        _loop.Modify(_tap.Handle, _tapToken, wanted);
        _interest = wanted;
    }

    /// <summary>The rings are inconsistent: ignore the device until the driver resets it.</summary>
    private void QueueBroken(string queue)
    {
        _log.Warning("virtio-net {Tap}: the {Queue} queue is broken, ignoring the device until the driver resets it", _tap.Name, queue);
        ClearState();
        _rx = _tx = null;
        UpdateInterest();
    }

    /// <summary>The tap is unusable (its interface was deleted): stop watching it; tx packets are dropped from now on so the guest never stalls.</summary>
    private void TapLost(string why)
    {
        if (_tapGone) return;
        _log.Warning("virtio-net {Tap}: {Why}; the NIC drops all traffic from now on", _tap.Name, why);
        _loop.Remove(_tap.Handle, _tapToken);
        _tapGone = true;
        _rxFrameLength = 0;
        // Packets waiting for room go now (dropped), or the guest's tx ring would stay stuck.
        if (_tx is not null) _txResume.Signal();
    }

    private void Malformed(string queue, string why)
    {
        MalformedChains++;
        _log.Debug("virtio-net {Tap}: refused a malformed {Queue} chain: {Reason}", _tap.Name, queue, why);
    }

    /// <summary>Call with the event loop stopped (or on its thread).</summary>
    public void Dispose()
    {
        if (!_tapGone) _loop.Remove(_tap.Handle, _tapToken);
        _loop.Remove(_txResume.Handle, _txResumeToken);
        _tap.Dispose();
        _txResume.Dispose();
    }
}

using System.Buffers;
using Rkt.Kvm.Vmm.Host;

namespace Rkt.Kvm.Vmm.Devices.Vsock;

public enum VsockConnectionState
{
    /// <summary>Host-initiated: REQUEST queued or sent to the guest, waiting for RESPONSE or RST.</summary>
    AwaitingResponse,
    Established,
    /// <summary>The guest shut down both directions; waiting to flush what the host has not taken yet.</summary>
    Closing,
}

/// <summary>
/// One stream between a host Unix socket and a guest vsock port, with both halves of the
/// credit-based flow control (virtio spec 5.10.6.3). All counters are the protocol's wrapping u32s.
/// Toward the guest, nothing is buffered: host bytes are read straight into guest receive buffers,
/// and only while the guest has credit. Toward the host, the guest may have at most
/// <see cref="BufferSize"/> bytes that the host socket has not taken yet, so the one pending
/// buffer is bounded by the credit we advertise.
/// </summary>
public sealed class VsockConnection(uint localPort, uint peerPort, UnixSocket socket, VsockConnectionState state)
{
    /// <summary>Our receive buffer per connection (buf_alloc), as Firecracker sizes it.</summary>
    public const uint BufferSize = 64 * 1024;
    /// <summary>Tell the guest about freed space once this much has been forwarded since it last heard.</summary>
    public const uint CreditUpdateThreshold = BufferSize / 4;

    public uint LocalPort { get; } = localPort;
    public uint PeerPort { get; } = peerPort;
    public UnixSocket Socket { get; } = socket;
    public VsockConnectionState State { get; set; } = state;
    public ulong LoopToken { get; set; }
    public LoopTimer? Timer { get; set; }
    public bool Removed { get; set; }
    /// <summary>Queued for the device's receive work (at most once).</summary>
    public bool InRxQueue { get; set; }

    // What the guest must be told next.
    public bool PendingRequest { get; set; }
    public bool PendingResponse { get; set; }
    public bool PendingCreditUpdate { get; set; }
    public uint PendingShutdownFlags { get; set; }

    // Host socket state (edge-triggered: "readable" holds until a read would block).
    public bool HostReadable { get; set; }
    public bool HostHungUp { get; set; }
    public bool HostEof { get; set; }

    // What the guest told us.
    public bool GuestStoppedReceiving { get; set; }
    public bool GuestStoppedSending { get; set; }

    // Host -> guest flow control.
    public uint PeerBufAlloc { get; private set; }
    public uint PeerFwdCnt { get; private set; }
    public uint TxCnt { get; private set; }

    // Guest -> host flow control.
    public uint RxCnt { get; private set; }
    public uint FwdCnt { get; private set; }
    public uint LastSentFwdCnt { get; private set; }

    private byte[]? _pending;
    private int _pendingStart, _pendingEnd;

    public int PendingToHost => _pendingEnd - _pendingStart;

    /// <summary>How many bytes the guest can take now: its buffer less what is in flight.</summary>
    public uint PeerCredit
    {
        get
        {
            uint inFlight = TxCnt - PeerFwdCnt;
            return inFlight >= PeerBufAlloc ? 0 : PeerBufAlloc - inFlight;
        }
    }

    public void UpdatePeerCredit(uint bufAlloc, uint fwdCnt)
    {
        PeerBufAlloc = bufAlloc;
        PeerFwdCnt = fwdCnt;
    }

    public void RecordSentToGuest(uint bytes) => TxCnt += bytes;

    /// <summary>Every packet to the guest carries our buf_alloc and fwd_cnt; remember what it last heard.</summary>
    public void RecordCreditSent()
    {
        LastSentFwdCnt = FwdCnt;
        PendingCreditUpdate = false;
    }

    public bool CreditUpdateDue => FwdCnt - LastSentFwdCnt >= CreditUpdateThreshold;

    /// <summary>Whether the guest stayed within the credit we gave it if it sends <paramref name="length"/> more bytes.</summary>
    public bool WithinCredit(uint length) => (ulong)(RxCnt - FwdCnt) + length <= BufferSize;

    /// <summary>
    /// Forwards guest bytes (already credit-checked) to the host socket; what the socket does not
    /// take now is kept. Returns false when the host side is broken.
    /// </summary>
    public bool ForwardToHost(ReadOnlySpan<byte> data)
    {
        RxCnt += (uint)data.Length;
        if (PendingToHost == 0)
        {
            int sent = Socket.Send(data);
            if (sent == UnixSocket.Broken) return false;
            if (sent > 0)
            {
                FwdCnt += (uint)sent;
                data = data[sent..];
            }
        }
        if (!data.IsEmpty) Keep(data);
        return true;
    }

    private void Keep(ReadOnlySpan<byte> data)
    {
        _pending ??= ArrayPool<byte>.Shared.Rent((int)BufferSize);
        if (_pendingEnd + data.Length > _pending.Length)
        {
            // Compact: credit bounds the total, so after this it always fits.
            Buffer.BlockCopy(_pending, _pendingStart, _pending, 0, PendingToHost);
            _pendingEnd -= _pendingStart;
            _pendingStart = 0;
        }
        data.CopyTo(_pending.AsSpan(_pendingEnd));
        _pendingEnd += data.Length;
    }

    /// <summary>Writes kept bytes to the host socket. Returns false when the host side is broken.</summary>
    public bool FlushToHost()
    {
        while (PendingToHost > 0)
        {
            int sent = Socket.Send(_pending.AsSpan(_pendingStart, PendingToHost));
            if (sent == UnixSocket.Broken) return false;
            if (sent == UnixSocket.WouldBlock) return true;
            _pendingStart += sent;
            FwdCnt += (uint)sent;
        }
        ReleasePending();
        return true;
    }

    private void ReleasePending()
    {
        if (_pending is not null) ArrayPool<byte>.Shared.Return(_pending);
        _pending = null;
        _pendingStart = _pendingEnd = 0;
    }

    /// <summary>Whether this connection has a packet for the guest's receive queue.</summary>
    public bool HasRxWork => !Removed && (PendingRequest || PendingResponse || State == VsockConnectionState.Established &&
        (PendingCreditUpdate || PendingShutdownFlags != 0 || (HostReadable && !HostEof && !GuestStoppedReceiving && PeerCredit > 0)));

    public void Close()
    {
        Removed = true;
        Timer?.Cancel();
        Socket.Dispose();
        ReleasePending();
    }
}

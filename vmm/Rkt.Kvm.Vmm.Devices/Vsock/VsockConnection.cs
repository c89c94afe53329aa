using System.Buffers;

namespace Rkt.Kvm.Vmm.Devices.Vsock;

public enum VsockConnectionState
{
    /// <summary>Host-initiated: REQUEST queued or sent to the guest, waiting for RESPONSE or RST.</summary>
    AwaitingResponse,
    Established,
    /// <summary>The guest shut down both directions; waiting to flush what the host has not taken yet.</summary>
    Closing,
    /// <summary>Reset or closed: the muxer forgets the connection and closes its host socket.</summary>
    Closed,
}

/// <summary>
/// What the host side must do after <see cref="VsockConnection"/> handled an event. The connection
/// decides; <see cref="HybridVsockMuxer"/> carries it out on the Unix socket and the event loop
/// (in the order listed here), so the state machine itself touches neither.
/// </summary>
[Flags]
public enum VsockHostEffects
{
    None = 0,
    /// <summary>The response timer is no longer needed (the guest answered).</summary>
    CancelTimer = 1 << 0,
    /// <summary>The guest accepted a host-initiated connection: write <c>OK &lt;local port&gt;\n</c> to the host client.</summary>
    SendOkLine = 1 << 1,
    /// <summary>An RW packet was accepted: write its payload to the host socket and hand it over with <see cref="VsockConnection.OnGuestPayload"/>.</summary>
    ForwardPayload = 1 << 2,
    /// <summary>The guest sends no more and the host took everything it sent: the host reads end of stream.</summary>
    ShutdownHostWrite = 1 << 3,
    /// <summary>Arm the connection's timer (unless one is armed) for <see cref="HybridVsockMuxer.ShutdownTimeout"/>, then call <see cref="VsockConnection.OnShutdownTimeout"/>.</summary>
    StartShutdownTimer = 1 << 4,
    /// <summary>The connection is over and the guest must hear it: close the host socket and send RST.</summary>
    Reset = 1 << 5,
    /// <summary>The connection is over and the guest already knows (it sent RST): close the host socket.</summary>
    Close = 1 << 6,
}

/// <summary>
/// The state machine of one stream between a host Unix socket and a guest vsock port: states,
/// RST/SHUTDOWN handling and both halves of the credit-based flow control (virtio spec 5.10.6.3).
/// Pure logic, so it can be driven with packets and host events alone: it reads no guest memory and
/// owns no socket; each event returns the <see cref="VsockHostEffects"/> the muxer must carry out,
/// and <see cref="NextPacketToGuest"/> says what the guest is owed next. All counters are the
/// protocol's wrapping u32s.
/// Toward the guest, nothing is buffered: host bytes are read straight into guest receive buffers,
/// and only while the guest has credit. Toward the host, the guest may have at most
/// <see cref="BufferSize"/> bytes that the host socket has not taken yet, so the one pending
/// buffer is bounded by the credit we advertise.
/// </summary>
public sealed class VsockConnection
{
    /// <summary>Our receive buffer per connection (buf_alloc), as Firecracker sizes it.</summary>
    public const uint BufferSize = 64 * 1024;
    /// <summary>Tell the guest about freed space once this much has been forwarded since it last heard.</summary>
    public const uint CreditUpdateThreshold = BufferSize / 4;

    private readonly ulong _guestCid;
    private byte[]? _pending;
    private int _pendingStart, _pendingEnd;

    private VsockConnection(ulong guestCid, uint localPort, uint peerPort, VsockConnectionState state)
    {
        _guestCid = guestCid;
        LocalPort = localPort;
        PeerPort = peerPort;
        State = state;
    }

    /// <summary>A host client asked (<c>CONNECT &lt;guestPort&gt;</c>) for a connection: REQUEST is owed to the guest.</summary>
    public static VsockConnection HostInitiated(ulong guestCid, uint hostPort, uint guestPort) =>
        new(guestCid, hostPort, guestPort, VsockConnectionState.AwaitingResponse) { PendingRequest = true };

    /// <summary>The guest's REQUEST reached a host listener: the connection is up, and RESPONSE is owed to the guest.</summary>
    public static VsockConnection GuestInitiated(ulong guestCid, in VsockPacketHeader request)
    {
        var c = new VsockConnection(guestCid, request.DstPort, request.SrcPort, VsockConnectionState.Established) { PendingResponse = true };
        c.UpdatePeerCredit(request.BufAlloc, request.FwdCnt);
        return c;
    }

    public uint LocalPort { get; }
    public uint PeerPort { get; }
    public VsockConnectionState State { get; private set; }

    // What the guest must be told next.
    public bool PendingRequest { get; private set; }
    public bool PendingResponse { get; private set; }
    public bool PendingCreditUpdate { get; private set; }
    public uint PendingShutdownFlags { get; private set; }

    // Host socket state (edge-triggered: "readable" holds until a read would block).
    public bool HostReadable { get; private set; }
    public bool HostHungUp { get; private set; }
    public bool HostEof { get; private set; }

    // What the guest told us.
    public bool GuestStoppedReceiving { get; private set; }
    public bool GuestStoppedSending { get; private set; }

    // Host -> guest flow control.
    public uint PeerBufAlloc { get; private set; }
    public uint PeerFwdCnt { get; private set; }
    public uint TxCnt { get; private set; }

    // Guest -> host flow control.
    public uint RxCnt { get; private set; }
    public uint FwdCnt { get; private set; }
    public uint LastSentFwdCnt { get; private set; }

    /// <summary>Guest bytes the host socket has not taken yet.</summary>
    public int PendingToHost => _pendingEnd - _pendingStart;

    /// <summary>The bytes of <see cref="PendingToHost"/>, oldest first, for the muxer to write when the host socket is writable.</summary>
    public ReadOnlySpan<byte> PendingToHostBytes => _pending is null ? default : _pending.AsSpan(_pendingStart, PendingToHost);

    /// <summary>How many bytes the guest can take now: its buffer less what is in flight.</summary>
    public uint PeerCredit
    {
        get
        {
            uint inFlight = TxCnt - PeerFwdCnt;
            return inFlight >= PeerBufAlloc ? 0 : PeerBufAlloc - inFlight;
        }
    }

    public bool CreditUpdateDue => FwdCnt - LastSentFwdCnt >= CreditUpdateThreshold;

    /// <summary>Whether the guest stays within the credit we gave it if it sends <paramref name="length"/> more bytes.</summary>
    public bool WithinCredit(uint length) => (ulong)(RxCnt - FwdCnt) + length <= BufferSize;

    /// <summary>Host bytes may go to the guest now (the muxer still has to find some in the socket).</summary>
    private bool MaySendHostData => HostReadable && !HostEof && !GuestStoppedReceiving && PeerCredit > 0;

    /// <summary>Whether this connection has a packet for the guest's receive queue.</summary>
    public bool HasPacketForGuest => State != VsockConnectionState.Closed && (PendingRequest || PendingResponse || State == VsockConnectionState.Established &&
        (PendingCreditUpdate || PendingShutdownFlags != 0 || MaySendHostData));

    // ---------------------------------------------------------------- guest -> connection

    /// <summary>
    /// A validated packet the guest sent on this connection. <paramref name="violation"/> says why
    /// the packet broke the protocol (the connection is then reset), for the device's count of
    /// malformed packets.
    /// </summary>
    public VsockHostEffects OnGuestPacket(in VsockPacketHeader packet, out string? violation)
    {
        violation = null;
        if (State == VsockConnectionState.Closed) return VsockHostEffects.None;
        // A second REQUEST for a live connection: the guest lost track of it.
        if (packet.Op == VsockOp.Request) return End(VsockHostEffects.Reset);
        UpdatePeerCredit(packet.BufAlloc, packet.FwdCnt);
        switch (packet.Op)
        {
            case VsockOp.Response: return OnGuestResponse();
            case VsockOp.Rst: return End(VsockHostEffects.Close);
            case VsockOp.Shutdown: return OnGuestShutdown(packet.Flags);
            case VsockOp.Rw: return OnGuestData(packet.Length, out violation);
            case VsockOp.CreditRequest: PendingCreditUpdate = true; return VsockHostEffects.None;
            default: return VsockHostEffects.None; // CREDIT_UPDATE: the credit itself was taken above
        }
    }

    private void UpdatePeerCredit(uint bufAlloc, uint fwdCnt)
    {
        PeerBufAlloc = bufAlloc;
        PeerFwdCnt = fwdCnt;
    }

    private VsockHostEffects OnGuestResponse()
    {
        if (State != VsockConnectionState.AwaitingResponse) return End(VsockHostEffects.Reset);
        State = VsockConnectionState.Established;
        return VsockHostEffects.CancelTimer | VsockHostEffects.SendOkLine;
    }

    private VsockHostEffects OnGuestShutdown(uint flags)
    {
        if ((flags & VsockPacketHeader.ShutdownReceive) != 0) GuestStoppedReceiving = true;
        if ((flags & VsockPacketHeader.ShutdownSend) != 0) GuestStoppedSending = true;
        if (GuestStoppedReceiving && GuestStoppedSending)
        {
            // The guest closed its socket and waits for our RST; give the host what it still has to read first.
            State = VsockConnectionState.Closing;
            return PendingToHost == 0 ? End(VsockHostEffects.Reset) : VsockHostEffects.StartShutdownTimer;
        }
        return GuestStoppedSending && PendingToHost == 0 ? VsockHostEffects.ShutdownHostWrite : VsockHostEffects.None;
    }

    private VsockHostEffects OnGuestData(uint length, out string? violation)
    {
        if (State != VsockConnectionState.Established || GuestStoppedSending || !WithinCredit(length))
        {
            violation = $"data on port {LocalPort} the connection cannot take (state {State}, beyond credit or after shutdown)";
            return End(VsockHostEffects.Reset);
        }
        violation = null;
        RxCnt += length;
        return VsockHostEffects.ForwardPayload;
    }

    /// <summary>
    /// The payload of an RW packet this connection accepted (<see cref="VsockHostEffects.ForwardPayload"/>):
    /// the host socket took its first <paramref name="hostTook"/> bytes at once, and the rest waits
    /// in the pending buffer. The muxer writes directly only while nothing is pending, so bytes
    /// reach the host in order.
    /// </summary>
    public void OnGuestPayload(ReadOnlySpan<byte> payload, int hostTook)
    {
        if (hostTook > 0) Forwarded(hostTook);
        if (hostTook < payload.Length) Keep(payload[hostTook..]);
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

    /// <summary>The host took guest bytes: that frees credit, and the guest hears of it once enough has piled up.</summary>
    private void Forwarded(int bytes)
    {
        FwdCnt += (uint)bytes;
        if (CreditUpdateDue) PendingCreditUpdate = true;
    }

    // ---------------------------------------------------------------- host -> connection

    /// <summary>The host socket reported readiness (from epoll): readable (data, end of stream or an error to read) and whether it hung up.</summary>
    public void OnHostSocketReady(bool readable, bool hungUp)
    {
        if (readable) HostReadable = true;
        if (hungUp) HostHungUp = true;
    }

    /// <summary>
    /// The host socket took <paramref name="bytes"/> of <see cref="PendingToHostBytes"/>. Once all
    /// are taken, a guest that stopped sending gets the host's write side shut, and a closing
    /// connection ends.
    /// </summary>
    public VsockHostEffects OnHostTookPending(int bytes)
    {
        _pendingStart += bytes;
        Forwarded(bytes);
        if (PendingToHost > 0) return VsockHostEffects.None;
        ReleasePending();
        var effects = GuestStoppedSending ? VsockHostEffects.ShutdownHostWrite : VsockHostEffects.None;
        if (State == VsockConnectionState.Closing) effects |= End(VsockHostEffects.Reset);
        return effects;
    }

    /// <summary>
    /// Ends the connection with RST, whatever its state: its host socket failed (the peer is gone),
    /// or the guest sent a packet for it that the device refused.
    /// </summary>
    public VsockHostEffects Abort() => State == VsockConnectionState.Closed ? VsockHostEffects.None : End(VsockHostEffects.Reset);

    /// <summary>The guest did not answer the REQUEST in time: give up (the host client sees its socket close).</summary>
    public VsockHostEffects OnResponseTimeout() =>
        State == VsockConnectionState.AwaitingResponse ? End(VsockHostEffects.Reset) : VsockHostEffects.None;

    /// <summary>A shutdown did not complete in time: reset rather than hold the connection forever.</summary>
    public VsockHostEffects OnShutdownTimeout() => Abort();

    // ---------------------------------------------------------------- connection -> guest

    /// <summary>
    /// What goes into the guest's next receive buffer, which has <paramref name="payloadRoom"/>
    /// bytes after the header. A control packet is returned and counts as sent: REQUEST or RESPONSE
    /// first, then (after host data) SHUTDOWN, then CREDIT_UPDATE. For host data, null is returned
    /// with <paramref name="readLimit"/> &gt; 0: the muxer reads at most that many bytes from the
    /// host into the buffer and reports with <see cref="OnHostDataRead"/> or <see cref="OnHostReadNothing"/>.
    /// Null with a limit of 0: nothing is owed.
    /// </summary>
    public VsockPacketHeader? NextPacketToGuest(int payloadRoom, out int readLimit)
    {
        readLimit = 0;
        if (State == VsockConnectionState.Closed) return null;
        if (PendingRequest)
        {
            PendingRequest = false;
            return PacketToGuest(VsockOp.Request);
        }
        if (PendingResponse)
        {
            PendingResponse = false;
            return PacketToGuest(VsockOp.Response);
        }
        if (State != VsockConnectionState.Established) return null;
        if (MaySendHostData)
        {
            readLimit = (int)Math.Min(Math.Min((uint)Math.Max(payloadRoom, 0), PeerCredit), VsockPacketHeader.MaxPayload);
            if (readLimit > 0) return null;
        }
        if (PendingShutdownFlags != 0)
        {
            uint flags = PendingShutdownFlags;
            PendingShutdownFlags = 0;
            return PacketToGuest(VsockOp.Shutdown, flags: flags);
        }
        return PendingCreditUpdate ? PacketToGuest(VsockOp.CreditUpdate) : null;
    }

    /// <summary>The muxer read <paramref name="bytes"/> (&gt; 0, within the read limit) from the host into the guest's buffer: the RW packet that carries them.</summary>
    public VsockPacketHeader OnHostDataRead(int bytes)
    {
        TxCnt += (uint)bytes;
        return PacketToGuest(VsockOp.Rw, (uint)bytes);
    }

    /// <summary>
    /// A read from the host found nothing: it would block (wait for the next readiness event), or
    /// the host stopped sending (<paramref name="endOfStream"/>), which the guest is told with
    /// SHUTDOWN; if the host is gone entirely, the connection resets unless the guest closes first.
    /// </summary>
    public VsockHostEffects OnHostReadNothing(bool endOfStream)
    {
        HostReadable = false;
        if (!endOfStream) return VsockHostEffects.None;
        HostEof = true;
        if (HostHungUp)
        {
            PendingShutdownFlags |= VsockPacketHeader.ShutdownReceive | VsockPacketHeader.ShutdownSend;
            return VsockHostEffects.StartShutdownTimer;
        }
        PendingShutdownFlags |= VsockPacketHeader.ShutdownSend;
        return VsockHostEffects.None;
    }

    /// <summary>Every packet to the guest carries our buf_alloc and fwd_cnt: it is a credit update too, so remember what the guest last heard.</summary>
    private VsockPacketHeader PacketToGuest(VsockOp op, uint length = 0, uint flags = 0)
    {
        LastSentFwdCnt = FwdCnt;
        PendingCreditUpdate = false;
        return VsockPacketHeader.ToGuest(_guestCid, LocalPort, PeerPort, op, length, flags, BufferSize, FwdCnt);
    }

    // ---------------------------------------------------------------- end

    private VsockHostEffects End(VsockHostEffects how)
    {
        Close();
        return how;
    }

    /// <summary>Ends the connection without telling anyone (the muxer closes the socket; a driver reset already dropped the guest's side).</summary>
    public void Close()
    {
        State = VsockConnectionState.Closed;
        ReleasePending();
    }

    private void ReleasePending()
    {
        if (_pending is not null) ArrayPool<byte>.Shared.Return(_pending);
        _pending = null;
        _pendingStart = _pendingEnd = 0;
    }
}

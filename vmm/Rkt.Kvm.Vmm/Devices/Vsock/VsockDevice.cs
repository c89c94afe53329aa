using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.Memory;
using Serilog;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Devices.Vsock;

/// <summary>
/// virtio-vsock (device 19) emulated in the VMM, with the guest's ports exposed on the host
/// through Firecracker's hybrid vsock protocol (shared/VSOCK.md): host programs connect to one
/// Unix socket and write <c>CONNECT &lt;port&gt;\n</c>; guest connections to the host's port P go
/// to the Unix socket <c>&lt;path&gt;_P</c>. Runs entirely on the VMM's event loop thread.
/// Everything the guest sends is validated; a bad packet is dropped or answered with RST, and no
/// guest behaviour makes the VMM buffer without bound (see <see cref="VsockConnection"/>).
/// </summary>
public sealed class VsockDevice : IVirtioDevice, IDisposable
{
    public const uint Id = 19;
    public const ushort QueueSize = 256;
    public const int RxQueue = 0, TxQueue = 1, EventQueue = 2;
    public const int MaxConnections = 1024;
    /// <summary>Connections still reading their CONNECT line; more are refused.</summary>
    public const int MaxPendingHandshakes = 128;
    public const uint FirstHostPort = 1u << 30;
    public static readonly TimeSpan ResponseTimeout = TimeSpan.FromSeconds(2);
    public static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(2);

    private readonly GuestMemory _memory;
    private readonly EventLoop _loop;
    private readonly ILogger _log;
    private readonly string _socketPath;
    private readonly UnixSocket _listener;
    private readonly ulong _listenerToken;
    private readonly byte[] _config = new byte[8];
    private readonly Dictionary<(uint Local, uint Peer), VsockConnection> _connections = [];
    private readonly HashSet<uint> _hostPortsInUse = [];
    private readonly Queue<VsockConnection> _rxReady = new();
    /// <summary>RSTs for packets that named no connection; bounded so a guest cannot grow it.</summary>
    private readonly Queue<(uint Local, uint Peer)> _orphanRsts = new();
    private readonly HashSet<PendingHandshake> _handshakes = [];
    private SplitQueue? _rx, _tx, _event;
    private Action<int>? _signalUsed;
    private uint _nextHostPort = FirstHostPort;

    public ulong GuestCid { get; }
    public string SocketPath => _socketPath;
    public int ConnectionCount => _connections.Count;
    /// <summary>Packets the guest sent that failed validation (for tests and the exit summary).</summary>
    public long MalformedPackets { get; private set; }

    public VsockDevice(GuestMemory memory, ulong guestCid, string socketPath, EventLoop loop, ILogger log)
    {
        if (guestCid < 3 || guestCid > uint.MaxValue - 1) throw new ArgumentException($"The guest CID must be between 3 and {uint.MaxValue - 1}, not {guestCid}.");
        _memory = memory;
        _loop = loop;
        _log = log;
        _socketPath = socketPath;
        GuestCid = guestCid;
        BinaryPrimitives.WriteUInt64LittleEndian(_config, guestCid);
        // Listen from the moment the VM exists; connections before the driver is up are closed (clients retry).
        _listener = UnixSocket.Listen(socketPath);
        _listenerToken = loop.Add(_listener.Handle, EPOLLIN, _ => AcceptHostConnections());
    }

    public uint DeviceId => Id;
    public ulong Features => 0; // stream sockets only (no SEQPACKET)
    public IReadOnlyList<ushort> QueueMaxSizes { get; } = [QueueSize, QueueSize, QueueSize];
    public ReadOnlySpan<byte> Config => _config;
    private bool Active => _rx is not null;
    /// <summary>
    /// A transport reset was sent after a restore and the guest has not handled it yet: a
    /// connection made now could be reset along with the old ones (the driver handles events and
    /// packets in separate work items). The guest re-posts its event buffer once it has handled
    /// the event, and that notify ends this.
    /// </summary>
    private bool _resetPending;

    public void Activate(ulong acceptedFeatures, IReadOnlyList<SplitQueue> queues, Action<int> signalUsed)
    {
        _rx = queues[RxQueue];
        _tx = queues[TxQueue];
        _event = queues[EventQueue];
        _signalUsed = signalUsed;
    }

    /// <summary>VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the guest drops every connection it had and re-reads its CID.</summary>
    public const uint EventTransportReset = 0;

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
        foreach (var c in _connections.Values.ToList()) Remove(c);
        _rxReady.Clear();
        _orphanRsts.Clear();
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
            if (header.SrcCid == GuestCid && header.DstCid == VsockPacketHeader.HostCid && header.Op != VsockOp.Rst)
            {
                if (_connections.TryGetValue((header.DstPort, header.SrcPort), out var known)) Reset(known);
                else QueueOrphanRst(header.DstPort, header.SrcPort);
            }
            return;
        }

        var key = (header.DstPort, header.SrcPort);
        _connections.TryGetValue(key, out var c);
        if (header.Op == VsockOp.Request)
        {
            if (c is not null) Reset(c); // a second REQUEST for a live connection: the guest lost track of it
            else AcceptGuestConnection(header);
            return;
        }
        if (c is null)
        {
            if (header.Op != VsockOp.Rst) QueueOrphanRst(header.DstPort, header.SrcPort);
            return;
        }
        c.UpdatePeerCredit(header.BufAlloc, header.FwdCnt);
        switch (header.Op)
        {
            case VsockOp.Response: OnGuestResponse(c); break;
            case VsockOp.Rst: Remove(c); break;
            case VsockOp.Shutdown: OnGuestShutdown(c, header.Flags); break;
            case VsockOp.Rw: OnGuestData(c, chain, header.Length); break;
            case VsockOp.CreditUpdate: break; // the credit itself was taken above
            case VsockOp.CreditRequest: c.PendingCreditUpdate = true; break;
        }
        // New credit may unblock host data waiting for it.
        EnqueueRx(c);
    }

    private void AcceptGuestConnection(VsockPacketHeader request)
    {
        if (_connections.Count >= MaxConnections)
        {
            _log.Warning("vsock: refusing the guest's connection to host port {Port}: {Max} connections are open", request.DstPort, MaxConnections);
            QueueOrphanRst(request.DstPort, request.SrcPort);
            return;
        }
        var socket = UnixSocket.TryConnect($"{_socketPath}_{request.DstPort}");
        if (socket is null)
        {
            _log.Debug("vsock: the guest connected to host port {Port}, where nobody listens; answering RST", request.DstPort);
            QueueOrphanRst(request.DstPort, request.SrcPort);
            return;
        }
        var c = new VsockConnection(request.DstPort, request.SrcPort, socket, VsockConnectionState.Established) { PendingResponse = true };
        c.UpdatePeerCredit(request.BufAlloc, request.FwdCnt);
        Track(c);
        EnqueueRx(c);
    }

    private void OnGuestResponse(VsockConnection c)
    {
        if (c.State != VsockConnectionState.AwaitingResponse)
        {
            Reset(c);
            return;
        }
        c.Timer?.Cancel();
        c.Timer = null;
        c.State = VsockConnectionState.Established;
        var ok = HybridVsockHandshake.OkLine(c.LocalPort);
        if (c.Socket.Send(ok) != ok.Length)
        {
            // A fresh socket with an empty buffer takes a dozen bytes, or the client is gone.
            Reset(c);
            return;
        }
        _log.Debug("vsock: host port {Local} connected to guest port {Peer}", c.LocalPort, c.PeerPort);
    }

    private void OnGuestShutdown(VsockConnection c, uint flags)
    {
        if ((flags & VsockPacketHeader.ShutdownReceive) != 0) c.GuestStoppedReceiving = true;
        if ((flags & VsockPacketHeader.ShutdownSend) != 0) c.GuestStoppedSending = true;
        if (c.GuestStoppedReceiving && c.GuestStoppedSending)
        {
            // The guest closed its socket and waits for our RST; give the host what it still has to read first.
            c.State = VsockConnectionState.Closing;
            FinishClosingIfFlushed(c);
            if (!c.Removed) c.Timer ??= _loop.Schedule(ShutdownTimeout, () => ResetAndNotify(c));
        }
        else if (c.GuestStoppedSending && c.PendingToHost == 0) c.Socket.ShutdownSend();
    }

    private void OnGuestData(VsockConnection c, DescriptorChain chain, uint length)
    {
        if (c.State != VsockConnectionState.Established || c.GuestStoppedSending || !c.WithinCredit(length))
        {
            Malformed($"data on port {c.LocalPort} the connection cannot take (state {c.State}, beyond credit or after shutdown)");
            Reset(c);
            return;
        }
        foreach (var (address, n) in chain.ReadableSegments(VsockPacketHeader.Size, length))
        {
            if (!c.ForwardToHost(_memory.GetSpan(address, n)))
            {
                Reset(c);
                return;
            }
        }
        if (c.CreditUpdateDue) c.PendingCreditUpdate = true;
    }

    // ---------------------------------------------------------------- host -> guest (rx queue)

    private void EnqueueRx(VsockConnection c)
    {
        if (c.InRxQueue || !c.HasRxWork) return;
        c.InRxQueue = true;
        _rxReady.Enqueue(c);
    }

    private void QueueOrphanRst(uint local, uint peer)
    {
        if (_orphanRsts.Count < MaxConnections) _orphanRsts.Enqueue((local, peer));
    }

    /// <summary>Fills the guest's receive buffers with whatever is due, one packet per buffer, connections taking turns.</summary>
    private void ProcessRx()
    {
        if (_rx is not { } rx) return;
        bool used = false;
        while (_orphanRsts.Count > 0 || _rxReady.Count > 0)
        {
            if (TryPop(rx, "rx") is not { } chain) break; // wait for the guest to post buffers
            if (chain.ReadableLength != 0 || chain.WritableLength < VsockPacketHeader.Size)
            {
                Malformed("an rx buffer that is not a writable area of at least 44 bytes");
                rx.PushUsed(chain.Head, 0);
                used = true;
                continue;
            }
            uint written;
            if (_orphanRsts.TryDequeue(out var rst)) written = WritePacket(chain, rst.Local, rst.Peer, VsockOp.Rst, 0, 0, null);
            else if (!TryFillFromNextConnection(chain, out written))
            {
                rx.UndoPop();
                break;
            }
            rx.PushUsed(chain.Head, written);
            used = true;
        }
        if (used) _signalUsed?.Invoke(RxQueue);
    }

    private bool TryFillFromNextConnection(DescriptorChain chain, out uint written)
    {
        while (_rxReady.TryDequeue(out var c))
        {
            c.InRxQueue = false;
            if (TryFillRx(c, chain, out written))
            {
                EnqueueRx(c); // more to say: back of the line, so connections share the buffers
                return true;
            }
        }
        written = 0;
        return false;
    }

    /// <summary>Writes this connection's next packet into <paramref name="chain"/>; false when it turned out to have nothing.</summary>
    private bool TryFillRx(VsockConnection c, DescriptorChain chain, out uint written)
    {
        written = 0;
        if (c.Removed) return false;
        if (c.PendingRequest)
        {
            c.PendingRequest = false;
            written = WritePacket(chain, c, VsockOp.Request, 0, 0);
            return true;
        }
        if (c.PendingResponse)
        {
            c.PendingResponse = false;
            written = WritePacket(chain, c, VsockOp.Response, 0, 0);
            return true;
        }
        if (c.State != VsockConnectionState.Established) return false;
        if (c.HostReadable && !c.HostEof && !c.GuestStoppedReceiving && c.PeerCredit > 0)
        {
            var (address, room) = chain.FirstWritableSegment(VsockPacketHeader.Size);
            int max = (int)Math.Min(Math.Min((uint)room, c.PeerCredit), VsockPacketHeader.MaxPayload);
            if (max > 0)
            {
                int n = c.Socket.Receive(_memory.GetSpan(address, max));
                if (n > 0)
                {
                    c.RecordSentToGuest((uint)n);
                    written = WritePacket(chain, c, VsockOp.Rw, (uint)n, 0);
                    return true;
                }
                c.HostReadable = false;
                if (n == 0) OnHostEndOfStream(c);
            }
        }
        if (c.PendingShutdownFlags != 0)
        {
            uint flags = c.PendingShutdownFlags;
            c.PendingShutdownFlags = 0;
            written = WritePacket(chain, c, VsockOp.Shutdown, 0, flags);
            return true;
        }
        if (c.PendingCreditUpdate)
        {
            written = WritePacket(chain, c, VsockOp.CreditUpdate, 0, 0);
            return true;
        }
        return false;
    }

    /// <summary>The host stopped sending: tell the guest; if the host is gone entirely, reset unless the guest closes first.</summary>
    private void OnHostEndOfStream(VsockConnection c)
    {
        c.HostEof = true;
        if (c.HostHungUp)
        {
            c.PendingShutdownFlags |= VsockPacketHeader.ShutdownReceive | VsockPacketHeader.ShutdownSend;
            c.Timer ??= _loop.Schedule(ShutdownTimeout, () => ResetAndNotify(c));
        }
        else c.PendingShutdownFlags |= VsockPacketHeader.ShutdownSend;
    }

    private uint WritePacket(DescriptorChain chain, VsockConnection c, VsockOp op, uint length, uint flags)
    {
        c.RecordCreditSent();
        return WritePacket(chain, c.LocalPort, c.PeerPort, op, length, flags, c);
    }

    private uint WritePacket(DescriptorChain chain, uint localPort, uint peerPort, VsockOp op, uint length, uint flags, VsockConnection? c)
    {
        Span<byte> bytes = stackalloc byte[VsockPacketHeader.Size];
        new VsockPacketHeader(VsockPacketHeader.HostCid, GuestCid, localPort, peerPort, length, VsockPacketHeader.TypeStream, op, flags,
            c is null ? 0 : VsockConnection.BufferSize, c?.FwdCnt ?? 0).Write(bytes);
        chain.WriteTo(_memory, 0, bytes);
        return VsockPacketHeader.Size + length;
    }

    // ---------------------------------------------------------------- host side: Unix sockets

    private sealed class PendingHandshake(UnixSocket socket)
    {
        public UnixSocket Socket { get; } = socket;
        public ulong Token { get; set; }
        public LoopTimer? Timer { get; set; }
    }

    private void AcceptHostConnections()
    {
        while (_listener.Accept() is { } socket)
        {
            if (_handshakes.Count >= MaxPendingHandshakes || _connections.Count >= MaxConnections)
            {
                _log.Warning("vsock: refusing a host connection: {Handshakes} handshakes pending, {Connections} connections open", _handshakes.Count, _connections.Count);
                socket.Dispose();
                continue;
            }
            var handshake = new PendingHandshake(socket);
            _handshakes.Add(handshake);
            handshake.Token = _loop.Add(socket.Handle, EPOLLIN | EPOLLRDHUP | EPOLLET, _ => OnHandshakeReadable(handshake));
            handshake.Timer = _loop.Schedule(HandshakeTimeout, () => DropHandshake(handshake));
        }
    }

    private void OnHandshakeReadable(PendingHandshake handshake)
    {
        Span<byte> line = stackalloc byte[HybridVsockHandshake.MaxLineLength];
        // Peek, so bytes after the line stay in the socket as the start of the stream.
        int n = handshake.Socket.Receive(line, peek: true);
        if (n == UnixSocket.WouldBlock) return;
        uint port = 0;
        int consumed = 0;
        var status = n == 0 ? ConnectLineStatus.Invalid : HybridVsockHandshake.Parse(line[..n], out port, out consumed);
        if (status == ConnectLineStatus.NeedMore) return;
        DropHandshake(handshake, keepSocket: status == ConnectLineStatus.Valid);
        if (status != ConnectLineStatus.Valid) return;
        handshake.Socket.Receive(line[..consumed]);
        ConnectToGuest(handshake.Socket, port);
    }

    private void DropHandshake(PendingHandshake handshake, bool keepSocket = false)
    {
        if (!_handshakes.Remove(handshake)) return;
        handshake.Timer?.Cancel();
        _loop.Remove(handshake.Socket.Handle, handshake.Token);
        if (!keepSocket) handshake.Socket.Dispose();
    }

    private void ConnectToGuest(UnixSocket socket, uint guestPort)
    {
        if (!Active || _resetPending)
        {
            _log.Debug("vsock: CONNECT {Port} before the guest driver is ready; closing (the client retries)", guestPort);
            socket.Dispose();
            return;
        }
        uint local = AllocateHostPort();
        var c = new VsockConnection(local, guestPort, socket, VsockConnectionState.AwaitingResponse) { PendingRequest = true };
        Track(c);
        c.Timer = _loop.Schedule(ResponseTimeout, () =>
        {
            if (c.Removed || c.State != VsockConnectionState.AwaitingResponse) return;
            _log.Debug("vsock: guest port {Port} did not answer within {Timeout}; closing the host connection", guestPort, ResponseTimeout);
            ResetAndNotify(c);
        });
        EnqueueRx(c);
        ProcessRx();
    }

    private uint AllocateHostPort()
    {
        while (true)
        {
            uint port = _nextHostPort;
            _nextHostPort = _nextHostPort == int.MaxValue ? FirstHostPort : _nextHostPort + 1;
            if (!_hostPortsInUse.Contains(port)) return port; // at most MaxConnections are in use, so this ends
        }
    }

    private void Track(VsockConnection c)
    {
        _connections[(c.LocalPort, c.PeerPort)] = c;
        if (c.LocalPort >= FirstHostPort) _hostPortsInUse.Add(c.LocalPort);
        c.LoopToken = _loop.Add(c.Socket.Handle, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, events => OnHostSocketEvent(c, events));
    }

    private void OnHostSocketEvent(VsockConnection c, uint events)
    {
        if (c.Removed) return;
        if ((events & (uint)(EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) c.HostReadable = true;
        if ((events & (uint)(EPOLLHUP | EPOLLERR)) != 0) c.HostHungUp = true;
        if ((events & (uint)EPOLLOUT) != 0 && c.PendingToHost > 0)
        {
            if (!c.FlushToHost()) { Reset(c); ProcessRx(); return; }
            if (c.CreditUpdateDue) c.PendingCreditUpdate = true;
            if (c.PendingToHost == 0 && c.GuestStoppedSending) c.Socket.ShutdownSend();
            FinishClosingIfFlushed(c);
        }
        if (!c.Removed) EnqueueRx(c);
        ProcessRx();
    }

    private void FinishClosingIfFlushed(VsockConnection c)
    {
        if (c.State == VsockConnectionState.Closing && c.PendingToHost == 0) Reset(c);
    }

    /// <summary>Ends a connection abruptly: the host socket is closed and the guest gets RST.</summary>
    private void Reset(VsockConnection c)
    {
        if (c.Removed) return;
        Remove(c);
        QueueOrphanRst(c.LocalPort, c.PeerPort);
    }

    /// <summary>A reset from a timer: nothing else will deliver the RST, so deliver it now.</summary>
    private void ResetAndNotify(VsockConnection c)
    {
        Reset(c);
        ProcessRx();
    }

    private void Remove(VsockConnection c)
    {
        if (c.Removed) return;
        _connections.Remove((c.LocalPort, c.PeerPort));
        _hostPortsInUse.Remove(c.LocalPort);
        _loop.Remove(c.Socket.Handle, c.LoopToken);
        c.Close();
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

    public void Dispose()
    {
        foreach (var c in _connections.Values.ToList()) Remove(c);
        foreach (var h in _handshakes.ToList()) DropHandshake(h);
        _loop.Remove(_listener.Handle, _listenerToken);
        _listener.Dispose();
        try { File.Delete(_socketPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

using Rkt.Kvm.Vmm.Host;
using Serilog;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Devices.Vsock;

/// <summary>
/// The host backend of the vsock device: Firecracker's hybrid vsock over Unix sockets
/// (shared/VSOCK.md). It owns every host socket: the VM's listener with its
/// <c>CONNECT &lt;port&gt;\n</c> / <c>OK &lt;hostport&gt;\n</c> handshake, the connections the guest
/// makes to <c>&lt;path&gt;_&lt;port&gt;</c>, their epoll registrations and timers. It holds the
/// connection table, keyed like the protocol by (host port, guest port), and carries out what each
/// <see cref="VsockConnection"/> decides. It deals in packets and byte spans, never in virtqueues:
/// <see cref="VsockDevice"/> hands it the guest's validated packets and asks it to fill receive
/// buffers. Runs on the VMM's event loop thread only.
/// </summary>
public sealed class HybridVsockMuxer : IDisposable
{
    /// <summary>Connections at once (Firecracker allows 1023); the guest and host clients are both refused beyond it.</summary>
    public const int MaxConnections = 1024;
    /// <summary>Connections still reading their CONNECT line; more are refused.</summary>
    public const int MaxPendingHandshakes = 128;
    /// <summary>Host-side ports of host-initiated connections come from [2^30, 2^31), as in Firecracker.</summary>
    public const uint FirstHostPort = 1u << 30;
    public static readonly TimeSpan ResponseTimeout = TimeSpan.FromSeconds(2);
    public static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(2);

    /// <summary>One connection as the muxer holds it: the state machine and the host socket it is bridged to.</summary>
    private sealed class HostEnd(VsockConnection connection, UnixSocket socket)
    {
        public VsockConnection Connection { get; } = connection;
        public UnixSocket Socket { get; } = socket;
        public ulong LoopToken { get; set; }
        /// <summary>The response timer, then the shutdown timer: a connection needs at most one at a time.</summary>
        public LoopTimer? Timer { get; set; }
        /// <summary>Queued in <see cref="_rxReady"/> (at most once).</summary>
        public bool InRxQueue { get; set; }
        /// <summary>Out of the table, socket closed: late events and timers for it are ignored.</summary>
        public bool Removed { get; set; }
    }

    private sealed class PendingHandshake(UnixSocket socket)
    {
        public UnixSocket Socket { get; } = socket;
        public ulong Token { get; set; }
        public LoopTimer? Timer { get; set; }
    }

    private readonly ulong _guestCid;
    private readonly EventLoop _loop;
    private readonly ILogger _log;
    private readonly Func<bool> _guestAcceptsConnections;
    private readonly Action _packetsForGuest;
    private readonly UnixSocket _listener;
    private readonly ulong _listenerToken;
    private readonly Dictionary<(uint Local, uint Peer), HostEnd> _connections = [];
    private readonly HashSet<uint> _hostPortsInUse = [];
    /// <summary>Connections with something for the guest, taking turns for its receive buffers.</summary>
    private readonly Queue<HostEnd> _rxReady = new();
    /// <summary>RSTs for packets that named no connection (or for connections already gone); bounded so a guest cannot grow it.</summary>
    private readonly Queue<(uint Local, uint Peer)> _orphanRsts = new();
    private readonly HashSet<PendingHandshake> _handshakes = [];
    private uint _nextHostPort = FirstHostPort;

    public string SocketPath { get; }
    public int ConnectionCount => _connections.Count;
    /// <summary>Whether a packet is waiting for a guest receive buffer.</summary>
    public bool HasPacketsForGuest => _orphanRsts.Count > 0 || _rxReady.Count > 0;

    /// <param name="guestAcceptsConnections">Whether a REQUEST sent now can reach the guest's driver (it is up, and not busy with a transport reset); CONNECTs are closed otherwise and the client retries.</param>
    /// <param name="packetsForGuest">Called after host events (on the loop thread) that may have made packets due: the device fills its receive queue.</param>
    public HybridVsockMuxer(ulong guestCid, string socketPath, EventLoop loop, ILogger log, Func<bool> guestAcceptsConnections, Action packetsForGuest)
    {
        _guestCid = guestCid;
        _loop = loop;
        _log = log;
        _guestAcceptsConnections = guestAcceptsConnections;
        _packetsForGuest = packetsForGuest;
        SocketPath = socketPath;
        // Listen from the moment the VM exists; connections before the driver is up are closed (clients retry).
        _listener = UnixSocket.Listen(socketPath);
        _listenerToken = loop.Add(_listener.Handle, EPOLLIN, _ => AcceptHostConnections());
    }

    // ---------------------------------------------------------------- from the guest (validated packets)

    /// <summary>
    /// A packet the guest sent, already validated by the device (<paramref name="payload"/> holds
    /// exactly its Length bytes). Returns why the packet broke the protocol of its connection, or null.
    /// </summary>
    public string? OnGuestPacket(in VsockPacketHeader packet, ReadOnlySpan<byte> payload)
    {
        if (!_connections.TryGetValue((packet.DstPort, packet.SrcPort), out var h))
        {
            if (packet.Op == VsockOp.Request) AcceptGuestConnection(packet);
            else if (packet.Op != VsockOp.Rst) QueueOrphanRst(packet.DstPort, packet.SrcPort);
            return null;
        }
        var effects = h.Connection.OnGuestPacket(packet, out string? violation);
        Apply(h, effects, payload);
        // New credit may unblock host data waiting for it.
        EnqueueRx(h);
        return violation;
    }

    /// <summary>The guest sent an invalid packet naming (host port, guest port): reset that connection, or answer RST if there is none.</summary>
    public void RefuseGuestPacket(uint hostPort, uint guestPort)
    {
        if (_connections.TryGetValue((hostPort, guestPort), out var known)) Apply(known, known.Connection.Abort());
        else QueueOrphanRst(hostPort, guestPort);
    }

    private void AcceptGuestConnection(in VsockPacketHeader request)
    {
        if (_connections.Count >= MaxConnections)
        {
            _log.Warning("vsock: refusing the guest's connection to host port {Port}: {Max} connections are open", request.DstPort, MaxConnections);
            QueueOrphanRst(request.DstPort, request.SrcPort);
            return;
        }
        var socket = UnixSocket.TryConnect($"{SocketPath}_{request.DstPort}");
        if (socket is null)
        {
            _log.Debug("vsock: the guest connected to host port {Port}, where nobody listens; answering RST", request.DstPort);
            QueueOrphanRst(request.DstPort, request.SrcPort);
            return;
        }
        EnqueueRx(Track(VsockConnection.GuestInitiated(_guestCid, request), socket));
    }

    // ---------------------------------------------------------------- to the guest (its receive buffers)

    /// <summary>
    /// The next packet for a guest receive buffer whose payload area is <paramref name="payloadRoom"/>
    /// (host data is read straight into it), connections taking turns. False when nobody had anything after all.
    /// </summary>
    public bool TryTakePacketForGuest(Span<byte> payloadRoom, out VsockPacketHeader packet)
    {
        if (_orphanRsts.TryDequeue(out var rst))
        {
            packet = VsockPacketHeader.ToGuest(_guestCid, rst.Local, rst.Peer, VsockOp.Rst);
            return true;
        }
        while (_rxReady.TryDequeue(out var h))
        {
            h.InRxQueue = false;
            if (TryTakePacket(h, payloadRoom, out packet))
            {
                EnqueueRx(h); // more to say: back of the line, so connections share the buffers
                return true;
            }
        }
        packet = default;
        return false;
    }

    /// <summary>This connection's next packet; false when it turned out to have nothing.</summary>
    private bool TryTakePacket(HostEnd h, Span<byte> payloadRoom, out VsockPacketHeader packet)
    {
        var c = h.Connection;
        while (true)
        {
            if (c.NextPacketToGuest(payloadRoom.Length, out int readLimit) is { } control)
            {
                packet = control;
                return true;
            }
            packet = default;
            if (readLimit == 0) return false;
            int n = h.Socket.Receive(payloadRoom[..readLimit]);
            if (n > 0)
            {
                packet = c.OnHostDataRead(n);
                return true;
            }
            // Would block, or end of stream: the connection now owes SHUTDOWN or nothing, never data.
            Apply(h, c.OnHostReadNothing(endOfStream: n == 0));
        }
    }

    private void EnqueueRx(HostEnd h)
    {
        if (h.InRxQueue || !h.Connection.HasPacketForGuest) return;
        h.InRxQueue = true;
        _rxReady.Enqueue(h);
    }

    private void QueueOrphanRst(uint local, uint peer)
    {
        if (_orphanRsts.Count < MaxConnections) _orphanRsts.Enqueue((local, peer));
    }

    // ---------------------------------------------------------------- host side: Unix sockets

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
        if (!_guestAcceptsConnections())
        {
            _log.Debug("vsock: CONNECT {Port} before the guest driver is ready; closing (the client retries)", guestPort);
            socket.Dispose();
            return;
        }
        var h = Track(VsockConnection.HostInitiated(_guestCid, AllocateHostPort(), guestPort), socket);
        h.Timer = _loop.Schedule(ResponseTimeout, () =>
        {
            if (h.Removed) return;
            var effects = h.Connection.OnResponseTimeout();
            if (effects == VsockHostEffects.None) return;
            _log.Debug("vsock: guest port {Port} did not answer within {Timeout}; closing the host connection", guestPort, ResponseTimeout);
            Apply(h, effects);
            _packetsForGuest(); // nothing else will deliver the RST
        });
        EnqueueRx(h);
        _packetsForGuest();
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

    private HostEnd Track(VsockConnection c, UnixSocket socket)
    {
        var h = new HostEnd(c, socket);
        _connections[(c.LocalPort, c.PeerPort)] = h;
        if (c.LocalPort >= FirstHostPort) _hostPortsInUse.Add(c.LocalPort);
        h.LoopToken = _loop.Add(socket.Handle, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, events => OnHostSocketEvent(h, events));
        return h;
    }

    private void OnHostSocketEvent(HostEnd h, uint events)
    {
        if (h.Removed) return;
        var c = h.Connection;
        c.OnHostSocketReady(
            readable: (events & (uint)(EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0,
            hungUp: (events & (uint)(EPOLLHUP | EPOLLERR)) != 0);
        if ((events & (uint)EPOLLOUT) != 0 && c.PendingToHost > 0) Apply(h, FlushToHost(h));
        EnqueueRx(h);
        _packetsForGuest();
    }

    /// <summary>Writes the guest bytes the host socket could not take before, as far as it takes them now.</summary>
    private static VsockHostEffects FlushToHost(HostEnd h)
    {
        var effects = VsockHostEffects.None;
        while (h.Connection.PendingToHost > 0)
        {
            int sent = h.Socket.Send(h.Connection.PendingToHostBytes);
            if (sent == UnixSocket.Broken) return h.Connection.Abort();
            if (sent == UnixSocket.WouldBlock) break;
            effects |= h.Connection.OnHostTookPending(sent);
        }
        return effects;
    }

    /// <summary>
    /// Carries out what the connection decided, in <see cref="VsockHostEffects"/> order; a host
    /// socket that fails on the way resets the connection. <paramref name="payload"/> is the
    /// guest's RW payload for <see cref="VsockHostEffects.ForwardPayload"/>.
    /// </summary>
    private void Apply(HostEnd h, VsockHostEffects effects, ReadOnlySpan<byte> payload = default)
    {
        if (effects == VsockHostEffects.None) return;
        var c = h.Connection;
        if ((effects & VsockHostEffects.CancelTimer) != 0)
        {
            h.Timer?.Cancel();
            h.Timer = null;
        }
        if ((effects & VsockHostEffects.SendOkLine) != 0)
        {
            var ok = HybridVsockHandshake.OkLine(c.LocalPort);
            // A fresh socket with an empty buffer takes a dozen bytes, or the client is gone.
            if (h.Socket.Send(ok) == ok.Length) _log.Debug("vsock: host port {Local} connected to guest port {Peer}", c.LocalPort, c.PeerPort);
            else effects |= c.Abort();
        }
        if ((effects & VsockHostEffects.ForwardPayload) != 0)
        {
            // Straight from the guest's buffer while nothing older waits; what the socket does not take waits for EPOLLOUT.
            int took = 0;
            if (c.PendingToHost == 0 && !payload.IsEmpty) took = h.Socket.Send(payload);
            if (took == UnixSocket.Broken) effects |= c.Abort();
            else c.OnGuestPayload(payload, Math.Max(took, 0));
        }
        if ((effects & VsockHostEffects.ShutdownHostWrite) != 0) h.Socket.ShutdownSend();
        if ((effects & VsockHostEffects.StartShutdownTimer) != 0 && !h.Removed) h.Timer ??= _loop.Schedule(ShutdownTimeout, () => OnShutdownTimeout(h));
        if ((effects & VsockHostEffects.Reset) != 0)
        {
            Remove(h);
            QueueOrphanRst(c.LocalPort, c.PeerPort);
        }
        else if ((effects & VsockHostEffects.Close) != 0) Remove(h);
    }

    private void OnShutdownTimeout(HostEnd h)
    {
        Apply(h, h.Connection.OnShutdownTimeout());
        _packetsForGuest(); // nothing else will deliver the RST
    }

    /// <summary>Forgets a connection and closes its host socket; the caller decides whether the guest hears RST.</summary>
    private void Remove(HostEnd h)
    {
        if (h.Removed) return;
        h.Removed = true;
        h.Connection.Close();
        _connections.Remove((h.Connection.LocalPort, h.Connection.PeerPort));
        _hostPortsInUse.Remove(h.Connection.LocalPort);
        _loop.Remove(h.Socket.Handle, h.LoopToken);
        h.Timer?.Cancel();
        h.Socket.Dispose();
    }

    /// <summary>The guest's driver reset the device: every connection is gone (the guest dropped its side too), nothing is owed to it.</summary>
    public void Reset()
    {
        foreach (var h in _connections.Values.ToList()) Remove(h);
        _rxReady.Clear();
        _orphanRsts.Clear();
    }

    public void Dispose()
    {
        foreach (var h in _connections.Values.ToList()) Remove(h);
        foreach (var handshake in _handshakes.ToList()) DropHandshake(handshake);
        _loop.Remove(_listener.Handle, _listenerToken);
        _listener.Dispose();
        try { File.Delete(SocketPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Vsock;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// A hostile guest (and host programs) against the vsock device on a running event loop. The
/// input is a list of operations, each an op byte (kind in bits 0-2) and its operands:
/// 0 a tx packet (44 header bytes, u16 payload length, payload; bit 3 payload in its own
/// descriptor, bit 4 header split in two), 1 the guest reads its receive queue and reposts the buffers, 2 the host accepts what
/// the guest connected to its port 5000 and writes u8*16 bytes, 3 the host closes its newest
/// socket (bit 3: only shuts down writing), 4 a host program connects with <c>CONNECT u16\n</c>,
/// 5 the same, answering what it received (RESPONSE to each REQUEST, or RST with bit 3; a credit
/// update after data with bit 4), 6 a host program connects and writes u8%40 raw bytes, 7 four
/// bytes scribbled over the rings, then a notify of queue (bits 3-4)%3. No error may be logged,
/// the device writes only well-formed packets into well-formed buffers, connections stay
/// bounded, and after a reset none is left.
/// </summary>
public sealed class VsockPacketTarget : IFuzzTarget
{
    private const ulong GuestCid = 3;
    private const ushort QueueSize = 64;
    private const ulong RxDesc = 0x1000, RxAvail = 0x2000, RxUsed = 0x3000;
    private const ulong TxDesc = 0x5000, TxAvail = 0x6000, TxUsed = 0x7000;
    private const ulong EvDesc = 0x9000, EvAvail = 0xA000, EvUsed = 0xB000;
    private const ulong RxBuffers = 0x100000, TxBuffers = 0x200000;
    private const int RxDataSize = 4096, RxPairs = QueueSize / 2, TxSlots = 16, MaxTxPayload = 0xFF00, MaxOps = 256;
    public const uint ListenPort = 5000;

    private readonly Lazy<State> _state = new(() => new State());

    public string Name => "vsock-packet";
    public string Covers => "VsockDevice (tx validation, rx fill), HybridVsockMuxer (connections, host sockets), VsockConnection (credit, shutdown), the hybrid CONNECT handshake";

    private sealed class State
    {
        public readonly string Root = FuzzTargets.ScratchDirectory("vsock-packet");
        public readonly ErrorTrap Trap = new();
        public readonly GuestMemory Memory = GuestMemory.Allocate([(0, 8 << 20)]);
        public readonly EventLoop Loop;
        public readonly VsockDevice Device;
        public readonly Socket Listener;
        public readonly List<Socket> HostSockets = [];
        public ushort RxAvailIdx, RxUsedSeen, TxAvailIdx;
        public bool Scribbled;

        public string SocketPath => Path.Join(Root, "v.sock");

        /// <summary>
        /// Runs <paramref name="action"/> on the device's loop, then lets the loop handle what it set
        /// off (a socket it registered reports ready at once): the device is idle when this returns,
        /// so no instrumented code runs on two threads at a time and a run's coverage is its own.
        /// </summary>
        public void OnLoop(Action action)
        {
            Loop.Invoke(action);
            Settle();
        }

        /// <summary>Lets the loop handle every event that is already due (twice: a handler may set off another).</summary>
        public void Settle()
        {
            Loop.Invoke(() => { });
            Loop.Invoke(() => { });
        }

        public State()
        {
            Loop = new EventLoop(Trap.Logger);
            Device = new VsockDevice(Memory, GuestCid, SocketPath, Loop, Trap.Logger);
            Listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            Listener.Bind(new UnixDomainSocketEndPoint($"{SocketPath}_{ListenPort}"));
            Listener.Listen(1024);
            Listener.Blocking = false;
            Loop.Start();
        }
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        var s = _state.Value;
        s.Trap.Clear();
        Start(s);
        try
        {
            var r = new InputReader(input);
            for (int ops = 0; ops < MaxOps && !r.AtEnd; ops++)
            {
                byte op = r.U8();
                switch (op & 7)
                {
                    case 0: SendPacket(s, op, r.Padded(VsockPacketHeader.Size), r.Bytes(Math.Min((int)r.U16(), MaxTxPayload))); break;
                    case 1: GuestReceive(s, answer: false, rst: false, credit: false); break;
                    case 2: HostAcceptAndWrite(s, r.U8() * 16); break;
                    case 3: HostClose(s, shutdownOnly: (op & 8) != 0); break;
                    case 4: HostConnect(s, Encoding.ASCII.GetBytes($"CONNECT {r.U16()}\n")); break;
                    case 5: GuestReceive(s, answer: true, rst: (op & 8) != 0, credit: (op & 16) != 0); break;
                    case 6: HostConnect(s, r.Bytes(r.U8() % 40)); break;
                    default: Scribble(s, r.U16(), r.Bytes(4), (op >> 3) % 3); break;
                }
                if (s.Device.ConnectionCount > HybridVsockMuxer.MaxConnections)
                    throw new FuzzFindingException($"{s.Device.ConnectionCount} connections, more than {HybridVsockMuxer.MaxConnections}");
            }
            GuestReceive(s, answer: false, rst: false, credit: false); // checks whatever the device wrote last
        }
        finally
        {
            Stop(s);
        }
        FuzzLog.Note($"vsock-packet: {s.Device.MalformedPackets} malformed packets so far");
        s.Trap.ThrowIfAny("the vsock device");
        if (s.Device.ConnectionCount != 0) throw new FuzzFindingException($"{s.Device.ConnectionCount} connections survived a reset");
    }

    private static void Start(State s)
    {
        s.Memory.GetSpan(RxDesc, (int)(EvUsed + 0x1000 - RxDesc)).Clear();
        s.RxAvailIdx = s.RxUsedSeen = s.TxAvailIdx = 0;
        s.Scribbled = false;
        s.OnLoop(() => s.Device.Activate(0,
        [
            new SplitQueue(s.Memory, QueueSize, RxDesc, RxAvail, RxUsed),
            new SplitQueue(s.Memory, QueueSize, TxDesc, TxAvail, TxUsed),
            new SplitQueue(s.Memory, QueueSize, EvDesc, EvAvail, EvUsed),
        ], _ => { }));
        RefillRx(s);
    }

    /// <summary>Every host end closed, what the guest connected to our port refused, then the driver resets the device.</summary>
    private static void Stop(State s)
    {
        foreach (var socket in s.HostSockets) socket.Dispose();
        s.HostSockets.Clear();
        while (Accept(s) is { } late) late.Dispose();
        s.Settle(); // the device sees the hang-ups
        s.OnLoop(s.Device.Reset);
    }

    private static Socket? Accept(State s)
    {
        try { return s.Listener.Accept(); }
        catch (SocketException) { return null; }
    }

    private static void SendPacket(State s, byte op, byte[] header, ReadOnlySpan<byte> payload)
    {
        int slot = s.TxAvailIdx % TxSlots;
        ushort head = (ushort)(slot * 2);
        ulong buffer = TxBuffers + (ulong)slot * 0x10000;
        s.Memory.Write(buffer, header);
        s.Memory.Write(buffer + VsockPacketHeader.Size, payload);
        var parts = new List<(ulong Address, uint Length)>();
        if ((op & 16) != 0) parts.AddRange([(buffer, 20), (buffer + 20, VsockPacketHeader.Size - 20)]);
        else parts.Add((buffer, VsockPacketHeader.Size));
        if ((op & 8) != 0 && !payload.IsEmpty) parts.Add((buffer + VsockPacketHeader.Size, (uint)payload.Length));
        else parts[^1] = (parts[^1].Address, parts[^1].Length + (uint)payload.Length);
        // Slot i uses descriptors 2i, 2i+1 and 2*TxSlots+i: slots never share one.
        ushort[] indexes = [head, (ushort)(head + 1), (ushort)(2 * TxSlots + slot)];
        for (int i = 0; i < parts.Count; i++)
        {
            bool last = i == parts.Count - 1;
            Descriptor(s.Memory, TxDesc, indexes[i], parts[i].Address, parts[i].Length, (ushort)(last ? 0 : 1), last ? (ushort)0 : indexes[i + 1]);
        }
        s.Memory.WriteU16(TxAvail + 4 + 2UL * (ushort)(s.TxAvailIdx % QueueSize), head);
        s.TxAvailIdx++;
        s.Memory.WriteU16(TxAvail + 2, s.TxAvailIdx);
        s.OnLoop(() => s.Device.OnNotify(VsockDevice.TxQueue));
    }

    /// <summary>
    /// Tops the receive queue up to its buffer pairs (a 44-byte header buffer and a 4 KiB data
    /// buffer, as Linux posts them). As in Linux, only buffers the guest has read are posted again.
    /// </summary>
    private static void RefillRx(State s)
    {
        int outstanding = (ushort)(s.RxAvailIdx - s.RxUsedSeen);
        for (int i = outstanding; i < RxPairs; i++)
        {
            ushort slot = (ushort)(s.RxAvailIdx % RxPairs);
            ushort head = (ushort)(slot * 2);
            ulong buffer = RxBuffers + slot * (ulong)(RxDataSize + 64);
            Descriptor(s.Memory, RxDesc, head, buffer, VsockPacketHeader.Size, 2 | 1, (ushort)(head + 1));
            Descriptor(s.Memory, RxDesc, (ushort)(head + 1), buffer + 64, RxDataSize, 2, 0);
            s.Memory.WriteU16(RxAvail + 4 + 2UL * (ushort)(s.RxAvailIdx % QueueSize), head);
            s.RxAvailIdx++;
        }
        s.Memory.WriteU16(RxAvail + 2, s.RxAvailIdx);
        s.OnLoop(() => s.Device.OnNotify(VsockDevice.RxQueue));
    }

    private static void HostAcceptAndWrite(State s, int bytes)
    {
        while (Accept(s) is { } accepted)
        {
            accepted.Blocking = false;
            s.HostSockets.Add(accepted);
        }
        if (bytes > 0 && s.HostSockets.Count > 0)
        {
            var data = new byte[bytes];
            for (int i = 0; i < data.Length; i++) data[i] = (byte)i;
            try { s.HostSockets[^1].Send(data); }
            catch (SocketException) { } // full, or the device closed its end
            catch (ObjectDisposedException) { }
        }
        s.Settle();
    }

    private static void HostClose(State s, bool shutdownOnly)
    {
        if (s.HostSockets.Count == 0) return;
        var socket = s.HostSockets[^1];
        if (shutdownOnly)
        {
            try { socket.Shutdown(SocketShutdown.Send); }
            catch (SocketException) { }
        }
        else
        {
            socket.Dispose();
            s.HostSockets.RemoveAt(s.HostSockets.Count - 1);
        }
        s.Settle();
    }

    private static void HostConnect(State s, ReadOnlySpan<byte> line)
    {
        var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            client.Connect(new UnixDomainSocketEndPoint(s.SocketPath));
            client.Blocking = false;
            if (!line.IsEmpty) client.Send(line);
        }
        catch (SocketException) { } // the device refused it: too many handshakes
        s.HostSockets.Add(client);
        s.Settle();
    }

    /// <summary>Reads what the device put in the receive queue, checks each packet, answers as a guest would (when asked), reposts the buffers.</summary>
    private static void GuestReceive(State s, bool answer, bool rst, bool credit)
    {
        var answers = new List<byte[]>();
        s.Settle();
        ushort usedIdx = BinaryPrimitives.ReadUInt16LittleEndian(s.Memory.GetSpan(RxUsed + 2, 2));
        uint received = 0;
        for (int guard = 0; s.RxUsedSeen != usedIdx && guard < QueueSize; guard++)
        {
            var element = s.Memory.GetSpan(RxUsed + 4 + 8UL * (ushort)(s.RxUsedSeen % QueueSize), 8);
            s.RxUsedSeen++;
            uint head = BinaryPrimitives.ReadUInt32LittleEndian(element);
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(element[4..]);
            if (s.Scribbled) continue; // the guest broke its own rings: nothing to hold the device to
            if (head >= QueueSize || head % 2 != 0) throw new FuzzFindingException($"the device used rx head {head}, never posted");
            if (length > VsockPacketHeader.Size + RxDataSize) throw new FuzzFindingException($"an rx packet of {length} bytes in a {VsockPacketHeader.Size + RxDataSize}-byte buffer");
            if (length < VsockPacketHeader.Size) throw new FuzzFindingException($"an rx packet of {length} bytes from the device");
            ulong buffer = RxBuffers + head / 2 * (ulong)(RxDataSize + 64);
            var h = VsockPacketHeader.Read(s.Memory.GetSpan(buffer, VsockPacketHeader.Size));
            if (h.SrcCid != VsockPacketHeader.HostCid || h.DstCid != GuestCid || h.Type != VsockPacketHeader.TypeStream
                || h.Op < VsockOp.Request || h.Op > VsockOp.CreditRequest || h.Length != length - VsockPacketHeader.Size
                || (h.Op == VsockOp.Rw) != (h.Length > 0))
                throw new FuzzFindingException($"the device wrote a malformed packet {h} in {length} bytes");
            FuzzLog.Note($"vsock-packet: device -> guest {h.Op} {h.SrcPort}->{h.DstPort} len {h.Length} flags {h.Flags}");
            if (!answer) continue;
            if (h.Op == VsockOp.Request)
                answers.Add(Packet(h.DstPort, h.SrcPort, rst ? VsockOp.Rst : VsockOp.Response, 0));
            if (h.Op == VsockOp.Rw)
            {
                received += h.Length;
                if (credit) answers.Add(Packet(h.DstPort, h.SrcPort, VsockOp.CreditUpdate, received));
            }
        }
        foreach (var a in answers) SendPacket(s, 0, a, []);
        RefillRx(s);
    }

    private static byte[] Packet(uint guestPort, uint hostPort, VsockOp op, uint fwdCnt, uint length = 0, uint flags = 0)
    {
        var bytes = new byte[VsockPacketHeader.Size];
        new VsockPacketHeader(GuestCid, VsockPacketHeader.HostCid, guestPort, hostPort, length, VsockPacketHeader.TypeStream, op, flags, 256 * 1024, fwdCnt).Write(bytes);
        return bytes;
    }

    private static void Scribble(State s, ushort offset, ReadOnlySpan<byte> bytes, int queue)
    {
        s.Scribbled = true;
        s.Memory.Write(RxDesc + (ulong)(offset % (EvUsed + 0x1000 - RxDesc - 4)), bytes);
        s.OnLoop(() => s.Device.OnNotify(queue));
    }

    private static void Descriptor(GuestMemory memory, ulong table, ushort index, ulong address, uint length, ushort flags, ushort next)
    {
        var d = memory.GetSpan(table + index * 16UL, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        static byte[] Tx(byte op, byte[] header, ReadOnlySpan<byte> payload) =>
            [op, .. header, (byte)payload.Length, (byte)(payload.Length >> 8), .. payload];
        const uint Guest = 40000;
        // The guest connects to the host's port 5000, sends data, the host answers, both shut down.
        yield return ("guest-connects", [
            .. Tx(0, Packet(Guest, ListenPort, VsockOp.Request, 0), []),
            2, 0,
            .. Tx(8, Packet(Guest, ListenPort, VsockOp.Rw, 0, 5), "hello"u8),
            2, 4,
            5 | 16,
            .. Tx(0, Packet(Guest, ListenPort, VsockOp.CreditRequest, 0), []),
            3 | 8,
            .. Tx(16, Packet(Guest, ListenPort, VsockOp.Shutdown, 0, 0, VsockPacketHeader.ShutdownReceive | VsockPacketHeader.ShutdownSend), []),
            5]);
        // A host program connects to guest port 1024; the guest accepts, then resets.
        yield return ("host-connects", [
            4, 0x00, 0x04,
            5,
            2, 2,
            .. Tx(0, Packet(1024, HybridVsockMuxer.FirstHostPort, VsockOp.Rst, 0), []),
            6, 9, .. "CONNECT x"u8,
            4, 0x35, 0x00,
            5 | 8]);
        // Malformed packets: wrong CID, unknown op, payload on a control packet, a lying length; a scribble.
        yield return ("malformed", [
            .. Tx(0, [.. Packet(Guest, ListenPort, VsockOp.Request, 0)[..8], .. new byte[8], .. Packet(Guest, ListenPort, VsockOp.Request, 0)[16..]], []),
            .. Tx(0, Packet(Guest, ListenPort, (VsockOp)9, 0), []),
            .. Tx(8, Packet(Guest, ListenPort, VsockOp.Response, 0, 3), "abc"u8),
            .. Tx(0, Packet(Guest, ListenPort, VsockOp.Rw, 0, 60000), "x"u8),
            7, 0x10, 0x10, 1, 2, 3, 4,
            1]);
    }
}

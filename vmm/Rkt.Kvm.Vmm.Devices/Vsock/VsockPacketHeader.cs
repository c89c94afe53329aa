using System.Buffers.Binary;

namespace Rkt.Kvm.Vmm.Devices.Vsock;

public enum VsockOp : ushort
{
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
}

/// <summary>
/// The 44-byte little-endian virtio-vsock packet header (virtio spec 5.10.6). <see cref="ValidateFromGuest"/>
/// applies the checks a packet on the guest's tx queue must pass before the device acts on it.
/// </summary>
public readonly record struct VsockPacketHeader(
    ulong SrcCid, ulong DstCid, uint SrcPort, uint DstPort, uint Length,
    ushort Type, VsockOp Op, uint Flags, uint BufAlloc, uint FwdCnt)
{
    public const int Size = 44;
    public const ushort TypeStream = 1;
    public const ulong HostCid = 2;
    /// <summary>Largest payload we accept in one packet (the Linux driver sends at most 64 KiB).</summary>
    public const uint MaxPayload = 64 * 1024;
    public const uint ShutdownReceive = 1, ShutdownSend = 2;

    /// <summary>
    /// A packet from the host to the guest's <paramref name="guestCid"/>: every packet the device
    /// puts on the rx queue is a STREAM packet addressed this way, whoever decided to send it.
    /// </summary>
    public static VsockPacketHeader ToGuest(ulong guestCid, uint hostPort, uint guestPort, VsockOp op,
        uint length = 0, uint flags = 0, uint bufAlloc = 0, uint fwdCnt = 0) =>
        new(HostCid, guestCid, hostPort, guestPort, length, TypeStream, op, flags, bufAlloc, fwdCnt);

    public static VsockPacketHeader Read(ReadOnlySpan<byte> b)
    {
        if (b.Length < Size) throw new ArgumentException($"A vsock header needs {Size} bytes, not {b.Length}.");
        return new VsockPacketHeader(
            BinaryPrimitives.ReadUInt64LittleEndian(b), BinaryPrimitives.ReadUInt64LittleEndian(b[8..]),
            BinaryPrimitives.ReadUInt32LittleEndian(b[16..]), BinaryPrimitives.ReadUInt32LittleEndian(b[20..]),
            BinaryPrimitives.ReadUInt32LittleEndian(b[24..]), BinaryPrimitives.ReadUInt16LittleEndian(b[28..]),
            (VsockOp)BinaryPrimitives.ReadUInt16LittleEndian(b[30..]), BinaryPrimitives.ReadUInt32LittleEndian(b[32..]),
            BinaryPrimitives.ReadUInt32LittleEndian(b[36..]), BinaryPrimitives.ReadUInt32LittleEndian(b[40..]));
    }

    public void Write(Span<byte> b)
    {
        if (b.Length < Size) throw new ArgumentException($"A vsock header needs {Size} bytes, not {b.Length}.");
        BinaryPrimitives.WriteUInt64LittleEndian(b, SrcCid);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], DstCid);
        BinaryPrimitives.WriteUInt32LittleEndian(b[16..], SrcPort);
        BinaryPrimitives.WriteUInt32LittleEndian(b[20..], DstPort);
        BinaryPrimitives.WriteUInt32LittleEndian(b[24..], Length);
        BinaryPrimitives.WriteUInt16LittleEndian(b[28..], Type);
        BinaryPrimitives.WriteUInt16LittleEndian(b[30..], (ushort)Op);
        BinaryPrimitives.WriteUInt32LittleEndian(b[32..], Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b[36..], BufAlloc);
        BinaryPrimitives.WriteUInt32LittleEndian(b[40..], FwdCnt);
    }

    /// <summary>Null when the guest's packet may be processed, else why it must be dropped (answered with RST where a connection is named).</summary>
    public string? ValidateFromGuest(ulong guestCid, long payloadAvailable)
    {
        if (SrcCid != guestCid) return $"source CID {SrcCid} is not the guest's CID {guestCid}";
        if (DstCid != HostCid) return $"destination CID {DstCid} is not the host";
        if (Type != TypeStream) return $"socket type {Type} is not STREAM";
        if (Op < VsockOp.Request || Op > VsockOp.CreditRequest) return $"unknown operation {(ushort)Op}";
        if (Op != VsockOp.Rw && Length != 0) return $"a {Op} packet carries {Length} payload bytes";
        if (Length > MaxPayload) return $"payload of {Length} bytes exceeds {MaxPayload}";
        if (Length > payloadAvailable) return $"payload of {Length} bytes exceeds the {payloadAvailable} bytes the guest supplied";
        if (Op == VsockOp.Shutdown && (Flags & ~(ShutdownReceive | ShutdownSend)) != 0) return $"shutdown flags 0x{Flags:X} are undefined";
        return null;
    }
}

using System.Buffers.Binary;

namespace Rkt.Kvm.Vmm.Devices.VirtioNet;

/// <summary>
/// struct virtio_net_hdr_v1 (virtio 1.x §5.1.6): 12 bytes, little-endian, in front of every frame on
/// both queues and, with TUNSETVNETHDRSZ 12, on the tap too, so a guest's tx header goes to the tap
/// as written and the tap's rx header comes to the guest with only num_buffers filled in by us.
/// </summary>
public readonly record struct VirtioNetHeader(byte Flags, byte GsoType, ushort HeaderLength, ushort GsoSize, ushort CsumStart, ushort CsumOffset, ushort NumBuffers)
{
    public const int Size = 12;
    public const int NumBuffersOffset = 10;

    public const byte FlagNeedsCsum = 1, FlagDataValid = 2;
    public const byte GsoNone = 0, GsoTcpV4 = 1, GsoUdp = 3, GsoTcpV6 = 4, GsoEcn = 0x80;

    public static VirtioNetHeader Read(ReadOnlySpan<byte> b) => new(
        b[0], b[1],
        BinaryPrimitives.ReadUInt16LittleEndian(b[2..]),
        BinaryPrimitives.ReadUInt16LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt16LittleEndian(b[6..]),
        BinaryPrimitives.ReadUInt16LittleEndian(b[8..]),
        BinaryPrimitives.ReadUInt16LittleEndian(b[NumBuffersOffset..]));

    public void Write(Span<byte> b)
    {
        b[0] = Flags;
        b[1] = GsoType;
        BinaryPrimitives.WriteUInt16LittleEndian(b[2..], HeaderLength);
        BinaryPrimitives.WriteUInt16LittleEndian(b[4..], GsoSize);
        BinaryPrimitives.WriteUInt16LittleEndian(b[6..], CsumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(b[8..], CsumOffset);
        BinaryPrimitives.WriteUInt16LittleEndian(b[NumBuffersOffset..], NumBuffers);
    }

    /// <summary>The tap leaves num_buffers unwritten (it only knows the 10-byte legacy header): the device sets it.</summary>
    public static void SetNumBuffers(Span<byte> header, ushort count) =>
        BinaryPrimitives.WriteUInt16LittleEndian(header[NumBuffersOffset..], count);
}

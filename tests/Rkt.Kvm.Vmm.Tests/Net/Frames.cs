using System.Buffers.Binary;
using System.Net;

namespace Rkt.Kvm.Vmm.Tests.Net;

/// <summary>Ethernet frames a test guest sends and expects: ARP, IPv4/UDP.</summary>
public static class Frames
{
    public const ushort EtherTypeIpv4 = 0x0800, EtherTypeArp = 0x0806;
    public static readonly byte[] Broadcast = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

    private static byte[] Ethernet(byte[] dst, byte[] src, ushort type, int payloadLength, out Span<byte> payload)
    {
        var frame = new byte[14 + payloadLength];
        dst.CopyTo(frame, 0);
        src.CopyTo(frame, 6);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), type);
        payload = frame.AsSpan(14);
        return frame;
    }

    /// <summary>"Who has <paramref name="target"/>? Tell <paramref name="senderIp"/>", broadcast.</summary>
    public static byte[] ArpRequest(byte[] senderMac, IPAddress senderIp, IPAddress target)
    {
        var frame = Ethernet(Broadcast, senderMac, EtherTypeArp, 28, out var arp);
        BinaryPrimitives.WriteUInt16BigEndian(arp, 1); // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(arp[2..], EtherTypeIpv4);
        arp[4] = 6;
        arp[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(arp[6..], 1); // request
        senderMac.CopyTo(arp[8..]);
        senderIp.GetAddressBytes().CopyTo(arp[14..]);
        target.GetAddressBytes().CopyTo(arp[24..]);
        return frame;
    }

    /// <summary>An ARP reply from <paramref name="from"/> to the MAC <paramref name="to"/>; returns the MAC it announces, or null.</summary>
    public static byte[]? ArpReplyFrom(byte[] frame, IPAddress from, byte[] to)
    {
        if (frame.Length < 42 || BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)) != EtherTypeArp) return null;
        var arp = frame.AsSpan(14);
        if (BinaryPrimitives.ReadUInt16BigEndian(arp[6..]) != 2 || !arp.Slice(14, 4).SequenceEqual(from.GetAddressBytes())) return null;
        if (!frame.AsSpan(0, 6).SequenceEqual(to)) return null;
        return arp.Slice(8, 6).ToArray();
    }

    /// <summary>IPv4/UDP with a correct IP header checksum and no UDP checksum (0 is allowed over IPv4).</summary>
    public static byte[] Udp(byte[] srcMac, byte[] dstMac, IPAddress src, IPAddress dst, ushort srcPort, ushort dstPort, byte[] payload)
    {
        var frame = Ethernet(dstMac, srcMac, EtherTypeIpv4, 28 + payload.Length, out var ip);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(28 + payload.Length));
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000); // don't fragment
        ip[8] = 64;
        ip[9] = 17;
        src.GetAddressBytes().CopyTo(ip[12..]);
        dst.GetAddressBytes().CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip[..20]));
        var udp = ip[20..];
        BinaryPrimitives.WriteUInt16BigEndian(udp, srcPort);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], dstPort);
        BinaryPrimitives.WriteUInt16BigEndian(udp[4..], (ushort)(8 + payload.Length));
        payload.CopyTo(udp[8..]);
        return frame;
    }

    /// <summary>The payload of a UDP/IPv4 frame to <paramref name="port"/>, or null.</summary>
    public static byte[]? UdpPayloadTo(byte[] frame, ushort port)
    {
        if (frame.Length < 42 || BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)) != EtherTypeIpv4 || frame[23] != 17) return null;
        int ihl = (frame[14] & 0xF) * 4;
        var udp = frame.AsSpan(14 + ihl);
        if (BinaryPrimitives.ReadUInt16BigEndian(udp[2..]) != port) return null;
        int length = BinaryPrimitives.ReadUInt16BigEndian(udp[4..]);
        return udp.Slice(8, length - 8).ToArray();
    }

    public static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (int i = 0; i + 1 < data.Length; i += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        if (data.Length % 2 == 1) sum += (uint)data[^1] << 8;
        while (sum > 0xFFFF) sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)~sum;
    }
}

using System.Buffers.Binary;
using System.Net;
using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent.Network;

/// <summary>An IPv4 address with a prefix length ("172.16.28.2/24").</summary>
internal readonly record struct Ipv4Prefix(IPAddress Address, int Length)
{
    public override string ToString() => $"{Address}/{Length}";
}

/// <summary>A link from an RTM_GETLINK dump.</summary>
internal sealed record NetLink(int Index, string Name, string Mac, uint Flags);

/// <summary>A netlink request the kernel answered with an error.</summary>
internal sealed class NetlinkException(string message, int errno) : IOException(message)
{
    public int Errno { get; } = errno;
}

/// <summary>
/// The rtnetlink messages the agent sends, as pure byte builders and parsers over the uapi layouts
/// (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h). Native byte order
/// (the agent is linux-x64 only); IPv4 addresses in network order. Every message and attribute is
/// padded to 4 bytes (NLMSG_ALIGN, RTA_ALIGN).
/// </summary>
internal static class RtNetlink
{
    public const int AF_NETLINK = 16, SOCK_RAW = 3, NETLINK_ROUTE = 0;
    public const byte AF_UNSPEC = 0, AF_INET = 2;

    public const int NlmsghdrSize = 16, IfinfomsgSize = 16, IfaddrmsgSize = 8, RtmsgSize = 12, RtattrSize = 4;

    public const ushort NLMSG_ERROR = 2, NLMSG_DONE = 3;
    public const ushort RTM_NEWLINK = 16, RTM_GETLINK = 18, RTM_NEWADDR = 20, RTM_NEWROUTE = 24;
    public const ushort NLM_F_REQUEST = 0x1, NLM_F_MULTI = 0x2, NLM_F_ACK = 0x4, NLM_F_DUMP = 0x300, NLM_F_EXCL = 0x200, NLM_F_CREATE = 0x400;

    public const uint IFF_UP = 0x1;
    public const ushort IFLA_ADDRESS = 1, IFLA_IFNAME = 3, IFLA_MTU = 4;
    public const ushort IFA_ADDRESS = 1, IFA_LOCAL = 2, IFA_FLAGS = 8;
    public const uint IFA_F_NOPREFIXROUTE = 0x200;
    public const ushort RTA_DST = 1, RTA_OIF = 4, RTA_GATEWAY = 5;
    public const byte RT_TABLE_MAIN = 254, RTPROT_BOOT = 3, RT_SCOPE_UNIVERSE = 0, RT_SCOPE_LINK = 253, RTN_UNICAST = 1;

    /// <summary>The loopback device is ifindex 1 in every network namespace (LOOPBACK_IFINDEX).</summary>
    public const int LoopbackIndex = 1;

    public static string TypeName(ushort type) => type switch
    {
        RTM_NEWLINK => "RTM_NEWLINK", RTM_GETLINK => "RTM_GETLINK", RTM_NEWADDR => "RTM_NEWADDR", RTM_NEWROUTE => "RTM_NEWROUTE",
        _ => type.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>RTM_NEWLINK on an existing link (no NLM_F_CREATE, as `ip link set`): IFF_UP in ifi_flags and
    /// ifi_change, and IFLA_MTU when <paramref name="mtu"/> is not 0.</summary>
    public static byte[] SetLinkUp(uint seq, int index, uint mtu)
    {
        var m = new Writer(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.U8(AF_UNSPEC).U8(0).U16(0).I32(index).U32(IFF_UP).U32(IFF_UP); // struct ifinfomsg
        if (mtu != 0) m.AttrU32(IFLA_MTU, mtu);
        return m.ToArray();
    }

    /// <summary>RTM_NEWLINK on an existing link clearing IFF_UP (ifi_change IFF_UP, ifi_flags 0), as `ip link set down`.</summary>
    public static byte[] SetLinkDown(uint seq, int index)
    {
        var m = new Writer(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.U8(AF_UNSPEC).U8(0).U16(0).I32(index).U32(0).U32(IFF_UP);
        return m.ToArray();
    }

    /// <summary>RTM_NEWLINK on an existing link with IFLA_ADDRESS (its MAC) and no flag change, as `ip link set
    /// address`.</summary>
    public static byte[] SetLinkAddress(uint seq, int index, ReadOnlySpan<byte> mac)
    {
        var m = new Writer(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.U8(AF_UNSPEC).U8(0).U16(0).I32(index).U32(0).U32(0);
        m.Attr(IFLA_ADDRESS, mac);
        return m.ToArray();
    }

    /// <summary>RTM_GETLINK dump of every link.</summary>
    public static byte[] GetLinks(uint seq)
    {
        var m = new Writer(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq);
        m.U8(AF_UNSPEC).U8(0).U16(0).I32(0).U32(0).U32(0);
        return m.ToArray();
    }

    /// <summary>RTM_NEWADDR: IFA_LOCAL and IFA_ADDRESS (the same on a non-point-to-point link) and IFA_FLAGS
    /// with IFA_F_NOPREFIXROUTE (a u32 attribute: the flag does not fit ifa_flags).</summary>
    public static byte[] NewAddress(uint seq, int index, Ipv4Prefix address)
    {
        var m = new Writer(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq);
        m.U8(AF_INET).U8((byte)address.Length).U8(0).U8(RT_SCOPE_UNIVERSE).I32(index); // struct ifaddrmsg
        m.Attr(IFA_LOCAL, Ipv4Bytes(address.Address));
        m.Attr(IFA_ADDRESS, Ipv4Bytes(address.Address));
        m.AttrU32(IFA_FLAGS, IFA_F_NOPREFIXROUTE);
        return m.ToArray();
    }

    /// <summary>RTM_NEWROUTE in the main table: a link-scope route out of <paramref name="index"/> without a gateway,
    /// a universe route via the gateway with one. No RTA_DST for the default route (dst_len 0), as iproute2.</summary>
    public static byte[] NewRoute(uint seq, int index, Ipv4Prefix destination, IPAddress? gateway)
    {
        var m = new Writer(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
        m.U8(AF_INET).U8((byte)destination.Length).U8(0).U8(0)
            .U8(RT_TABLE_MAIN).U8(RTPROT_BOOT).U8(gateway is null ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE).U8(RTN_UNICAST).U32(0);
        if (destination.Length > 0) m.Attr(RTA_DST, Ipv4Bytes(destination.Address));
        if (gateway is not null) m.Attr(RTA_GATEWAY, Ipv4Bytes(gateway));
        m.AttrU32(RTA_OIF, (uint)index);
        return m.ToArray();
    }

    private static byte[] Ipv4Bytes(IPAddress address)
    {
        byte[] bytes = address.GetAddressBytes();
        return bytes.Length == 4 ? bytes : throw new ArgumentException($"{address} is not an IPv4 address.");
    }

    public static int Align(int length) => (length + 3) & ~3;

    /// <summary>Looks through a reply for the NLMSG_ERROR answering <paramref name="seq"/>: null when it is not
    /// there, 0 for an ack, else the errno.</summary>
    public static int? FindAck(ReadOnlySpan<byte> reply, uint seq)
    {
        for (int offset = 0; offset + NlmsghdrSize <= reply.Length;)
        {
            var (length, type, _, messageSeq) = Header(reply[offset..]);
            if (length < NlmsghdrSize || offset + length > reply.Length) break;
            if (type == NLMSG_ERROR && messageSeq == seq && length >= NlmsghdrSize + 4)
                return -BinaryPrimitives.ReadInt32LittleEndian(reply[(offset + NlmsghdrSize)..]);
            offset += Align(length);
        }
        return null;
    }

    /// <summary>Adds the links of one RTM_GETLINK dump reply to <paramref name="links"/>. Returns true at NLMSG_DONE;
    /// throws <see cref="NetlinkException"/> for an NLMSG_ERROR.</summary>
    public static bool ParseLinks(ReadOnlySpan<byte> reply, uint seq, List<NetLink> links)
    {
        for (int offset = 0; offset + NlmsghdrSize <= reply.Length;)
        {
            var (length, type, _, messageSeq) = Header(reply[offset..]);
            if (length < NlmsghdrSize || offset + length > reply.Length)
                throw new NetlinkException($"netlink RTM_GETLINK: malformed reply (message of {length} bytes at {offset} of {reply.Length})", Libc.EINVAL);
            var message = reply.Slice(offset, length);
            offset += Align(length);
            if (messageSeq != seq) continue;
            if (type == NLMSG_DONE) return true;
            if (type == NLMSG_ERROR)
            {
                int errno = message.Length >= NlmsghdrSize + 4 ? -BinaryPrimitives.ReadInt32LittleEndian(message[NlmsghdrSize..]) : Libc.EINVAL;
                throw new NetlinkException($"netlink RTM_GETLINK: {Libc.Describe(errno)}", errno);
            }
            if (type != RTM_NEWLINK || message.Length < NlmsghdrSize + IfinfomsgSize) continue;
            var info = message[NlmsghdrSize..];
            int index = BinaryPrimitives.ReadInt32LittleEndian(info[4..]);
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(info[8..]);
            string name = "", mac = "";
            foreach (var (attrType, payload) in Attributes(info[IfinfomsgSize..]))
            {
                if (attrType == IFLA_IFNAME) name = System.Text.Encoding.UTF8.GetString(payload, 0, Array.IndexOf(payload, (byte)0) is int end and >= 0 ? end : payload.Length);
                else if (attrType == IFLA_ADDRESS) mac = FormatMac(payload);
            }
            links.Add(new NetLink(index, name, mac, flags));
        }
        return false;
    }

    private static (int Length, ushort Type, ushort Flags, uint Seq) Header(ReadOnlySpan<byte> m) =>
        ((int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(m), int.MaxValue), BinaryPrimitives.ReadUInt16LittleEndian(m[4..]),
            BinaryPrimitives.ReadUInt16LittleEndian(m[6..]), BinaryPrimitives.ReadUInt32LittleEndian(m[8..]));

    private static List<(ushort Type, byte[] Payload)> Attributes(ReadOnlySpan<byte> data)
    {
        var list = new List<(ushort, byte[])>();
        for (int offset = 0; offset + RtattrSize <= data.Length;)
        {
            int length = BinaryPrimitives.ReadUInt16LittleEndian(data[offset..]);
            if (length < RtattrSize || offset + length > data.Length) break;
            list.Add(((ushort)(BinaryPrimitives.ReadUInt16LittleEndian(data[(offset + 2)..]) & 0x3fff), // without NLA_F_NESTED/NET_BYTEORDER
                data.Slice(offset + RtattrSize, length - RtattrSize).ToArray()));
            offset += Align(length);
        }
        return list;
    }

    public static string FormatMac(ReadOnlySpan<byte> bytes)
    {
        var text = new System.Text.StringBuilder(bytes.Length * 3);
        foreach (byte b in bytes) (text.Length > 0 ? text.Append(':') : text).Append(b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
        return text.ToString();
    }

    /// <summary>Builds one netlink message: the header (length filled in at the end), the family header, attributes.</summary>
    private sealed class Writer
    {
        private byte[] _buffer = new byte[64];
        private int _length;

        public Writer(ushort type, ushort flags, uint seq) => U32(0).U16(type).U16(flags).U32(seq).U32(0); // nlmsg_pid 0: the kernel fills it

        private Span<byte> Take(int count)
        {
            if (_length + count > _buffer.Length) Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + count));
            var span = _buffer.AsSpan(_length, count);
            _length += count;
            return span;
        }

        public Writer U8(byte value) { Take(1)[0] = value; return this; }
        public Writer U16(ushort value) { BinaryPrimitives.WriteUInt16LittleEndian(Take(2), value); return this; }
        public Writer U32(uint value) { BinaryPrimitives.WriteUInt32LittleEndian(Take(4), value); return this; }
        public Writer I32(int value) { BinaryPrimitives.WriteInt32LittleEndian(Take(4), value); return this; }

        public Writer Attr(ushort type, ReadOnlySpan<byte> payload)
        {
            U16((ushort)(RtattrSize + payload.Length)).U16(type);
            payload.CopyTo(Take(payload.Length));
            Take(Align(payload.Length) - payload.Length).Clear();
            return this;
        }

        public Writer AttrU32(ushort type, uint value)
        {
            Span<byte> payload = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(payload, value);
            return Attr(type, payload);
        }

        public byte[] ToArray()
        {
            BinaryPrimitives.WriteUInt32LittleEndian(_buffer, (uint)_length);
            return _buffer.AsSpan(0, _length).ToArray();
        }
    }
}

/// <summary>An rtnetlink socket (AF_NETLINK, SOCK_RAW, NETLINK_ROUTE) in the calling thread's network namespace.
/// Synchronous on purpose: the network namespace of a socket is that of the thread that made it.</summary>
internal sealed unsafe class RtNetlinkSocket : IDisposable
{
    private const int ReceiveBufferSize = 64 * 1024; // a link dump sends up to ~32 KiB per read
    private int _fd;
    private uint _seq;
    private byte[]? _buffer;

    private RtNetlinkSocket(int fd) => _fd = fd;

    public static RtNetlinkSocket Open()
    {
        int fd = Libc.socket(RtNetlink.AF_NETLINK, RtNetlink.SOCK_RAW | Libc.SOCK_CLOEXEC, RtNetlink.NETLINK_ROUTE);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new NetlinkException($"netlink socket: {Libc.Describe(errno)}", errno);
        }
        return new RtNetlinkSocket(fd);
    }

    public uint NextSeq() => ++_seq;

    /// <summary>Sends a request built with NLM_F_ACK and its <paramref name="seq"/>, waits for the ack, and throws
    /// "netlink &lt;what&gt;: &lt;error&gt; (errno N)" for a non-zero error.</summary>
    public void Request(byte[] message, uint seq, string what)
    {
        Send(message, what);
        while (true)
        {
            int? errno = RtNetlink.FindAck(Receive(what), seq);
            if (errno is null) continue;
            if (errno != 0) throw new NetlinkException($"netlink {what}: {Libc.Describe(errno.Value)}", errno.Value);
            return;
        }
    }

    /// <summary>Every link of the namespace (RTM_GETLINK dump).</summary>
    public List<NetLink> Links()
    {
        uint seq = NextSeq();
        Send(RtNetlink.GetLinks(seq), "RTM_GETLINK");
        var links = new List<NetLink>();
        while (!RtNetlink.ParseLinks(Receive("RTM_GETLINK"), seq, links)) { }
        return links;
    }

    private void Send(byte[] message, string what)
    {
        // Unconnected netlink socket: write() goes to the kernel (destination port 0).
        if (!Libc.WriteAll(_fd, message))
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new NetlinkException($"netlink {what}: send: {Libc.Describe(errno)}", errno);
        }
    }

    private ReadOnlySpan<byte> Receive(string what)
    {
        _buffer ??= new byte[ReceiveBufferSize];
        while (true)
        {
            nint n;
            fixed (byte* p = _buffer) n = Libc.read(_fd, p, _buffer.Length);
            if (n > 0) return _buffer.AsSpan(0, (int)n);
            int errno = n < 0 ? Marshal.GetLastPInvokeError() : Libc.EINVAL;
            if (errno == Libc.EINTR) continue;
            throw new NetlinkException($"netlink {what}: receive: {Libc.Describe(errno)}", errno);
        }
    }

    public void Dispose()
    {
        if (_fd >= 0) Libc.close(_fd);
        _fd = -1;
    }
}

using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent;

/// <summary>An AF_VSOCK address (struct sockaddr_vm: family u16, reserved u16, port u32, cid u32, 4 zero bytes).</summary>
internal sealed class VsockEndPoint(uint cid, uint port) : EndPoint
{
    private const int SockaddrVmSize = 16;

    public uint Cid { get; } = cid;
    public uint Port { get; } = port;

    /// <summary>Unspecified on purpose: System.Net.Sockets builds SocketAddress objects with the endpoint's
    /// family (Socket.LocalEndPoint, accept) and throws PlatformNotSupportedException for AF_VSOCK (40).
    /// The real family is in the serialized bytes.</summary>
    public override AddressFamily AddressFamily => AddressFamily.Unspecified;

    public override SocketAddress Serialize()
    {
        // SocketAddress refuses unknown families (PlatformNotSupportedException), so start from
        // AF_UNSPEC and write sa_family (u16, host order) ourselves.
        var address = new SocketAddress(AddressFamily.Unspecified, SockaddrVmSize);
        address[0] = (byte)Libc.AF_VSOCK;
        address[1] = 0;
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, Port);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes[4..], Cid);
        for (int i = 0; i < 8; i++) address[4 + i] = bytes[i];
        return address;
    }

    public override EndPoint Create(SocketAddress address)
    {
        if (address.Size < 12 || address[0] != Libc.AF_VSOCK || address[1] != 0)
            throw new ArgumentException($"Not a vsock address ({address.Size} bytes).", nameof(address));
        Span<byte> bytes = stackalloc byte[8];
        for (int i = 0; i < 8; i++) bytes[i] = address[4 + i];
        return new VsockEndPoint(BinaryPrimitives.ReadUInt32LittleEndian(bytes[4..]), BinaryPrimitives.ReadUInt32LittleEndian(bytes));
    }

    public override string ToString() => $"vsock:{(Cid == uint.MaxValue ? "any" : Cid.ToString(System.Globalization.CultureInfo.InvariantCulture))}:{Port}";
}

internal static unsafe class Vsock
{
    /// <summary>A bound AF_VSOCK stream socket for Kestrel (SocketTransportOptions.CreateBoundListenSocket):
    /// .NET refuses to create AF_VSOCK sockets itself, so libc creates it and .NET wraps the fd.</summary>
    public static Socket CreateBoundListenSocket(VsockEndPoint endPoint)
    {
        int fd = Libc.socket(Libc.AF_VSOCK, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0) throw new SocketException(Marshal.GetLastPInvokeError());
        var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
        try
        {
            socket.Bind(endPoint);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Connects to <paramref name="cid"/>:<paramref name="port"/>, writes <paramref name="data"/> and closes.
    /// Returns null on success or the errno description of the failure.</summary>
    public static string? SendOnce(uint cid, uint port, ReadOnlySpan<byte> data)
    {
        int fd = Libc.socket(Libc.AF_VSOCK, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0) return $"socket: errno {Marshal.GetLastPInvokeError()}";
        try
        {
            byte* address = stackalloc byte[16];
            new Span<byte>(address, 16).Clear();
            *(ushort*)address = Libc.AF_VSOCK;
            *(uint*)(address + 4) = port;
            *(uint*)(address + 8) = cid;
            if (Libc.connect(fd, address, 16) != 0) return $"connect: errno {Marshal.GetLastPInvokeError()}";
            return Libc.WriteAll(fd, data) ? null : $"write: errno {Marshal.GetLastPInvokeError()}";
        }
        finally { Libc.close(fd); }
    }
}

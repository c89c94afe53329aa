using System.Text;
using Rkt.Kvm.Posix;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Host;

/// <summary>
/// A non-blocking AF_UNIX stream socket on a raw descriptor, for the event loop: reads and writes
/// never block and report "would block" and "closed" as values, not exceptions, because both are
/// routine on the vsock data path.
/// </summary>
public sealed unsafe class UnixSocket : IDisposable
{
    /// <summary><see cref="Receive"/>/<see cref="Send"/>: nothing can be done now; wait for the next epoll event.</summary>
    public const int WouldBlock = -1;
    /// <summary><see cref="Send"/>: the peer is gone (EPIPE, ECONNRESET).</summary>
    public const int Broken = -2;

    private const int SockNonblockCloexec = 0x800 | 0x80000;
    private const int ShutRd = 0, ShutWr = 1;

    public FileDescriptor Handle { get; }

    private UnixSocket(int fd) => Handle = new FileDescriptor(fd);

    /// <summary>Listens on <paramref name="path"/>, replacing a stale socket file left by a killed VMM.</summary>
    public static UnixSocket Listen(string path, int backlog = 128)
    {
        if (File.Exists(path) || Directory.Exists(path))
        {
            if (!IsSocketFile(path)) throw new IOException($"{path} exists and is not a socket; refusing to replace it.");
            File.Delete(path);
        }
        var socket = Create();
        try
        {
            var address = Address(path);
            if (bind(socket.Handle.Number, (sockaddr*)&address, (uint)sizeof(sockaddr_un)) < 0) throw new ErrnoException($"bind {path}", errno);
            if (listen(socket.Handle.Number, backlog) < 0) throw new ErrnoException($"listen {path}", errno);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static bool IsSocketFile(string path)
    {
        stat st;
        fixed (byte* p = CString.Utf8(path))
        {
            if (lstat(p, &st) < 0) return false;
        }
        return (st.st_mode & S_IFMT) == S_IFSOCK;
    }

    /// <summary>Connects without blocking; null when nobody listens (or the listener's backlog is full).</summary>
    public static UnixSocket? TryConnect(string path)
    {
        var socket = Create();
        var address = Address(path);
        if (connect(socket.Handle.Number, (sockaddr*)&address, (uint)sizeof(sockaddr_un)) == 0) return socket;
        socket.Dispose();
        return null;
    }

    /// <summary>Accepts one pending connection, or null when there is none.</summary>
    public UnixSocket? Accept()
    {
        int fd = accept4(Handle.Number, null, null, SockNonblockCloexec);
        return fd < 0 ? null : new UnixSocket(fd);
    }

    /// <summary>Bytes read (&gt; 0), 0 at end of stream or on a reset, or <see cref="WouldBlock"/>.</summary>
    public int Receive(Span<byte> buffer, bool peek = false)
    {
        long n;
        int e;
        fixed (byte* p = buffer)
            do n = recv(Handle.Number, p, buffer.Length, peek ? MSG_PEEK : 0); while (Eintr.Interrupted(n, out e));
        if (n >= 0) return (int)n;
        return e == EAGAIN ? WouldBlock : 0;
    }

    /// <summary>Bytes written (&gt; 0), <see cref="WouldBlock"/>, or <see cref="Broken"/>.</summary>
    public int Send(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return 0;
        long n;
        int e;
        fixed (byte* p = data)
            do n = send(Handle.Number, p, data.Length, MSG_NOSIGNAL); while (Eintr.Interrupted(n, out e));
        if (n >= 0) return (int)n;
        return e == EAGAIN ? WouldBlock : Broken;
    }

    /// <summary>Tells the peer we will send no more (it reads end of stream).</summary>
    public void ShutdownSend() => shutdown(Handle.Number, ShutWr);

    public void ShutdownReceive() => shutdown(Handle.Number, ShutRd);

    private static UnixSocket Create()
    {
        int fd = socket(AF_UNIX, SOCK_STREAM | SockNonblockCloexec, 0);
        if (fd < 0) throw new ErrnoException("socket(AF_UNIX)", errno);
        return new UnixSocket(fd);
    }

    private static sockaddr_un Address(string path)
    {
        var bytes = Encoding.UTF8.GetBytes(path);
        var address = new sockaddr_un { sun_family = AF_UNIX };
        if (bytes.Length >= sockaddr_un.sun_path_length) throw new ArgumentException($"Socket path {path} is longer than the {sockaddr_un.sun_path_length - 1} bytes a Unix socket address holds.");
        byte* dst = (byte*)&address + sockaddr_un.sun_path_offset;
        for (int i = 0; i < bytes.Length; i++) dst[i] = bytes[i];
        return address;
    }

    public void Dispose() => Handle.Dispose();
}

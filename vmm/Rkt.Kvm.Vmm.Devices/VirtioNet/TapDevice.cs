using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Text;
using Rkt.Kvm.Posix;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Devices.VirtioNet;

/// <summary>A tap could not be opened or set up; the message says which and why, as one sentence.</summary>
public sealed class TapException(string message) : Exception(message);

/// <summary>
/// A Linux tap interface (/dev/net/tun, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), non-blocking, with a
/// 12-byte vnet header (virtio_net_hdr_v1, the virtio 1.0 layout with num_buffers) in front of every
/// frame in both directions. Opened by name, optionally inside another network namespace, or adopted
/// from an inherited descriptor. Reads and writes report "would block" as a value, not an exception.
/// </summary>
public sealed unsafe class TapDevice : IDisposable
{
    /// <summary><see cref="Read"/>/<see cref="Write"/>: nothing can be done now; wait for epoll.</summary>
    public const int WouldBlock = -1;
    /// <summary><see cref="Read"/>/<see cref="Write"/>: any other error (errno in <see cref="LastError"/>).</summary>
    public const int Failed = -2;

    /// <summary>TUNSETOFFLOAD bits (linux/if_tun.h): what the reader of the tap (the guest) can take.</summary>
    public const uint OffloadCsum = 0x01, OffloadTso4 = 0x02, OffloadTso6 = 0x04, OffloadTsoEcn = 0x08, OffloadUfo = 0x10;

    public const int InterfaceNameMax = 15; // IFNAMSIZ - 1

    // _IOW/_IOR('T', nr, int): linux/if_tun.h.
    public const uint TunSetIff = 0x4004_54CA, TunGetIff = 0x8004_54D2, TunSetOffload = 0x4004_54D0, TunSetVnetHdrSz = 0x4004_54D8;
    private const short IffTap = 0x0002, IffNoPi = 0x1000, IffVnetHdr = 0x4000, IffMultiQueue = 0x0100;
    private const int CloneNewNet = 0x4000_0000;

    /// <summary>struct ifreq: the name, then (in a union) the flags.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 40)]
    private struct IfReq
    {
        public fixed byte Name[16];
        public short Flags;
    }

    public FileDescriptor Handle { get; }
    /// <summary>The interface name (as the kernel reports it).</summary>
    public string Name { get; }
    /// <summary>The errno of the last <see cref="Failed"/> read or write.</summary>
    public int LastError { get; private set; }

    private TapDevice(FileDescriptor handle, string name)
    {
        Handle = handle;
        Name = name;
    }

    /// <summary>Checks an interface name as the kernel's dev_valid_name does; returns why not, or null.</summary>
    public static string? InvalidNameReason(string name)
    {
        if (name.Length == 0 || Encoding.UTF8.GetByteCount(name) > InterfaceNameMax) return $"must be 1-{InterfaceNameMax} bytes";
        if (name is "." or "..") return "may not be . or ..";
        foreach (char c in name)
            if (c == '/' || c == ':' || char.IsWhiteSpace(c) || char.IsControl(c)) return "may not contain '/', ':', spaces or control characters";
        return null;
    }

    /// <summary>
    /// Opens (creating it if needed) the tap <paramref name="name"/>; with <paramref name="netnsPath"/>
    /// the tap lives in that network namespace while this process stays in its own.
    /// </summary>
    public static TapDevice Open(string name, string? netnsPath = null)
    {
        if (InvalidNameReason(name) is { } why) throw new TapException($"The tap name '{name}' is not a valid interface name: it {why}.");
        if (netnsPath is null) return OpenHere(name, "");
        // setns changes only the calling thread's namespace. A throwaway thread does it, so even a
        // failed switch back cannot leave one of our long-lived threads in the pod's namespace.
        return OnThrowawayThread("tap-netns", () => OpenInNamespace(name, netnsPath));
    }

    /// <summary>Runs <paramref name="open"/> on a thread of its own that ends with it (namespace changes stay there) and returns its tap or rethrows its failure.</summary>
    private static TapDevice OnThrowawayThread(string threadName, Func<TapDevice> open)
    {
        TapDevice? tap = null;
        ExceptionDispatchInfo? failure = null;
        var thread = new Thread(() =>
        {
            try { tap = open(); }
            catch (Exception e) { failure = ExceptionDispatchInfo.Capture(e); }
        }) { IsBackground = true, Name = threadName };
        thread.Start();
        thread.Join();
        failure?.Throw();
        return tap!;
    }

    /// <summary>
    /// Creates the tap in a new network namespace that only this tap lives in (a throwaway thread
    /// unshares it; the tap keeps it alive until closed): the guest gets a NIC that nothing on the
    /// host can reach, as a template VM needs.
    /// </summary>
    public static TapDevice OpenIsolated(string name) => OnThrowawayThread("tap-isolated", () =>
    {
        if (unshare(CloneNewNet) < 0) throw Error("Cannot create a network namespace for an isolated tap", errno);
        return OpenHere(name, " in a network namespace of its own");
    });

    private static TapDevice OpenInNamespace(string name, string netnsPath)
    {
        int original = OpenRaw("/proc/thread-self/ns/net", O_RDONLY, "this thread's network namespace");
        int target = -1;
        try
        {
            target = OpenRaw(netnsPath, O_RDONLY, "network namespace");
            if (setns(target, CloneNewNet) < 0) throw Error($"Cannot enter the network namespace {netnsPath}", errno);
            try
            {
                // /dev/net/tun binds to the namespace current at open(), so open it inside.
                return OpenHere(name, $" in network namespace {netnsPath}");
            }
            finally
            {
                // Back to where we were; should this fail, the thread ends right after anyway.
                setns(original, CloneNewNet);
            }
        }
        finally
        {
            if (target >= 0) close(target);
            close(original);
        }
    }

    private static TapDevice OpenHere(string name, string where)
    {
        int fd = OpenRaw("/dev/net/tun", O_RDWR | O_NONBLOCK, "the tun device");
        var handle = new FileDescriptor(fd);
        try
        {
            var request = new IfReq { Flags = IffTap | IffNoPi | IffVnetHdr };
            byte[] bytes = Encoding.UTF8.GetBytes(name);
            for (int i = 0; i < bytes.Length; i++) request.Name[i] = bytes[i];
            if (ioctl(fd, unchecked((int)TunSetIff), &request) < 0)
            {
                int e = errno;
                string hint = e == EPERM ? " (it needs CAP_NET_ADMIN, or the tap belongs to another user)"
                    : e == EBUSY ? " (another process has it open)"
                    : e == EINVAL ? " (an interface of that name exists and is not a single-queue tap)"
                    : "";
                throw Error($"Cannot attach to tap {name}{where}{hint}", e);
            }
            var tap = new TapDevice(handle, ReadName(&request));
            tap.Configure();
            return tap;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Takes over an inherited tap descriptor (opened by whoever started the VMM); it must have been attached with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.</summary>
    public static TapDevice Adopt(int fd)
    {
        var request = new IfReq();
        if (ioctl(fd, unchecked((int)TunGetIff), &request) < 0) throw Error($"File descriptor {fd} is not an attached tap", errno);
        const short required = IffTap | IffNoPi | IffVnetHdr;
        if ((request.Flags & required) != required || (request.Flags & IffMultiQueue) != 0)
            throw new TapException($"File descriptor {fd} is a tun/tap with flags 0x{request.Flags:X}; the VMM needs a single-queue tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.");
        int flags = fcntl(fd, F_GETFL, 0);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw Error($"Cannot make tap fd {fd} non-blocking", errno);
        // Our children (none today) must not inherit the pod's NIC.
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        var tap = new TapDevice(new FileDescriptor(fd), ReadName(&request));
        try
        {
            tap.Configure();
            return tap;
        }
        catch
        {
            tap.Dispose();
            throw;
        }
    }

    private void Configure()
    {
        int size = VirtioNetHeader.Size;
        if (ioctl(Handle.Number, unchecked((int)TunSetVnetHdrSz), &size) < 0) throw Error($"Cannot set the vnet header size of tap {Name} to {size}", errno);
        // Nothing offloaded until the guest driver says what it takes.
        if (SetOffload(0) is var e and not 0) throw Error($"Cannot clear the offloads of tap {Name}", e);
    }

    /// <summary>TUNSETOFFLOAD: which offloads the kernel may leave to the guest (<see cref="OffloadCsum"/> ...). Returns 0 or the errno.</summary>
    public int SetOffload(uint flags) =>
        ioctl(Handle.Number, unchecked((int)TunSetOffload), (void*)(nuint)flags) < 0 ? errno : 0;

    /// <summary>Reads one frame (vnet header first): its full length (more than the buffer when it was truncated), <see cref="WouldBlock"/> or <see cref="Failed"/>.</summary>
    public int Read(Span<byte> buffer)
    {
        long n;
        int e;
        fixed (byte* p = buffer)
            do n = read(Handle.Number, p, buffer.Length); while (Eintr.Interrupted(n, out e));
        if (n >= 0) return (int)n;
        if (e == EAGAIN) return WouldBlock;
        LastError = e;
        return Failed;
    }

    /// <summary>Writes one frame (vnet header first) gathered from <paramref name="vectors"/>: bytes written, <see cref="WouldBlock"/> or <see cref="Failed"/>.</summary>
    public int Write(IoVectors vectors)
    {
        while (true)
        {
            long n = vectors.WriteTo(Handle.Number, out int e);
            if (n >= 0) return (int)n;
            if (e == EINTR) continue;
            if (e == EAGAIN) return WouldBlock;
            LastError = e;
            return Failed;
        }
    }

    private static string ReadName(IfReq* request)
    {
        int length = 0;
        while (length < 16 && request->Name[length] != 0) length++;
        return Encoding.UTF8.GetString(request->Name, length);
    }

    private static int OpenRaw(string path, int flags, string what)
    {
        fixed (byte* p = CString.Utf8(path))
        {
            int fd = open(p, flags | O_CLOEXEC, 0);
            if (fd < 0) throw Error($"Cannot open {what} {path}", errno);
            return fd;
        }
    }

    private static TapException Error(string what, int error) =>
        new($"{what}: {Marshal.GetPInvokeErrorMessage(error)} (errno {error}).");

    public void Dispose() => Handle.Dispose();
}

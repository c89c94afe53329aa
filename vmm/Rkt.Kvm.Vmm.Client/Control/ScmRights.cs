using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Client.Control;

/// <summary>
/// File descriptors passed over a Unix stream socket beside its bytes (SCM_RIGHTS): how the control
/// socket's clients hand the VMM a directory to export or a file to write a snapshot into. A VMM in
/// its own empty root (docs/THREAT-MODEL.md) cannot open host paths itself; the client, which can,
/// opens them and passes the open file. Both sides of the control socket use this one type.
/// </summary>
public static unsafe class ScmRights
{
    /// <summary>At most this many descriptors arrive with one read; more are closed by the kernel's truncation (MSG_CTRUNC) and reported.</summary>
    public const int MaxFdsPerMessage = 4;

    // cmsg_len counts the header and the data without the trailing padding (glibc's CMSG_LEN);
    // Tmds.LibC's CMSG_LEN pads it, which made the kernel take a second, unintended descriptor.
    private static int HeaderLength => sizeof(cmsghdr);
    private static int Length(int dataBytes) => HeaderLength + dataBytes;

    /// <summary>Sends all of <paramref name="data"/>, with <paramref name="fd"/> riding on its first byte. Blocking socket; throws IOException.</summary>
    public static void Send(int socket, ReadOnlySpan<byte> data, int fd)
    {
        int space = (int)CMSG_SPACE(sizeof(int));
        byte* control = stackalloc byte[space];
        new Span<byte>(control, space).Clear();
        int sent = 0;
        fixed (byte* p = data)
        {
            while (sent < data.Length)
            {
                var iov = new iovec { iov_base = p + sent, iov_len = (size_t)(data.Length - sent) };
                var msg = new msghdr { msg_iov = &iov, msg_iovlen = 1 };
                if (sent == 0)
                {
                    msg.msg_control = control;
                    msg.msg_controllen = (socklen_t)(uint)space;
                    var header = CMSG_FIRSTHDR(&msg);
                    header->cmsg_level = SOL_SOCKET;
                    header->cmsg_type = SCM_RIGHTS;
                    header->cmsg_len = (socklen_t)(uint)Length(sizeof(int));
                    *(int*)CMSG_DATA(header) = fd;
                }
                long n = sendmsg(socket, &msg, MSG_NOSIGNAL);
                if (n < 0)
                {
                    int e = errno;
                    if (e == EINTR) continue;
                    throw new IOException($"sendmsg with a file descriptor failed: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(e)}");
                }
                sent += (int)n;
            }
        }
    }

    /// <summary>
    /// One recvmsg: bytes read (&gt; 0, 0 at end of stream or on a reset, -1 when it would block),
    /// and every descriptor that came with them appended to <paramref name="fds"/> (close-on-exec).
    /// <paramref name="truncated"/> says the kernel dropped descriptors that did not fit.
    /// </summary>
    public static int Receive(int socket, Span<byte> buffer, List<int> fds, out bool truncated)
    {
        int space = (int)CMSG_SPACE(MaxFdsPerMessage * sizeof(int));
        byte* control = stackalloc byte[space];
        truncated = false;
        fixed (byte* p = buffer)
        {
            while (true)
            {
                var iov = new iovec { iov_base = p, iov_len = (size_t)buffer.Length };
                var msg = new msghdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = (socklen_t)(uint)space };
                long n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
                if (n < 0)
                {
                    int e = errno;
                    if (e == EINTR) continue;
                    return e == EAGAIN ? -1 : 0;
                }
                for (var header = CMSG_FIRSTHDR(&msg); header != null; header = CMSG_NXTHDR(&msg, header))
                {
                    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
                    int count = (int)(((long)(uint)header->cmsg_len - HeaderLength) / sizeof(int));
                    for (int i = 0; i < count; i++) fds.Add(((int*)CMSG_DATA(header))[i]);
                }
                truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
                return (int)n;
            }
        }
    }
}

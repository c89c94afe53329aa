using System.Text;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>The few raw libc calls of the interop layer, each turning failure into a <see cref="KvmException"/>.</summary>
internal static unsafe class Syscall
{
    /// <summary>O_CLOEXEC on x86-64 (not exported by Tmds.LibC 0.5).</summary>
    public const int OCloexec = 0x80000;

    public static FileDescriptor Open(string path, int flags)
    {
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            int fd = open(p, flags | OCloexec, 0);
            if (fd < 0) throw new KvmException($"open {path}", errno);
            return new FileDescriptor(fd);
        }
    }

    public static int Ioctl(FileDescriptor fd, uint request, void* arg)
    {
        bool added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            int rc;
            do rc = ioctl(fd.Number, unchecked((int)request), arg);
            while (rc < 0 && errno == EINTR && request != KvmIoctl.Run);
            if (rc < 0) throw new KvmException(KvmIoctl.NameOf(request), errno);
            return rc;
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    public static int Ioctl(FileDescriptor fd, uint request, ulong arg) => Ioctl(fd, request, (void*)arg);

    private const long SysGetrandom = 318; // x86-64

    /// <summary>Random bytes from the kernel's CSPRNG (getrandom(2), blocking only before the host's pool is initialised).</summary>
    public static byte[] GetRandom(int count)
    {
        var bytes = new byte[count];
        FillRandom(bytes);
        return bytes;
    }

    public static void FillRandom(Span<byte> destination)
    {
        fixed (byte* p = destination)
        {
            int done = 0;
            while (done < destination.Length)
            {
                long n = (ssize_t)syscall((int)SysGetrandom, (void*)(p + done), destination.Length - done, 0);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) throw new KvmException("getrandom", errno);
                done += (int)n;
            }
        }
    }
}

using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Posix;

/// <summary>Random bytes from the kernel's CSPRNG: getrandom(2), blocking only before the host's pool is initialised.</summary>
public static unsafe class Entropy
{
    private const int SysGetrandom = 318; // x86-64

    public static byte[] GetBytes(int count)
    {
        var bytes = new byte[count];
        Fill(bytes);
        return bytes;
    }

    public static void Fill(Span<byte> destination)
    {
        fixed (byte* p = destination)
        {
            int done = 0;
            while (done < destination.Length)
            {
                long n = (ssize_t)syscall(SysGetrandom, (void*)(p + done), destination.Length - done, 0);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) throw new ErrnoException("getrandom", errno);
                done += (int)n;
            }
        }
    }
}

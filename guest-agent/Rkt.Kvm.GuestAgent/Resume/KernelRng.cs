using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent.Resume;

/// <summary>
/// The guest kernel's random pool, through the two ioctls of linux/random.h. A VM restored from a template
/// snapshot starts with the template's CRNG state, so every pod restored from one template would draw the
/// same "random" numbers until the kernel reseeds on its own (up to a minute later): new bytes go into the
/// input pool and the CRNG is reseeded from it at once.
/// </summary>
internal static unsafe class KernelRng
{
    /// <summary>_IOW('R', 0x03, int[2]): mix a struct rand_pool_info into the input pool, crediting its entropy_count bits.</summary>
    public const uint RNDADDENTROPY = 0x40085203;

    /// <summary>_IO('R', 0x07): reseed the CRNG from the input pool now (Linux 4.17+).</summary>
    public const uint RNDRESEEDCRNG = 0x5207;

    public const string UrandomPath = "/dev/urandom";
    public const string HwrngPath = "/dev/hwrng";

    /// <summary>What Resume reads from the hardware RNG: 512 bits, twice what the CRNG needs to count as seeded.</summary>
    public const int HwrngBytes = 64;

    private const int ENODEV = 19, ENODATA = 61;

    /// <summary>
    /// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }: the hwrng bytes then the host's,
    /// zero-padded to whole u32s (buf_size says how many bytes count). Only the hwrng bytes are credited, in
    /// bits: the host's bytes come through the RPC, and crediting what a caller merely claims is random would
    /// let a bad one mark the pool as seeded.
    /// </summary>
    public static byte[] PoolInfo(ReadOnlySpan<byte> hwrng, ReadOnlySpan<byte> host)
    {
        int size = hwrng.Length + host.Length;
        byte[] info = new byte[8 + ((size + 3) & ~3)];
        BinaryPrimitives.WriteInt32LittleEndian(info, hwrng.Length * 8);
        BinaryPrimitives.WriteInt32LittleEndian(info.AsSpan(4), size);
        hwrng.CopyTo(info.AsSpan(8));
        host.CopyTo(info.AsSpan(8 + hwrng.Length));
        return info;
    }

    /// <summary>
    /// Up to <paramref name="count"/> bytes of the hardware RNG (virtio-rng in the VM), fewer if it ends early.
    /// Empty with a null reason when the device is absent (no virtio-rng: the host's bytes must do), empty with
    /// the reason on another failure. A blocking read: virtio-rng answers from the host's CSPRNG at once.
    /// </summary>
    public static byte[] ReadHwrng(string path, int count, out string? failure)
    {
        failure = null;
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno != Libc.ENOENT) failure = $"open {path}: {Libc.Describe(errno)}";
            return [];
        }
        try
        {
            byte[] buffer = new byte[count];
            int total = 0;
            fixed (byte* p = buffer)
                while (total < count)
                {
                    nint n = Libc.read(fd, p + total, count - total);
                    if (n < 0 && Marshal.GetLastPInvokeError() == Libc.EINTR) continue;
                    if (n < 0)
                    {
                        // ENODEV: the node exists but no hwrng is registered, as good as absent.
                        int errno = Marshal.GetLastPInvokeError();
                        if (errno != ENODEV) failure = $"read {path}: {Libc.Describe(errno)}";
                        break;
                    }
                    if (n == 0) break;
                    total += (int)n;
                }
            return buffer.AsSpan(0, total).ToArray();
        }
        finally { Libc.close(fd); }
    }

    /// <summary>Mixes <paramref name="poolInfo"/> (see <see cref="PoolInfo"/>) into the input pool and forces a
    /// CRNG reseed, both on <paramref name="device"/> (/dev/urandom). Throws <see cref="IOException"/> naming the
    /// ioctl and the errno: a restored VM whose RNG was not reseeded must not go on as if it had been.</summary>
    public static void Reseed(string device, byte[] poolInfo)
    {
        int fd = Libc.open(device, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0) throw new IOException($"open {device}: {Libc.LastError()}");
        try
        {
            fixed (byte* p = poolInfo)
                if (Libc.ioctl(fd, RNDADDENTROPY, p) != 0)
                    throw new IOException($"ioctl RNDADDENTROPY on {device}: {Libc.LastError()}");
            if (Libc.ioctl(fd, RNDRESEEDCRNG, null) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                string hint = errno == ENODATA ? "; the kernel's CRNG is not initialised yet and no hwrng bytes were credited" : "";
                throw new IOException($"ioctl RNDRESEEDCRNG on {device}: {Libc.Describe(errno)}{hint}");
            }
        }
        finally { Libc.close(fd); }
    }
}

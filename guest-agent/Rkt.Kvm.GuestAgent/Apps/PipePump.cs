using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// Reads a pipe on a small dedicated thread (blocking read(2); no thread-pool thread is held) and hands
/// each chunk to a callback, then calls <c>onEnd</c> at EOF and closes the fd.
/// </summary>
internal static unsafe class PipePump
{
    private const int ChunkSize = 16 << 10;

    public static void Start(int fd, string name, Action<ReadOnlySpan<byte>> onData, Action onEnd)
    {
        var thread = new Thread(() => Run(fd, onData, onEnd), maxStackSize: 128 << 10) { IsBackground = true, Name = name };
        thread.Start();
    }

    private static void Run(int fd, Action<ReadOnlySpan<byte>> onData, Action onEnd)
    {
        byte[] buffer = new byte[ChunkSize];
        try
        {
            fixed (byte* p = buffer)
            {
                while (true)
                {
                    nint n = Libc.read(fd, p, ChunkSize);
                    if (n < 0 && Marshal.GetLastPInvokeError() == Libc.EINTR) continue;
                    if (n <= 0) break;
                    onData(new ReadOnlySpan<byte>(p, (int)n));
                }
            }
        }
        finally
        {
            Libc.close(fd);
            onEnd();
        }
    }
}

using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// Reads a pipe on a thread of its own from <see cref="BlockingThreads"/> (blocking read(2); no
/// thread-pool thread is held) and hands each chunk to a callback, then calls <c>onEnd</c> at EOF and
/// closes the fd. A callback may block (exec's output waits for its gRPC reader): it holds only its
/// own pipe's thread.
/// </summary>
internal static unsafe class PipePump
{
    private const int ChunkSize = 16 << 10;

    public static void Start(int fd, Action<ReadOnlySpan<byte>> onData, Action onEnd) => BlockingThreads.Run(() => Run(fd, onData, onEnd));

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
        catch (Exception e) { Log.Line($"rkt-kvm-agent: a pipe's reader failed: {e.Message}"); }
        finally
        {
            Libc.close(fd);
            onEnd();
        }
    }
}

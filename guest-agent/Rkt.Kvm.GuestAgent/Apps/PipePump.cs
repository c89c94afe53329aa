using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// Reads a pipe on a thread of its own from <see cref="BlockingThreads"/> (blocking read(2); no
/// thread-pool thread is held) and hands each chunk to a callback, then calls <c>onEnd</c> at EOF and
/// closes the fd. A callback may block (exec's output waits for its gRPC reader): it holds only its
/// own pipe's thread.
/// <para>A terminal is read with <c>coalesceMs</c>: after a read, what else arrives within that many
/// milliseconds joins the same chunk (up to 64 KiB). A program writing to a terminal line by line, or
/// byte by byte, would otherwise cost one chunk (one gRPC message through the whole vsock path, ~20 ms
/// in the VMs here) per write; the price is that much more latency per keystroke echo.</para>
/// </summary>
internal static unsafe class PipePump
{
    private const int ChunkSize = 16 << 10, CoalescedChunkSize = 64 << 10;
    /// <summary>How long a terminal's reader waits for more output before it sends what it has.</summary>
    public const int TerminalCoalesceMs = 3;

    public static void Start(int fd, Action<ReadOnlySpan<byte>> onData, Action onEnd, int coalesceMs = 0) =>
        BlockingThreads.Run(() => Run(fd, onData, onEnd, coalesceMs));

    private static void Run(int fd, Action<ReadOnlySpan<byte>> onData, Action onEnd, int coalesceMs)
    {
        byte[] buffer = new byte[coalesceMs > 0 ? CoalescedChunkSize : ChunkSize];
        try
        {
            fixed (byte* p = buffer)
            {
                bool ended = false;
                while (!ended)
                {
                    nint n = Read(fd, p, ChunkSize);
                    if (n <= 0) break;
                    int filled = (int)n;
                    // More output soon after: one chunk, while there is room for another full read.
                    while (coalesceMs > 0 && buffer.Length - filled >= ChunkSize && Libc.Readable(fd, coalesceMs))
                    {
                        nint more = Read(fd, p + filled, ChunkSize);
                        if (more <= 0) { ended = true; break; }
                        filled += (int)more;
                    }
                    onData(new ReadOnlySpan<byte>(p, filled));
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

    /// <summary>read(2), retried on EINTR; 0 at EOF, negative on an error (EIO: a terminal nobody holds any more).</summary>
    private static nint Read(int fd, byte* buffer, int count)
    {
        while (true)
        {
            nint n = Libc.read(fd, buffer, count);
            if (n < 0 && Marshal.GetLastPInvokeError() == Libc.EINTR) continue;
            return n;
        }
    }
}

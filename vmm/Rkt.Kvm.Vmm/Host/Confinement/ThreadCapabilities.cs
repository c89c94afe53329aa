using System.Runtime.InteropServices;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>
/// Capabilities are per thread in Linux: capset changes only the calling thread's sets. The vCPU
/// and device threads, which parse what the guest writes, drop all of theirs; the 9p workers keep
/// what passthrough of owners and modes needs (they act on the exports as the guest's root).
/// </summary>
public static unsafe partial class ThreadCapabilities
{
    private const long SYS_capset = 126;
    private const uint LinuxCapabilityVersion3 = 0x20080522;

    [StructLayout(LayoutKind.Sequential)]
    private struct Header
    {
        public uint Version;
        public int Pid;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Data
    {
        public uint Effective, Permitted, Inheritable;
    }

    [LibraryImport("libc", SetLastError = true)] private static partial long syscall(long number, Header* header, Data* data);

    /// <summary>Empties the calling thread's effective, permitted and inheritable sets (for good: nothing gives them back).</summary>
    public static void DropAllOnThisThread()
    {
        var header = new Header { Version = LinuxCapabilityVersion3, Pid = 0 };
        Data* data = stackalloc Data[2];
        data[0] = default;
        data[1] = default;
        if (syscall(SYS_capset, &header, data) < 0)
            throw new IOException($"capset (dropping this thread's capabilities) failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}.");
    }
}

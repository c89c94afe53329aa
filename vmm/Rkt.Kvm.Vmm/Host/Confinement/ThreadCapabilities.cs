using System.Runtime.InteropServices;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>
/// Capabilities are per thread in Linux: capset changes only the calling thread's sets. The vCPU
/// and device threads, which parse what the guest writes, drop all of theirs; the 9p workers keep
/// only <see cref="FilePassthrough"/> (they act on the exports as the guest's root).
/// </summary>
public static unsafe partial class ThreadCapabilities
{
    private const long SYS_capget = 125, SYS_capset = 126;
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

    public const int CapChown = 0, CapDacOverride = 1, CapDacReadSearch = 2, CapFowner = 3, CapFsetid = 4, CapSetgid = 6, CapSetuid = 7;

    /// <summary>What a thread needs to take part in the process's drop to its user (<see cref="UserDrop"/>): only until then.</summary>
    public const ulong ChangeIds = 1UL << CapSetgid | 1UL << CapSetuid;

    /// <summary>
    /// What 9p passthrough needs to act as the guest's root on its exports: give files the guest's
    /// owners (CHOWN), reach and change files whatever their modes (DAC_OVERRIDE, DAC_READ_SEARCH,
    /// FOWNER: times, modes and xattrs of files it does not own), keep setgid on directories (FSETID).
    /// Not CAP_MKNOD (device nodes are refused), not CAP_SETFCAP (no file capabilities on the host).
    /// </summary>
    public const ulong FilePassthrough = 1UL << CapChown | 1UL << CapDacOverride | 1UL << CapDacReadSearch | 1UL << CapFowner | 1UL << CapFsetid;

    /// <summary>Empties the calling thread's effective, permitted and inheritable sets (for good: nothing gives them back).</summary>
    public static void DropAllOnThisThread() => KeepOnlyOnThisThread(0);

    /// <summary>Keeps of the calling thread's capabilities only those in <paramref name="mask"/> (effective and permitted; inheritable none).</summary>
    public static void KeepOnlyOnThisThread(ulong mask)
    {
        var header = new Header { Version = LinuxCapabilityVersion3, Pid = 0 };
        Data* data = stackalloc Data[2];
        if (syscall(SYS_capget, &header, data) < 0) throw Failure("capget");
        for (int i = 0; i < 2; i++)
        {
            uint keep = (uint)(mask >> (32 * i));
            data[i].Effective &= keep;
            data[i].Permitted &= keep;
            data[i].Inheritable = 0;
        }
        if (syscall(SYS_capset, &header, data) < 0) throw Failure("capset (lowering this thread's capabilities)");
    }

    private static IOException Failure(string what) => ConfinementError.Of(what);
}

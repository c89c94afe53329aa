using System.Runtime.InteropServices;

namespace Rkt.Kvm.Stage1.Native;

/// <summary>The libc calls the stage1 contract needs and .NET lacks: kill, and the overlay mounts of
/// a pod directory (the pod lock is a <c>Rkt.Kvm.Posix.FileLock</c>).</summary>
internal static partial class Libc
{
    public const int ESRCH = 3, EINVAL = 22, ENOENT = 2, EBUSY = 16;
    public const int MNT_DETACH = 2;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int kill(int pid, int signal);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string source, string target, string fstype, ulong flags, string data);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    /// <summary>statfs(2) into a raw buffer: only <c>f_type</c> (the first 8 bytes on x86-64) is read.</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statfs(string path, byte[] buf);

    [LibraryImport("libc")]
    public static partial uint geteuid();

    public static IOException Error(string call, string what)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new IOException($"{call} {what}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
    }
}

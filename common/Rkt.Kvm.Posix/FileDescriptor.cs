using System.Runtime.InteropServices;
using Tmds.Linux;

namespace Rkt.Kvm.Posix;

/// <summary>An owned Linux file descriptor; closed exactly once.</summary>
public sealed class FileDescriptor : SafeHandle
{
    public FileDescriptor(int fd) : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw number, only for interop calls (hold a reference or own the handle while it is used).</summary>
    public int Number => (int)handle.ToInt64();

    /// <summary>
    /// An O_PATH handle on the directory <paramref name="path"/> (close-on-exec): something to walk
    /// from (openat, <c>/proc/self/fd/N/…</c>) that grants no right to read the directory itself.
    /// Throws <see cref="ErrnoException"/>.
    /// </summary>
    public static unsafe FileDescriptor OpenDirectoryPath(string path)
    {
        int fd;
        fixed (byte* p = CString.Utf8(path)) fd = LibC.open(p, LibC.O_PATH | LibC.O_DIRECTORY | LibC.O_CLOEXEC);
        return fd >= 0 ? new FileDescriptor(fd) : throw new ErrnoException($"open {path}", LibC.errno);
    }

    protected override bool ReleaseHandle() => LibC.close((int)handle.ToInt64()) == 0;
}

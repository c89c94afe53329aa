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

    protected override bool ReleaseHandle() => LibC.close((int)handle.ToInt64()) == 0;
}

using Rkt.Kvm.Posix;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>The raw calls of the KVM layer (/dev/kvm and its ioctls), each turning failure into a <see cref="KvmException"/>.</summary>
internal static unsafe class Syscall
{
    public static FileDescriptor Open(string path, int flags)
    {
        fixed (byte* p = CString.Utf8(path))
        {
            int fd = open(p, flags | O_CLOEXEC, 0);
            if (fd < 0) throw new KvmException($"open {path}", errno);
            return new FileDescriptor(fd);
        }
    }

    public static int Ioctl(FileDescriptor fd, uint request, void* arg)
    {
        bool added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            int rc;
            do rc = ioctl(fd.Number, unchecked((int)request), arg);
            while (rc < 0 && errno == EINTR && request != KvmIoctl.Run);
            if (rc < 0) throw new KvmException(KvmIoctl.NameOf(request), errno);
            return rc;
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    public static int Ioctl(FileDescriptor fd, uint request, ulong arg) => Ioctl(fd, request, (void*)arg);
}

using System.Runtime.InteropServices;

namespace Rkt.Kvm.Stage1.Native;

/// <summary>chown for the directories of empty volumes (their uid/gid come from the pod manifest).</summary>
public static partial class Ownership
{
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lchown(string path, uint uid, uint gid);

    public static void Chown(string path, uint uid, uint gid)
    {
        if (lchown(path, uid, gid) != 0) throw Libc.Error("chown", path);
    }
}

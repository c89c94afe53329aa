namespace Rkt.Kvm.Vmm.Boot;

/// <summary>The kernel, initrd or boot configuration cannot be booted; the message says why, as one sentence.</summary>
public sealed class BootException(string message) : Exception(message);

/// <summary>Opens the files a boot reads (kernel, initrd), turning I/O failures into a <see cref="BootException"/>.</summary>
internal static class BootFile
{
    public static Microsoft.Win32.SafeHandles.SafeFileHandle Open(string path, string what)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BootException($"Cannot open {what} {path}: {e.Message}");
        }
    }
}

using System.Text;

namespace Rkt.Kvm.Posix;

/// <summary>Strings as libc takes them: UTF-8 with a terminating NUL.</summary>
public static class CString
{
    /// <summary>The UTF-8 bytes of <paramref name="text"/> and a NUL, for <c>fixed (byte* p = CString.Utf8(path))</c>.</summary>
    public static byte[] Utf8(string text)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(text) + 1];
        Encoding.UTF8.GetBytes(text, bytes);
        return bytes;
    }
}

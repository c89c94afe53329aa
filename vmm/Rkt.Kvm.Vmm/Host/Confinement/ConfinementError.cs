using System.Runtime.InteropServices;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>A confinement step that failed, as one sentence with the errno's text: the VMM does not run a guest half-confined.</summary>
internal static class ConfinementError
{
    public static IOException Of(string what) => new($"{what} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}.");

    public static void Check(int rc, string what)
    {
        if (rc < 0) throw Of(what);
    }

    /// <summary>For calls made through Tmds.LibC, which leaves its error in errno rather than the P/Invoke last error.</summary>
    public static void CheckLibC(int rc, string what)
    {
        if (rc < 0) throw new IOException($"{what} failed: {Marshal.GetPInvokeErrorMessage(Tmds.Linux.LibC.errno)}.");
    }
}

namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>A KVM or libc call failed; the message names the call and the errno, as a sentence.</summary>
public sealed class KvmException : Exception
{
    public int Errno { get; }

    public KvmException(string operation, int errno)
        : base($"{operation} failed: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).")
    {
        Errno = errno;
    }

    public KvmException(string message) : base(message) { }
}

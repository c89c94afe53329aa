namespace Rkt.Kvm.Vmm.Boot;

/// <summary>The kernel, initrd or boot configuration cannot be booted; the message says why, as one sentence.</summary>
public sealed class BootException(string message) : Exception(message);

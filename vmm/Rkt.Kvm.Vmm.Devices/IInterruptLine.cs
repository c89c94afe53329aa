namespace Rkt.Kvm.Vmm.Devices;

/// <summary>A device's interrupt output. Devices report their level; the line decides what to tell the interrupt controller.</summary>
public interface IInterruptLine
{
    void SetLevel(bool asserted);
}

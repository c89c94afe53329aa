namespace Rkt.Kvm.Vmm.Devices.Serial8250;

/// <summary>Where the UART's transmitted bytes go.</summary>
public interface ISerialOutput
{
    void Write(byte value);
}

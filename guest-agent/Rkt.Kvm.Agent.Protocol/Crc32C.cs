using System.Buffers.Binary;
using System.Numerics;

namespace Rkt.Kvm.Agent;

/// <summary>CRC-32C (Castagnoli), as used by iSCSI/ext4: <c>Crc32C.Compute("123456789") == 0xE3069283</c>.
/// Hardware accelerated where the CPU has it (BitOperations.Crc32C).</summary>
public struct Crc32C
{
    private uint _state = 0xFFFF_FFFF;

    public Crc32C() { }

    public void Append(ReadOnlySpan<byte> data)
    {
        uint crc = _state;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        _state = crc;
    }

    public readonly uint Value => ~_state;

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var crc = new Crc32C();
        crc.Append(data);
        return crc.Value;
    }
}

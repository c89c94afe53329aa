using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.VirtioRng;
using Rkt.Kvm.Vmm.Memory;
using Serilog;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>The virtio-mmio register protocol as Linux's virtio_mmio driver walks it, with virtio-rng behind it.</summary>
public sealed class MmioTransportTests : IDisposable
{
    private const ulong Desc = 0x1000, Avail = 0x2000, Used = 0x3000, Buffer = 0x10000;
    private readonly GuestMemory _memory = GuestMemory.Allocate([(0, 1 << 20)]);
    private readonly RecordingLine _irq = new();
    private readonly MmioTransport _transport;

    public MmioTransportTests() =>
        _transport = new MmioTransport(new VirtioRng(_memory, new LoggerConfiguration().CreateLogger()), _memory, _irq, InlineExecutor.Instance, new LoggerConfiguration().CreateLogger());

    public void Dispose() => _memory.Dispose();

    private uint In(int offset) { var b = new byte[4]; _transport.Read((ulong)offset, b); return BinaryPrimitives.ReadUInt32LittleEndian(b); }
    private void Out(int offset, uint value) { var b = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, value); _transport.Write((ulong)offset, b); }

    /// <summary>Reset, acknowledge, negotiate VERSION_1, set up queue 0, DRIVER_OK: what the Linux driver does.</summary>
    private void Initialise(ushort queueSize = 8, ulong desc = Desc, uint driverFeaturesHigh = 1)
    {
        Out(0x070, 0);
        Out(0x070, MmioTransport.StatusAcknowledge | MmioTransport.StatusDriver);
        Out(0x024, 1); Out(0x020, driverFeaturesHigh);
        Out(0x024, 0); Out(0x020, 0);
        Out(0x070, In(0x070) | MmioTransport.StatusFeaturesOk);
        Out(0x030, 0);
        Out(0x038, queueSize);
        Out(0x080, (uint)desc); Out(0x084, (uint)(desc >> 32));
        Out(0x090, (uint)Avail); Out(0x094, 0);
        Out(0x0A0, (uint)Used); Out(0x0A4, 0);
        Out(0x044, 1);
        Out(0x070, In(0x070) | MmioTransport.StatusDriverOk);
    }

    private void OfferWritable(ushort index, ulong address, uint length, ushort availIdx)
    {
        var d = _memory.GetSpan(Desc + index * 16UL, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], 2); // device-writable
        _memory.WriteU16(Avail + 4 + 2UL * (ushort)(availIdx - 1), index);
        _memory.WriteU16(Avail + 2, availIdx);
    }

    [Fact]
    public void Identification_registers_read_as_a_version_2_entropy_device()
    {
        Assert.Equal(0x74726976u, In(0x000));
        Assert.Equal(2u, In(0x004));
        Assert.Equal(4u, In(0x008));
        Out(0x014, 1);
        Assert.Equal(1u, In(0x010)); // VIRTIO_F_VERSION_1 (bit 32)
        Out(0x030, 0);
        Assert.Equal((uint)VirtioRng.QueueSize, In(0x034));
        Out(0x030, 1);
        Assert.Equal(0u, In(0x034)); // no second queue
    }

    [Fact]
    public void Notify_fills_the_buffer_with_entropy_and_raises_then_acks_the_interrupt()
    {
        Initialise();
        Assert.Equal(MmioTransport.StatusAcknowledge | MmioTransport.StatusDriver | MmioTransport.StatusFeaturesOk | MmioTransport.StatusDriverOk, In(0x070));
        OfferWritable(0, Buffer, 64, 1);
        Out(0x050, 0);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(_memory.GetSpan(Used + 2, 2)));
        Assert.Equal(64u, BinaryPrimitives.ReadUInt32LittleEndian(_memory.GetSpan(Used + 8, 4)));
        Assert.Contains(_memory.GetSpan(Buffer, 64).ToArray(), b => b != 0);
        Assert.True(_irq.Asserted);
        Assert.Equal(1u, In(0x060));
        Out(0x064, 1);
        Assert.False(_irq.Asserted);
        Assert.Equal(0u, In(0x060));
    }

    [Fact]
    public void Legacy_drivers_without_version_1_cannot_set_features_ok() =>
        Assert.Equal(0u, Initialise_without_version1_status() & MmioTransport.StatusFeaturesOk);

    private uint Initialise_without_version1_status()
    {
        Out(0x070, MmioTransport.StatusAcknowledge | MmioTransport.StatusDriver);
        Out(0x070, In(0x070) | MmioTransport.StatusFeaturesOk);
        return In(0x070);
    }

    [Fact]
    public void Queue_outside_ram_marks_the_device_as_needing_reset_instead_of_throwing()
    {
        Initialise(desc: 0xFFFF_F000);
        Assert.NotEqual(0u, In(0x070) & MmioTransport.StatusNeedsReset);
        Assert.Equal(0u, In(0x044));
        Out(0x050, 0); // notifying a broken queue does nothing
        Out(0x070, 0); // and a reset recovers
        Assert.Equal(0u, In(0x070));
        Initialise();
        Assert.Equal(0u, In(0x070) & MmioTransport.StatusNeedsReset);
    }

    [Fact]
    public void Oversized_queue_is_refused()
    {
        Initialise(queueSize: 512);
        Assert.NotEqual(0u, In(0x070) & MmioTransport.StatusNeedsReset);
    }

    [Fact]
    public void Malformed_request_is_returned_empty_and_the_queue_keeps_working()
    {
        Initialise();
        OfferWritable(0, 0xFFFF_FFFF_0000, 64, 1); // buffer outside RAM
        Out(0x050, 0);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(_memory.GetSpan(Used + 8, 4)));
        OfferWritable(1, Buffer, 16, 2);
        Out(0x050, 0);
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(_memory.GetSpan(Used + 2, 2)));
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32LittleEndian(_memory.GetSpan(Used + 16, 4)));
    }

    [Fact]
    public void Odd_width_accesses_and_config_writes_are_ignored()
    {
        var two = new byte[2] { 0xAA, 0xAA };
        _transport.Read(0x000, two);
        Assert.Equal([0, 0], two);
        _transport.Write(0x070, new byte[] { 0xFF, 0xFF });
        Assert.Equal(0u, In(0x070));
        Out(0x100, 0xFFFFFFFF);
        Assert.Equal(0u, In(0x100));
    }
}

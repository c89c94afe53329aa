using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Memory;
using Serilog;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>A virtio device that records what the transport does to it; a notify uses every available chain.</summary>
internal sealed class RecordingVirtioDevice(uint id, ushort[] queueMaxSizes, ulong features = 0) : IVirtioDevice
{
    public readonly List<string> Calls = [];
    public readonly List<(int Queue, ushort Head)> Popped = [];
    public IReadOnlyList<SplitQueue>? Queues { get; private set; }
    public ulong AcceptedFeatures { get; private set; }
    public string? Blocker { get; set; }

    public uint DeviceId => id;
    public ulong Features => features;
    public IReadOnlyList<ushort> QueueMaxSizes => queueMaxSizes;
    public ReadOnlySpan<byte> Config => default;
    public string? SnapshotBlocker => Blocker;

    public void Activate(ulong acceptedFeatures, IReadOnlyList<SplitQueue> queues, Action<int> signalUsed)
    {
        Calls.Add("activate");
        AcceptedFeatures = acceptedFeatures;
        Queues = queues;
    }

    public bool OnNotify(int index)
    {
        var queue = Queues![index];
        bool used = false;
        while (queue.TryPop() is { } chain)
        {
            Popped.Add((index, chain.Head));
            queue.PushUsed(chain.Head, 0);
            used = true;
        }
        return used;
    }

    public void Reset() => Calls.Add("reset");

    public void OnRestored() => Calls.Add("restored");
}

/// <summary>Plays the guest's virtio-mmio driver against a transport through its registers; the rings live in guest memory.</summary>
internal sealed class MmioDriver(MmioTransport transport, GuestMemory memory)
{
    public const ushort QueueSize = 8;
    public static ulong Desc(int queue) => 0x1000 + (ulong)queue * 0x4000;
    public static ulong Avail(int queue) => Desc(queue) + 0x1000;
    public static ulong Used(int queue) => Desc(queue) + 0x2000;

    public MmioTransport Transport => transport;

    public uint In(int offset) { var b = new byte[4]; transport.Read((ulong)offset, b); return BinaryPrimitives.ReadUInt32LittleEndian(b); }
    public void Out(int offset, uint value) { var b = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, value); transport.Write((ulong)offset, b); }

    public uint Status => In(0x070);
    public bool QueueReady(int queue) { Out(0x030, (uint)queue); return In(0x044) == 1; }

    /// <summary>Reset, ACKNOWLEDGE|DRIVER, features (VERSION_1 plus <paramref name="featuresLow"/>), FEATURES_OK, every queue, DRIVER_OK: what Linux does.</summary>
    public void Initialise(int queues, uint featuresLow = 0, ulong? firstDesc = null, bool driverOk = true)
    {
        Out(0x070, 0);
        Out(0x070, MmioTransport.StatusAcknowledge | MmioTransport.StatusDriver);
        Out(0x024, 1); Out(0x020, 1);
        Out(0x024, 0); Out(0x020, featuresLow);
        Out(0x070, Status | MmioTransport.StatusFeaturesOk);
        for (int q = 0; q < queues; q++)
        {
            ulong desc = q == 0 && firstDesc is { } d ? d : Desc(q);
            Out(0x030, (uint)q);
            Out(0x038, QueueSize);
            Out(0x080, (uint)desc); Out(0x084, (uint)(desc >> 32));
            Out(0x090, (uint)Avail(q)); Out(0x094, 0);
            Out(0x0A0, (uint)Used(q)); Out(0x0A4, 0);
            Out(0x044, 1);
        }
        if (driverOk) Out(0x070, Status | MmioTransport.StatusDriverOk);
    }

    /// <summary>Makes descriptor <paramref name="head"/> (one device-writable buffer) available on <paramref name="queue"/> and notifies.</summary>
    public void Submit(int queue, ushort head)
    {
        VsockGuestDriver.WriteDescriptor(memory, Desc(queue), head, 0x80000 + (ulong)queue * 0x10000 + head * 0x100UL, 0x100, flags: 2, next: 0);
        ushort idx = BinaryPrimitives.ReadUInt16LittleEndian(memory.GetSpan(Avail(queue) + 2, 2));
        memory.WriteU16(Avail(queue) + 4 + 2UL * (ushort)(idx % QueueSize), head);
        memory.WriteU16(Avail(queue) + 2, (ushort)(idx + 1));
        Out(0x050, (uint)queue);
    }

    public ushort UsedIndex(int queue) => BinaryPrimitives.ReadUInt16LittleEndian(memory.GetSpan(Used(queue) + 2, 2));
}

/// <summary>
/// A virtio-mmio transport saved after the driver set it up and used it, restored into a fresh
/// transport and device over the same guest RAM: the device continues at the same ring positions,
/// and a state that does not fit the device is refused.
/// </summary>
public sealed class TransportSnapshotTests : IDisposable
{
    private const uint DeviceId = 42;
    private static readonly ILogger Log = new LoggerConfiguration().CreateLogger();
    private readonly GuestMemory _memory = GuestMemory.Allocate([(0, 1 << 20)]);

    public void Dispose() => _memory.Dispose();

    private (RecordingVirtioDevice Device, MmioDriver Driver, RecordingLine Line) Create(uint id = DeviceId, ushort[]? queues = null, ulong features = MmioTransport.FeatureIndirectDesc)
    {
        var device = new RecordingVirtioDevice(id, queues ?? [16, 16], features);
        var line = new RecordingLine();
        return (device, new MmioDriver(new MmioTransport(device, _memory, line, InlineExecutor.Instance, Log), _memory), line);
    }

    /// <summary>A transport whose driver accepted INDIRECT_DESC and put three chains through queue 0 and one through queue 1; the used interrupt is not acknowledged.</summary>
    private (RecordingVirtioDevice Device, MmioDriver Driver, TransportState Saved) Used()
    {
        var (device, driver, _) = Create();
        driver.Initialise(2, featuresLow: (uint)MmioTransport.FeatureIndirectDesc);
        for (ushort head = 0; head < 3; head++) driver.Submit(0, head);
        driver.Submit(1, 5);
        Assert.Equal([(0, (ushort)0), (0, (ushort)1), (0, (ushort)2), (1, (ushort)5)], device.Popped);
        return (device, driver, RoundTrip(driver.Transport.SaveState()));
    }

    /// <summary>Through the binary form a snapshot file carries.</summary>
    private static TransportState RoundTrip(TransportState state)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true)) state.Write(w);
        stream.Position = 0;
        using var r = new BinaryReader(stream);
        var back = TransportState.Read(r);
        SnapshotSamples.AssertEqual(state, back);
        return back;
    }

    [Fact]
    public void The_saved_state_holds_how_far_each_queue_got()
    {
        var (_, _, saved) = Used();
        Assert.Equal(DeviceId, saved.DeviceId);
        Assert.Equal((ushort)3, saved.Queues[0].NextAvailable);
        Assert.Equal((ushort)3, saved.Queues[0].NextUsed);
        Assert.Equal((ushort)1, saved.Queues[1].NextAvailable);
        Assert.Equal((ushort)1, saved.Queues[1].NextUsed);
        Assert.All(saved.Queues, q => Assert.True(q.Ready));
    }

    [Fact]
    public void A_restored_device_is_activated_once_with_the_same_queues_then_told_it_was_restored()
    {
        var (old, oldDriver, saved) = Used();
        var (device, driver, _) = Create();
        driver.Transport.RestoreState(saved);
        Assert.Equal(["activate", "restored"], device.Calls);
        Assert.Equal(old.AcceptedFeatures, device.AcceptedFeatures);
        Assert.Equal(MmioTransport.FeatureVersion1 | MmioTransport.FeatureIndirectDesc, device.AcceptedFeatures);
        Assert.Equal(2, device.Queues!.Count);
        for (int q = 0; q < 2; q++)
        {
            var (a, b) = (old.Queues![q], device.Queues[q]);
            Assert.Equal((a.Size, a.DescriptorTable, a.AvailableRing, a.UsedRing, a.NextAvailable, a.NextUsed, a.IndirectAllowed),
                (b.Size, b.DescriptorTable, b.AvailableRing, b.UsedRing, b.NextAvailable, b.NextUsed, b.IndirectAllowed));
            Assert.Equal((MmioDriver.QueueSize, MmioDriver.Desc(q), MmioDriver.Avail(q), MmioDriver.Used(q), true), (b.Size, b.DescriptorTable, b.AvailableRing, b.UsedRing, b.IndirectAllowed));
        }
        Assert.Equal(oldDriver.Status, driver.Status);
        Assert.Equal(MmioTransport.StatusAcknowledge | MmioTransport.StatusDriver | MmioTransport.StatusFeaturesOk | MmioTransport.StatusDriverOk, driver.Status);
        Assert.True(driver.QueueReady(0));
        Assert.True(driver.QueueReady(1));
    }

    [Fact]
    public void The_next_chain_the_driver_makes_available_is_the_one_the_restored_device_takes()
    {
        var (_, _, saved) = Used();
        var (device, driver, _) = Create();
        driver.Transport.RestoreState(saved);
        driver.Submit(0, 3);
        Assert.Equal([(0, (ushort)3)], device.Popped);
        Assert.Equal(4, driver.UsedIndex(0));
        // The used element went to ring slot 3, after the three the old device filled.
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(_memory.GetSpan(MmioDriver.Used(0) + 4 + 8 * 3, 4)));
        driver.Submit(1, 6);
        Assert.Equal((1, (ushort)6), device.Popped[^1]);
        Assert.Equal(2, driver.UsedIndex(1));
    }

    [Fact]
    public void A_pending_interrupt_comes_back_without_being_raised_again()
    {
        var (_, oldDriver, saved) = Used();
        Assert.Equal(MmioTransport.InterruptUsedBuffer, oldDriver.In(0x060));
        var (_, driver, line) = Create();
        driver.Transport.RestoreState(saved);
        Assert.Equal(MmioTransport.InterruptUsedBuffer, driver.In(0x060));
        Assert.Empty(line.Levels); // the interrupt controller's state came back with the VM
        driver.Out(0x064, MmioTransport.InterruptUsedBuffer);
        Assert.Equal([false], line.Levels);
        Assert.Equal(0u, driver.In(0x060));
    }

    [Fact]
    public void A_transport_the_driver_never_touched_restores_to_an_inactive_device()
    {
        var (_, untouched, _) = Create();
        var saved = RoundTrip(untouched.Transport.SaveState());
        var (device, driver, _) = Create();
        driver.Transport.RestoreState(saved);
        Assert.Empty(device.Calls);
        Assert.Equal(0u, driver.Status);
        Assert.False(driver.QueueReady(0));
        // The guest can still bring it up afterwards.
        driver.Initialise(2);
        Assert.Equal(["reset", "activate"], device.Calls);
    }

    private void RefusedInto((RecordingVirtioDevice Device, MmioDriver Driver, RecordingLine Line) target, TransportState state, params string[] expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => target.Driver.Transport.RestoreState(state));
        foreach (var text in expected) Assert.Contains(text, e.Message);
        Assert.Empty(target.Device.Calls);
    }

    [Fact]
    public void Another_device_is_refused() => RefusedInto(Create(id: 43), Used().Saved, "device 42", "device 43");

    [Fact]
    public void Another_queue_count_is_refused() => RefusedInto(Create(queues: [16, 16, 16]), Used().Saved, "2 queues", "this one 3");

    [Fact]
    public void A_ready_queue_outside_guest_ram_is_refused()
    {
        var saved = Used().Saved;
        RefusedInto(Create(), saved with { Queues = [saved.Queues[0], saved.Queues[1] with { Device = 0x4000_0000 }] }, "queue 1", "outside guest RAM");
    }

    [Fact]
    public void A_queue_larger_than_the_device_allows_is_refused()
    {
        var saved = Used().Saved;
        RefusedInto(Create(queues: [16, 4]), saved, "queue 1", "size 8");
    }

    [Fact]
    public void A_queue_size_that_is_no_power_of_two_is_refused()
    {
        var saved = Used().Saved;
        RefusedInto(Create(), saved with { Queues = [saved.Queues[0] with { Size = 6 }, saved.Queues[1]] }, "queue 0", "power of two");
    }

    [Fact]
    public void Features_the_device_does_not_offer_are_refused()
    {
        // The template's device offered INDIRECT_DESC and the driver took it; this one does not offer it.
        RefusedInto(Create(features: 0), Used().Saved, "features this device does not offer");
    }

    [Fact]
    public void Driver_ok_with_a_queue_that_is_not_ready_is_refused()
    {
        var saved = Used().Saved;
        RefusedInto(Create(), saved with { Queues = [saved.Queues[0], saved.Queues[1] with { Ready = false }] }, "active with a queue that is not ready");
    }

    [Fact]
    public void A_device_that_is_not_set_up_or_is_fully_up_does_not_block_a_snapshot()
    {
        var (_, driver, _) = Create();
        Assert.Null(driver.Transport.SnapshotBlocker);
        driver.Initialise(2);
        Assert.Null(driver.Transport.SnapshotBlocker);
    }

    [Theory]
    [InlineData(MmioTransport.StatusAcknowledge)]
    [InlineData(MmioTransport.StatusAcknowledge | MmioTransport.StatusDriver)]
    [InlineData(MmioTransport.StatusAcknowledge | MmioTransport.StatusDriver | MmioTransport.StatusFeaturesOk)]
    public void A_half_initialised_driver_blocks_a_snapshot(uint status)
    {
        var (_, driver, _) = Create();
        driver.Out(0x070, status);
        Assert.Contains("still setting it up", driver.Transport.SnapshotBlocker);
    }

    [Fact]
    public void A_device_that_needs_a_reset_blocks_a_snapshot()
    {
        var (_, driver, _) = Create();
        driver.Initialise(2, firstDesc: 0xFFFF_F000);
        Assert.Contains("needs a reset", driver.Transport.SnapshotBlocker);
    }

    [Fact]
    public void The_devices_own_blocker_is_passed_through()
    {
        var (device, driver, _) = Create();
        driver.Initialise(2);
        device.Blocker = "requests are in flight";
        Assert.Equal("requests are in flight", driver.Transport.SnapshotBlocker);
        device.Blocker = null;
        Assert.Null(driver.Transport.SnapshotBlocker);
    }
}

using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Kvm;
using Rkt.Kvm.Vmm.Snapshot;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>The machine state's binary form: what a snapshot writes comes back whole, and a damaged one is refused with InvalidDataException.</summary>
public class MachineStateTests
{
    private static InvalidDataException Refused(byte[] bytes) => Assert.Throws<InvalidDataException>(() => MachineState.FromBytes(bytes));

    private static byte[] WithInt32(byte[] bytes, int offset, int value)
    {
        var copy = (byte[])bytes.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(copy.AsSpan(offset), value);
        return copy;
    }

    /// <summary>Where vCPU 0's MSR count sits: after the vCPU count and its nine length-prefixed blobs.</summary>
    private static int MsrCountOffset(KvmVcpuState v) =>
        4 + new[] { v.MpState, v.Regs, v.Sregs, v.Xsave, v.Fpu, v.Xcrs, v.DebugRegs, v.Lapic, v.Events }.Sum(b => 4 + (b?.Length ?? 0));

    [Fact]
    public void Two_vcpus_vm_state_serial_and_three_transports_survive_to_and_from_bytes()
    {
        var state = SnapshotSamples.Full();
        var bytes = state.ToBytes();
        var back = MachineState.FromBytes(bytes);
        SnapshotSamples.AssertEqual(state, back);
        Assert.NotNull(back.Vcpus[0].Xsave);
        Assert.Null(back.Vcpus[0].Fpu);
        Assert.Null(back.Vcpus[1].Xsave);
        Assert.NotNull(back.Vcpus[1].Fpu);
        Assert.Null(back.Vcpus[1].Xcrs);
        Assert.Equal(bytes, back.ToBytes());
    }

    [Fact]
    public void Different_states_give_different_bytes() =>
        Assert.NotEqual(SnapshotSamples.Full(1).ToBytes(), SnapshotSamples.Full(2).ToBytes());

    [Fact]
    public void Every_truncation_is_refused_as_ending_early()
    {
        var bytes = SnapshotSamples.Small().ToBytes();
        for (int length = 0; length < bytes.Length; length++)
        {
            var prefix = bytes.AsSpan(0, length).ToArray();
            InvalidDataException e;
            try
            {
                e = Assert.Throws<InvalidDataException>(() => MachineState.FromBytes(prefix));
            }
            catch (Exception other) when (other is not InvalidDataException)
            {
                throw new Xunit.Sdk.XunitException($"A prefix of {length} of {bytes.Length} bytes: {other.Message}");
            }
            Assert.Contains("ends early", e.Message);
        }
    }

    [Fact]
    public void Trailing_bytes_are_refused()
    {
        var bytes = SnapshotSamples.Small().ToBytes();
        Assert.Contains("Bytes follow", Refused([.. bytes, 0]).Message);
    }

    [Fact]
    public void A_register_blob_of_the_wrong_size_is_refused()
    {
        var rng = new Random(3);
        var small = SnapshotSamples.Small();
        var state = small with { Vcpus = [small.Vcpus[0] with { Regs = SnapshotSamples.Blob(rng, KvmVcpuState.RegsSize - 1) }] };
        Assert.Contains("vCPU 0's register state", Refused(state.ToBytes()).Message);
    }

    [Fact]
    public void An_optional_blob_of_the_wrong_size_is_refused()
    {
        var full = SnapshotSamples.Full();
        var state = full with { Vcpus = [full.Vcpus[0] with { Xsave = new byte[KvmVcpuState.XsaveSize + 8] }, full.Vcpus[1]] };
        Assert.Contains("vCPU 0's XSAVE state has the wrong size", Refused(state.ToBytes()).Message);
    }

    [Fact]
    public void An_interrupt_controller_blob_of_the_wrong_size_is_refused()
    {
        var small = SnapshotSamples.Small();
        var state = small with { Vm = small.Vm with { Irqchips = [small.Vm.Irqchips[0], new byte[KvmVmState.IrqchipSize + 1], small.Vm.Irqchips[2]] } };
        Assert.Contains("interrupt controller", Refused(state.ToBytes()).Message);
    }

    [Fact]
    public void A_missing_required_blob_is_refused()
    {
        var small = SnapshotSamples.Small();
        var state = small with { Vm = small.Vm with { Pit = null! } };
        Assert.Contains("PIT", Refused(state.ToBytes()).Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_vcpu_needs_exactly_one_of_xsave_and_fpu(bool both)
    {
        var rng = new Random(4);
        var small = SnapshotSamples.Small();
        var vcpu = both
            ? small.Vcpus[0] with { Xsave = SnapshotSamples.Blob(rng, KvmVcpuState.XsaveSize) }
            : small.Vcpus[0] with { Fpu = null };
        Assert.Contains("exactly one of XSAVE and FPU", Refused((small with { Vcpus = [vcpu] }).ToBytes()).Message);
    }

    [Theory]
    [InlineData(65)]
    [InlineData(int.MaxValue)]
    [InlineData(-2)]
    public void An_absurd_vcpu_count_is_refused_before_anything_is_allocated(int count)
    {
        var e = Refused(WithInt32(SnapshotSamples.Small().ToBytes(), 0, count));
        Assert.Contains($"{count} vCPUs", e.Message);
    }

    [Theory]
    [InlineData(1 << 21)]
    [InlineData(-5)]
    public void An_absurd_blob_length_is_refused(int length)
    {
        // The first blob (vCPU 0's MP state) follows the vCPU count.
        var e = Refused(WithInt32(SnapshotSamples.Small().ToBytes(), 4, length));
        Assert.Contains($"blob of {length} bytes", e.Message);
    }

    [Fact]
    public void An_absurd_msr_count_is_refused()
    {
        var small = SnapshotSamples.Small();
        var e = Refused(WithInt32(small.ToBytes(), MsrCountOffset(small.Vcpus[0]), 100_000));
        Assert.Contains("100000 MSRs", e.Message);
    }

    [Fact]
    public void Another_number_of_interrupt_controllers_is_refused()
    {
        var none = SnapshotSamples.Small() with { Vcpus = [] };
        var bytes = none.ToBytes();
        Assert.Equal(3, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4)));
        Assert.Contains("2 interrupt controllers instead of 3", Refused(WithInt32(bytes, 4, 2)).Message);
        Assert.Contains("4 interrupt controllers", Refused(WithInt32(bytes, 4, 4)).Message);
    }

    [Fact]
    public void Absurd_device_and_queue_counts_are_refused()
    {
        // The transport count is the last field of a state without transports...
        var noDevices = (SnapshotSamples.Small() with { Transports = new Dictionary<int, TransportState>() }).ToBytes();
        Assert.Contains("17 virtio devices", Refused(WithInt32(noDevices, noDevices.Length - 4, 17)).Message);
        // ...and the queue count the last field of a state whose one transport has no queues.
        var noQueues = (SnapshotSamples.Small() with { Transports = new Dictionary<int, TransportState> { [0] = SnapshotSamples.Transport(4, 1) with { Queues = [] } } }).ToBytes();
        Assert.Contains("1000 queues", Refused(WithInt32(noQueues, noQueues.Length - 4, 1000)).Message);
    }

    [Fact]
    public void A_slot_given_twice_is_refused()
    {
        var noDevices = (SnapshotSamples.Small() with { Transports = new Dictionary<int, TransportState>() }).ToBytes();
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream))
        {
            w.Write(noDevices.AsSpan(0, noDevices.Length - 4));
            w.Write(2);
            for (int i = 0; i < 2; i++)
            {
                w.Write(5);
                SnapshotSamples.Transport(4, 1).Write(w);
            }
        }
        Assert.Contains("slot 5 appears twice", Refused(stream.ToArray()).Message);
    }
}

using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Kvm;
using Rkt.Kvm.Vmm.Snapshot;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>Machine states with random blobs of the sizes KVM returns, and a field-by-field comparison (records compare lists by reference).</summary>
internal static class SnapshotSamples
{
    public static byte[] Blob(Random rng, int size)
    {
        var bytes = new byte[size];
        rng.NextBytes(bytes);
        return bytes;
    }

    /// <summary>A vCPU with XSAVE (and XCRs, debug registers) or, on hosts without KVM_CAP_XSAVE, the legacy FPU area only.</summary>
    public static KvmVcpuState Vcpu(Random rng, bool xsave, int msrs) => new()
    {
        MpState = Blob(rng, KvmVcpuState.MpStateSize),
        Regs = Blob(rng, KvmVcpuState.RegsSize),
        Sregs = Blob(rng, KvmVcpuState.SregsSize),
        Xsave = xsave ? Blob(rng, KvmVcpuState.XsaveSize) : null,
        Fpu = xsave ? null : Blob(rng, KvmVcpuState.FpuSize),
        Xcrs = xsave ? Blob(rng, KvmVcpuState.XcrsSize) : null,
        DebugRegs = xsave ? Blob(rng, KvmVcpuState.DebugRegsSize) : null,
        Lapic = Blob(rng, KvmVcpuState.LapicSize),
        Events = Blob(rng, KvmVcpuState.EventsSize),
        Msrs = Enumerable.Range(0, msrs).Select(i => new KvmMsrEntry { Index = 0xC000_0080u + (uint)i, Data = (ulong)rng.NextInt64() }).ToArray(),
    };

    public static KvmVmState Vm(Random rng) => new()
    {
        Irqchips = KvmVmState.IrqchipIds.Select(_ => Blob(rng, KvmVmState.IrqchipSize)).ToArray(),
        Pit = Blob(rng, KvmVmState.Pit2Size),
        Clock = Blob(rng, KvmVmState.ClockSize),
    };

    public static TransportState Transport(uint deviceId, int queues, uint status = 0x0F) =>
        new(deviceId, status, 1, MmioTransport.FeatureVersion1 | 0x20, 1, 0, (uint)queues - 1,
            Enumerable.Range(0, queues).Select(q => new QueueState((ushort)(64 << q), 0x1000UL * (ulong)(q + 1), 0x10_0000UL + (ulong)q, 0x20_0000UL + (ulong)q,
                q % 2 == 0, (ushort)(q * 1000 + 7), (ushort)(65535 - q))).ToList());

    /// <summary>Two vCPUs (XSAVE on the first, FPU on the second), serial bytes, transports in three slots.</summary>
    public static MachineState Full(int seed = 1)
    {
        var rng = new Random(seed);
        return new MachineState(
            [Vcpu(rng, xsave: true, msrs: 5), Vcpu(rng, xsave: false, msrs: 2)],
            Vm(rng),
            [0x05, 0x03, 0x0B, 0x5A, 0x0C, 0x00, 0x03, 2, (byte)'o', (byte)'k'],
            new Dictionary<int, TransportState> { [0] = Transport(19, 3), [1] = Transport(4, 1), [3] = Transport(1, 2, status: 0) });
    }

    /// <summary>One vCPU (FPU), one MSR, one transport with one queue: small enough to try every prefix.</summary>
    public static MachineState Small(int seed = 2)
    {
        var rng = new Random(seed);
        return new MachineState([Vcpu(rng, xsave: false, msrs: 1)], Vm(rng), [1, 2, 3], new Dictionary<int, TransportState> { [2] = Transport(4, 1) });
    }

    public static void AssertEqual(MachineState expected, MachineState actual)
    {
        Assert.Equal(expected.Vcpus.Count, actual.Vcpus.Count);
        for (int i = 0; i < expected.Vcpus.Count; i++)
        {
            var (e, a) = (expected.Vcpus[i], actual.Vcpus[i]);
            Assert.Equal(e.MpState, a.MpState);
            Assert.Equal(e.Regs, a.Regs);
            Assert.Equal(e.Sregs, a.Sregs);
            Assert.Equal(e.Xsave, a.Xsave);
            Assert.Equal(e.Fpu, a.Fpu);
            Assert.Equal(e.Xcrs, a.Xcrs);
            Assert.Equal(e.DebugRegs, a.DebugRegs);
            Assert.Equal(e.Lapic, a.Lapic);
            Assert.Equal(e.Events, a.Events);
            Assert.Equal(e.Msrs.Select(m => (m.Index, m.Data)), a.Msrs.Select(m => (m.Index, m.Data)));
        }
        Assert.Equal(expected.Vm.Irqchips.Length, actual.Vm.Irqchips.Length);
        for (int c = 0; c < expected.Vm.Irqchips.Length; c++) Assert.Equal(expected.Vm.Irqchips[c], actual.Vm.Irqchips[c]);
        Assert.Equal(expected.Vm.Pit, actual.Vm.Pit);
        Assert.Equal(expected.Vm.Clock, actual.Vm.Clock);
        Assert.Equal(expected.Serial, actual.Serial);
        Assert.Equal(expected.Transports.Keys.Order(), actual.Transports.Keys.Order());
        foreach (var (slot, t) in expected.Transports) AssertEqual(t, actual.Transports[slot]);
    }

    public static void AssertEqual(TransportState expected, TransportState actual)
    {
        Assert.Equal((expected.DeviceId, expected.Status, expected.InterruptStatus, expected.DriverFeatures, expected.DeviceFeaturesSel, expected.DriverFeaturesSel, expected.QueueSel),
            (actual.DeviceId, actual.Status, actual.InterruptStatus, actual.DriverFeatures, actual.DeviceFeaturesSel, actual.DriverFeaturesSel, actual.QueueSel));
        Assert.Equal(expected.Queues, actual.Queues);
    }
}

/// <summary>A temporary directory, removed with everything in it.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("rkt-kvm-snap-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

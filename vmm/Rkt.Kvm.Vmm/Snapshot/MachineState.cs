using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Kvm;

namespace Rkt.Kvm.Vmm.Snapshot;

/// <summary>Everything of a paused VM apart from its RAM: KVM's vCPU and VM state, the UART, and each virtio transport by slot.</summary>
public sealed record MachineState(IReadOnlyList<KvmVcpuState> Vcpus, KvmVmState Vm, byte[] Serial, IReadOnlyDictionary<int, TransportState> Transports)
{
    private const int MaxBlob = 1 << 20;

    public byte[] ToBytes()
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream))
        {
            w.Write(Vcpus.Count);
            foreach (var v in Vcpus)
            {
                foreach (var blob in new[] { v.MpState, v.Regs, v.Sregs, v.Xsave, v.Fpu, v.Xcrs, v.DebugRegs, v.Lapic, v.Events }) WriteBlob(w, blob);
                w.Write(v.Msrs.Length);
                foreach (var m in v.Msrs) { w.Write(m.Index); w.Write(m.Data); }
            }
            w.Write(Vm.Irqchips.Length);
            foreach (var chip in Vm.Irqchips) WriteBlob(w, chip);
            WriteBlob(w, Vm.Pit);
            WriteBlob(w, Vm.Clock);
            WriteBlob(w, Serial);
            w.Write(Transports.Count);
            foreach (var (slot, t) in Transports.OrderBy(t => t.Key))
            {
                w.Write(slot);
                t.Write(w);
            }
        }
        return stream.ToArray();
    }

    /// <summary>Reads <see cref="ToBytes"/>'s format back; every count and size is checked (the file is input).</summary>
    public static MachineState FromBytes(byte[] bytes)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(bytes, writable: false));
            int cpus = Count(r, 64, "vCPUs");
            var vcpus = new List<KvmVcpuState>(cpus);
            for (int i = 0; i < cpus; i++)
            {
                byte[] Required(int size, string what) => ReadBlob(r) is { } b && b.Length == size ? b : throw new InvalidDataException($"vCPU {i}'s {what} state is missing or has the wrong size.");
                byte[]? Optional(int size, string what) => ReadBlob(r) is not { } b ? null : b.Length == size ? b : throw new InvalidDataException($"vCPU {i}'s {what} state has the wrong size.");
                var mp = Required(KvmVcpuState.MpStateSize, "MP");
                var regs = Required(KvmVcpuState.RegsSize, "register");
                var sregs = Required(KvmVcpuState.SregsSize, "segment register");
                var xsave = Optional(KvmVcpuState.XsaveSize, "XSAVE");
                var fpu = Optional(KvmVcpuState.FpuSize, "FPU");
                var xcrs = Optional(KvmVcpuState.XcrsSize, "XCR");
                var debug = Optional(KvmVcpuState.DebugRegsSize, "debug register");
                var lapic = Required(KvmVcpuState.LapicSize, "LAPIC");
                var events = Required(KvmVcpuState.EventsSize, "event");
                if (xsave is null == fpu is null) throw new InvalidDataException($"vCPU {i} needs exactly one of XSAVE and FPU state.");
                int msrCount = Count(r, 4096, "MSRs");
                var msrs = new KvmMsrEntry[msrCount];
                for (int m = 0; m < msrCount; m++) msrs[m] = new KvmMsrEntry { Index = r.ReadUInt32(), Data = r.ReadUInt64() };
                vcpus.Add(new KvmVcpuState { MpState = mp, Regs = regs, Sregs = sregs, Xsave = xsave, Fpu = fpu, Xcrs = xcrs, DebugRegs = debug, Lapic = lapic, Events = events, Msrs = msrs });
            }
            int chips = Count(r, 3, "interrupt controllers");
            if (chips != KvmVmState.IrqchipIds.Length) throw new InvalidDataException($"{chips} interrupt controllers instead of {KvmVmState.IrqchipIds.Length}.");
            var irqchips = new byte[chips][];
            for (int c = 0; c < chips; c++) irqchips[c] = Sized(ReadBlob(r), KvmVmState.IrqchipSize, "interrupt controller");
            var vm = new KvmVmState { Irqchips = irqchips, Pit = Sized(ReadBlob(r), KvmVmState.Pit2Size, "PIT"), Clock = Sized(ReadBlob(r), KvmVmState.ClockSize, "clock") };
            var serial = ReadBlob(r) ?? throw new InvalidDataException("The serial port's state is missing.");
            int transports = Count(r, 16, "virtio devices");
            var bySlot = new Dictionary<int, TransportState>();
            for (int t = 0; t < transports; t++)
            {
                int slot = r.ReadInt32();
                if (!bySlot.TryAdd(slot, TransportState.Read(r))) throw new InvalidDataException($"Virtio slot {slot} appears twice.");
            }
            if (r.BaseStream.Position != bytes.Length) throw new InvalidDataException("Bytes follow the machine state.");
            if (vcpus.Count == 0) throw new InvalidDataException("The machine state has no vCPUs.");
            return new MachineState(vcpus, vm, serial, bySlot);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException("The machine state ends early.");
        }
    }

    private static int Count(BinaryReader r, int max, string what)
    {
        int n = r.ReadInt32();
        return n < 0 || n > max ? throw new InvalidDataException($"{n} {what} (at most {max}).") : n;
    }

    private static byte[] Sized(byte[]? blob, int size, string what) =>
        blob is not null && blob.Length == size ? blob : throw new InvalidDataException($"The {what} state is missing or has the wrong size.");

    private static void WriteBlob(BinaryWriter w, byte[]? blob)
    {
        w.Write(blob?.Length ?? -1);
        if (blob is not null) w.Write(blob);
    }

    private static byte[]? ReadBlob(BinaryReader r)
    {
        int length = r.ReadInt32();
        if (length == -1) return null;
        if (length < 0 || length > MaxBlob) throw new InvalidDataException($"A state blob of {length} bytes.");
        var bytes = r.ReadBytes(length);
        return bytes.Length == length ? bytes : throw new EndOfStreamException();
    }
}

namespace Rkt.Kvm.Vmm.Devices.Virtio;

/// <summary>One queue of a virtio-mmio transport as a snapshot keeps it: its set-up and how far the device got.</summary>
public sealed record QueueState(ushort Size, ulong Desc, ulong Driver, ulong Device, bool Ready, ushort NextAvailable, ushort NextUsed);

/// <summary>The register state of one virtio-mmio transport and its queues: what the driver negotiated and set up.</summary>
public sealed record TransportState(uint DeviceId, uint Status, uint InterruptStatus, ulong DriverFeatures,
    uint DeviceFeaturesSel, uint DriverFeaturesSel, uint QueueSel, IReadOnlyList<QueueState> Queues)
{
    public void Write(BinaryWriter w)
    {
        w.Write(DeviceId); w.Write(Status); w.Write(InterruptStatus); w.Write(DriverFeatures);
        w.Write(DeviceFeaturesSel); w.Write(DriverFeaturesSel); w.Write(QueueSel);
        w.Write(Queues.Count);
        foreach (var q in Queues)
        {
            w.Write(q.Size); w.Write(q.Desc); w.Write(q.Driver); w.Write(q.Device); w.Write(q.Ready);
            w.Write(q.NextAvailable); w.Write(q.NextUsed);
        }
    }

    public static TransportState Read(BinaryReader r)
    {
        uint deviceId = r.ReadUInt32(), status = r.ReadUInt32(), interrupt = r.ReadUInt32();
        ulong features = r.ReadUInt64();
        uint devSel = r.ReadUInt32(), drvSel = r.ReadUInt32(), queueSel = r.ReadUInt32();
        int count = r.ReadInt32();
        if (count is < 0 or > 16) throw new InvalidDataException($"A transport with {count} queues.");
        var queues = new List<QueueState>(count);
        for (int i = 0; i < count; i++)
            queues.Add(new QueueState(r.ReadUInt16(), r.ReadUInt64(), r.ReadUInt64(), r.ReadUInt64(), r.ReadBoolean(), r.ReadUInt16(), r.ReadUInt16()));
        return new TransportState(deviceId, status, interrupt, features, devSel, drvSel, queueSel, queues);
    }
}

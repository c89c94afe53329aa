using System.Buffers.Binary;
using System.Net.Sockets;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Vsock;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>After a restore the vsock device tells the guest its connections are gone (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET) through the event queue.</summary>
public sealed class VsockRestoreTests : IDisposable
{
    private const ulong EventDesc = 0x30_0000, EventAvail = 0x30_1000, EventUsed = 0x30_2000, EventBuffer = 0x30_8000;
    private readonly VsockGuestDriver _guest = new();
    private readonly List<int> _signalled = [];

    public void Dispose() => _guest.Dispose();

    private void Activate()
    {
        var m = _guest.Memory;
        var queues = new[]
        {
            new SplitQueue(m, 16, 0x31_0000, 0x31_1000, 0x31_2000),
            new SplitQueue(m, 16, 0x32_0000, 0x32_1000, 0x32_2000),
            new SplitQueue(m, 16, EventDesc, EventAvail, EventUsed),
        };
        _guest.Loop.Invoke(() => _guest.Device.Activate(0, queues, q => { lock (_signalled) _signalled.Add(q); }));
    }

    /// <summary>What Linux's driver posts at probe: device-writable event buffers (8 bytes, struct virtio_vsock_event is 4).</summary>
    private void PostEventBuffers(int count)
    {
        ushort idx = BinaryPrimitives.ReadUInt16LittleEndian(_guest.Memory.GetSpan(EventAvail + 2, 2));
        for (int n = 0; n < count; n++, idx++)
        {
            ushort d = (ushort)(idx % 16);
            _guest.Memory.GetSpan(EventBuffer + d * 0x10UL, 8).Fill(0xAA);
            VsockGuestDriver.WriteDescriptor(_guest.Memory, EventDesc, d, EventBuffer + d * 0x10UL, 8, flags: 2, next: 0);
            _guest.Memory.WriteU16(EventAvail + 4 + 2UL * d, d);
        }
        _guest.Memory.WriteU16(EventAvail + 2, idx);
    }

    private ushort UsedIndex => BinaryPrimitives.ReadUInt16LittleEndian(_guest.Memory.GetSpan(EventUsed + 2, 2));

    [Fact]
    public void On_restored_the_first_event_buffer_gets_a_transport_reset()
    {
        Activate();
        PostEventBuffers(2);
        _guest.Loop.Invoke(_guest.Device.OnRestored);
        Assert.Equal(1, UsedIndex);
        var element = _guest.Memory.GetSpan(EventUsed + 4, 8);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(element));      // descriptor 0
        Assert.Equal(4u, BinaryPrimitives.ReadUInt32LittleEndian(element[4..])); // sizeof(struct virtio_vsock_event)
        Assert.Equal(VsockDevice.EventTransportReset, BinaryPrimitives.ReadUInt32LittleEndian(_guest.Memory.GetSpan(EventBuffer, 4)));
        Assert.Equal([0xAA, 0xAA, 0xAA, 0xAA], _guest.Memory.GetSpan(EventBuffer + 4, 4).ToArray());
        // The second buffer stays posted for the next event.
        Assert.Equal([0xAA, 0xAA, 0xAA, 0xAA], _guest.Memory.GetSpan(EventBuffer + 0x10, 4).ToArray());
        lock (_signalled) Assert.Equal([VsockDevice.EventQueue], _signalled);
    }

    [Fact]
    public void Without_an_event_buffer_on_restored_does_nothing()
    {
        Activate();
        _guest.Loop.Invoke(_guest.Device.OnRestored);
        Assert.Equal(0, UsedIndex);
        lock (_signalled) Assert.Empty(_signalled);
    }

    private Socket Connect()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5000 };
        s.Connect(new UnixDomainSocketEndPoint(_guest.SocketPath));
        s.Send("CONNECT 1024\n"u8);
        return s;
    }

    private int Connections() { int n = 0; _guest.Loop.Invoke(() => n = _guest.Device.ConnectionCount); return n; }

    [Fact]
    public void Host_connects_wait_until_the_guest_has_handled_the_reset()
    {
        Activate();
        PostEventBuffers(1);
        _guest.Loop.Invoke(_guest.Device.OnRestored);
        // Before the guest re-posts its event buffer, a connection could be reset with the old ones: closed, the client retries.
        using (var early = Connect())
        {
            Assert.Equal(0, early.Receive(new byte[16]));
            Assert.Equal(0, Connections());
        }
        PostEventBuffers(1);
        _guest.Loop.Invoke(() => _guest.Device.OnNotify(VsockDevice.EventQueue));
        using var late = Connect();
        Assert.True(SpinWait.SpinUntil(() => Connections() == 1, 5000), "the CONNECT after the reset was handled did not reach the device");
    }

    [Fact]
    public void On_restored_before_activation_does_nothing() => _guest.Loop.Invoke(_guest.Device.OnRestored);
}

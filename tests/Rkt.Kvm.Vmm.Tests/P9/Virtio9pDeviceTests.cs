using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio9p;

namespace Rkt.Kvm.Vmm.Tests.NineP;

public sealed class Virtio9pDeviceTests : IClassFixture<TrapTree>
{
    private readonly TrapTree _tree;
    public Virtio9pDeviceTests(TrapTree tree) => _tree = tree;

    private static T Decode<T>(byte[] reply) where T : IP9Message<T>
    {
        Assert.True(reply.Length >= 7 && reply[4] == T.Type, $"expected {typeof(T).Name}, got type {(reply.Length > 4 ? reply[4] : -1)} errno {(reply.Length >= 11 ? BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7)) : 0)}");
        return P9Messages.Decode<T>(reply, out _);
    }

    [Fact]
    public void Config_space_holds_the_mount_tag_and_features_offer_it()
    {
        using var driver = new P9GuestDriver(_tree.Server());
        Assert.Equal(9u, driver.Device.DeviceId);
        Assert.Equal(new byte[] { 3, 0, (byte)'r', (byte)'k', (byte)'t' }, driver.Device.Config.ToArray());
        Assert.NotEqual(0ul, driver.Device.Features & Virtio9pDevice.FeatureMountTag);
    }

    [Fact]
    public void Zero_copy_writes_and_reads_span_several_descriptors_direct_and_indirect()
    {
        using var driver = new P9GuestDriver(_tree.Server());
        Decode<Rversion>(driver.Call(P9TestClient.Encode(new Tversion(512 * 1024, P9.Version))));
        Decode<Rattach>(driver.Call(P9TestClient.Encode(new Tattach(0, P9.NoFid, "u", "rw", 0))));
        string name = $"zc-{Guid.NewGuid():N}";
        Decode<Rlcreate>(driver.Call(P9TestClient.Encode(new Tlcreate(0, name, 2, 0x1a4, 0)), replySizes: [24]));
        var data = new byte[3 * 4096 + 100];
        new Random(9).NextBytes(data);
        // Linux's zero-copy write: the 23-byte header in one buffer, the data in page buffers after it.
        var write = P9TestClient.Encode(new Twrite(0, 0, (uint)data.Length), data: data);
        Assert.Equal((uint)data.Length, Decode<Rwrite>(driver.Call(write, requestSplits: [23, 23 + 4096, 23 + 8192, 23 + 12288], replySizes: [11])).Count);
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(_tree.Export, name)));
        // Zero-copy read: an 11-byte reply header buffer, then page buffers; once directly, once through an indirect table.
        foreach (bool indirect in new[] { false, true })
        {
            var reply = driver.Call(P9TestClient.Encode(new Tread(0, 0, (uint)data.Length)), replySizes: [11, 4096, 4096, 4096, 4096], indirect: indirect);
            Assert.Equal(P9.Rread, reply[4]);
            Assert.Equal((uint)data.Length, BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7)));
            Assert.Equal(data, reply[11..]);
        }
        // A request split mid-header reads the same.
        var stat = Decode<Rgetattr>(driver.Call(P9TestClient.Encode(new Tgetattr(0, P9.StatsBasic)), requestSplits: [1, 5, 9], replySizes: [20, 200]));
        Assert.Equal((ulong)data.Length, stat.Size);
        Assert.Equal(0, driver.Errors);
    }

    [Fact]
    public void Tflush_is_answered_and_a_reply_that_does_not_fit_is_rlerror_or_empty()
    {
        using var driver = new P9GuestDriver(_tree.Server());
        Assert.Equal(P9.Rflush, driver.Call(P9TestClient.Encode(new Tflush(5)), replySizes: [7])[4]);
        var tooSmall = driver.Call(P9TestClient.Encode(new Tversion(8192, P9.Version)), replySizes: [12]);
        Assert.Equal(P9.Rlerror, tooSmall[4]);
        Assert.Empty(driver.Call(P9TestClient.Encode(new Tversion(8192, P9.Version)), replySizes: [5]));
        Assert.Empty(driver.Call([1, 2], replySizes: [5]));
    }
}

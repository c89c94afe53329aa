using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio9p;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

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

    /// <summary>A file of <paramref name="length"/> random bytes, created through the device and open on fid 0.</summary>
    private byte[] CreateFile(P9GuestDriver driver, int length)
    {
        Decode<Rversion>(driver.Call(P9TestClient.Encode(new Tversion(512 * 1024, P9.Version))));
        Decode<Rattach>(driver.Call(P9TestClient.Encode(new Tattach(0, P9.NoFid, "u", "rw", 0))));
        string name = $"inflight-{Guid.NewGuid():N}";
        Decode<Rlcreate>(driver.Call(P9TestClient.Encode(new Tlcreate(0, name, 2, 0x1a4, 0)), replySizes: [24]));
        var data = new byte[length];
        new Random(length).NextBytes(data);
        Assert.Equal((uint)length, Decode<Rwrite>(driver.Call(P9TestClient.Encode(new Twrite(0, 0, (uint)length), data: data), requestSplits: [23], replySizes: [11])).Count);
        return data;
    }

    [Fact]
    public void Requests_in_flight_together_all_complete_once_and_a_Tflush_is_answered_after_its_target()
    {
        using var driver = new P9GuestDriver(_tree.Server());
        var data = CreateFile(driver, 8 * 4096);
        for (int round = 0; round < 20; round++)
        {
            // Six zero-copy reads (tags 10..15) and a Tflush of tag 12 in one notify: the workers
            // serve the reads concurrently, and the flush must wait until tag 12 has been used.
            var reads = new List<(P9GuestDriver.PreparedChain Chain, ushort Tag, int Offset)>();
            for (ushort tag = 10; tag < 16; tag++)
            {
                int offset = (tag - 10) * 4096 + round;
                var chain = driver.Prepare(P9TestClient.Encode(new Tread(0, (ulong)offset, 2 * 4096), tag), replySizes: [11, 4096, 4096]);
                driver.Put(chain.Head);
                reads.Add((chain, tag, offset));
            }
            var flush = driver.Prepare(P9TestClient.Encode(new Tflush(12), tag: 20), replySizes: [7]);
            driver.Put(flush.Head);
            driver.Notify();

            var used = driver.WaitAllUsedInOrder();
            Assert.Equal(7, used.Count);
            Assert.Equal(used.Count, used.Select(u => u.Head).Distinct().Count());
            foreach (var (chain, tag, offset) in reads)
            {
                var (_, length) = used.Single(u => u.Head == chain.Head);
                var reply = chain.Reply(driver.Memory, length);
                Assert.Equal(P9.Rread, reply[4]);
                Assert.Equal(tag, BinaryPrimitives.ReadUInt16LittleEndian(reply.AsSpan(5)));
                int expected = Math.Min(2 * 4096, data.Length - offset);
                Assert.Equal(11 + expected, (int)length);
                Assert.Equal(data.AsSpan(offset, expected).ToArray(), reply[11..]);
            }
            var flushReply = flush.Reply(driver.Memory, used.Single(u => u.Head == flush.Head).Length);
            Assert.Equal(P9.Rflush, flushReply[4]);
            Assert.Equal(20, BinaryPrimitives.ReadUInt16LittleEndian(flushReply.AsSpan(5)));
            int target = used.FindIndex(u => u.Head == reads.Single(r => r.Tag == 12).Chain.Head);
            Assert.True(used.FindIndex(u => u.Head == flush.Head) > target, "Rflush came before the request it flushes");
        }
        Assert.Equal(0, driver.Errors);
    }

    [Fact]
    public void A_reset_with_requests_in_flight_drops_their_completions_and_the_device_goes_on()
    {
        using var driver = new P9GuestDriver(_tree.Server());
        for (int round = 0; round < 10; round++)
        {
            CreateFile(driver, 4 * 4096);
            for (int i = 0; i < 6; i++)
                driver.Put(driver.Prepare(P9TestClient.Encode(new Tread(0, 0, 4 * 4096), (ushort)i), replySizes: [11, 4096, 4096, 4096, 4096]).Head);
            driver.Notify();
            driver.ResetAndReactivate();
            // Nothing in flight any more (the dropped requests may still have been writing into these slots).
            Assert.True(SpinWait.SpinUntil(() => driver.Device.SnapshotBlocker is null, TimeSpan.FromSeconds(10)), driver.Device.SnapshotBlocker);
        }
        // The old sessions are gone (fids too): a fresh one works, and its reads come back whole.
        var data = CreateFile(driver, 4 * 4096);
        var reply = driver.Call(P9TestClient.Encode(new Tread(0, 0, 4 * 4096)), replySizes: [11, 4096, 4096, 4096, 4096]);
        Assert.Equal(data, reply[11..]);
        Assert.Equal(0, driver.Errors);
    }
}

using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Vmm.Tests.NineP;

/// <summary>The dispatcher's map from request type to handler, seen through <see cref="P9Server.Process"/>.</summary>
public sealed class P9DispatcherTests : IClassFixture<TrapTree>
{
    private readonly TrapTree _tree;

    public P9DispatcherTests(TrapTree tree) => _tree = tree;

    /// <summary>The type byte of every request record the codec knows (T*, implementing IP9Message).</summary>
    private static HashSet<byte> RequestTypes() =>
        typeof(P9Server).Assembly.GetTypes()
            .Where(t => t.IsValueType && t.Name.StartsWith('T') && t.GetInterfaces().Any(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IP9Message<>)))
            .Select(t => (byte)t.GetProperty("Type")!.GetValue(null)!)
            .ToHashSet();

    [Fact]
    public void Every_request_type_reaches_a_handler_and_every_other_byte_is_refused_with_einval()
    {
        using var server = _tree.Server();
        var c = new P9TestClient(server);
        var requests = RequestTypes();
        Assert.Equal(28, requests.Count); // 9P2000.L as served: Tversion … Tremove, Tauth included
        for (int type = 0; type < 256; type++)
        {
            // A header with no body: a handler's decoder finds it truncated (EPROTO), Tauth is refused
            // outright (EOPNOTSUPP), and a type the server does not serve never gets that far (EINVAL).
            var message = new byte[P9.HeaderSize];
            BinaryPrimitives.WriteUInt32LittleEndian(message, P9.HeaderSize);
            message[4] = (byte)type;
            BinaryPrimitives.WriteUInt16LittleEndian(message.AsSpan(5), (ushort)(0x4200 + type));
            var reply = c.Raw(message);
            int expected = type == P9.Tauth ? HostFs.EOPNOTSUPP : requests.Contains((byte)type) ? HostFs.EPROTO : HostFs.EINVAL;
            Assert.True(expected == P9TestClient.ErrnoOf(reply), $"type {type}: errno {P9TestClient.ErrnoOf(reply)}, expected {expected}");
            Assert.Equal((ushort)(0x4200 + type), BinaryPrimitives.ReadUInt16LittleEndian(reply.AsSpan(5)));
        }
    }

    [Fact]
    public void A_reset_session_forgets_the_msize_and_the_fids()
    {
        using var server = _tree.Server();
        var c = new P9TestClient(server);
        c.Version(64 * 1024);
        c.Attach(0, "rw");
        Assert.Equal(64u * 1024, server.Msize);
        Assert.Equal(1, server.FidCount);
        server.ResetSession();
        Assert.Equal(P9Session.InitialMsize, server.Msize);
        Assert.Equal(0, server.FidCount);
        // Before the next Tversion, a request larger than the initial msize is refused.
        var big = P9TestClient.Encode(new Twalk(0, 1, [new string('n', 255), new string('n', 255)]));
        var padded = new byte[P9Session.InitialMsize + 1];
        big.CopyTo(padded, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(padded, (uint)padded.Length);
        Assert.Equal(HostFs.EMSGSIZE, P9TestClient.ErrnoOf(c.Raw(padded)));
    }
}

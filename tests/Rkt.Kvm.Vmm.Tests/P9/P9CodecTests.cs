using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Vmm.Tests.NineP;

public sealed class P9CodecTests
{
    private static readonly P9.Qid Q = new(P9.QidDir, 7, 0x1122334455667788);

    /// <summary>Encodes, decodes and encodes again: the bytes must be equal and the type byte right.</summary>
    private static void RoundTrip<T>(T message) where T : IP9Message<T>
    {
        var first = P9TestClient.Encode(message, tag: 0x4242);
        Assert.Equal(T.Type, first[4]);
        Assert.Equal((uint)first.Length, BinaryPrimitives.ReadUInt32LittleEndian(first));
        var decoded = P9Messages.Decode<T>(first, out ushort tag);
        Assert.Equal(0x4242, tag);
        Assert.Equal(first, P9TestClient.Encode(decoded, tag: 0x4242));
    }

    [Fact]
    public void Every_message_round_trips()
    {
        RoundTrip(new Tversion(8192, "9P2000.L")); RoundTrip(new Rversion(8192, "9P2000.L"));
        RoundTrip(new Tauth(1, "u", "a", 5)); RoundTrip(new Rauth(Q));
        RoundTrip(new Tattach(1, P9.NoFid, "root", "data", 0)); RoundTrip(new Rattach(Q));
        RoundTrip(new Rlerror(2));
        RoundTrip(new Tflush(9)); RoundTrip(new Rflush());
        RoundTrip(new Twalk(1, 2, ["a", "..", "ü"])); RoundTrip(new Rwalk([Q, Q]));
        RoundTrip(new Tgetattr(1, P9.StatsBasic));
        RoundTrip(new Rgetattr(P9.StatsBasic, Q, 0x81a4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17));
        RoundTrip(new Tsetattr(1, 0x1ff, 0x1a4, 1, 2, 3, 4, 5, 6, 7)); RoundTrip(new Rsetattr());
        RoundTrip(new Tlopen(1, 2)); RoundTrip(new Rlopen(Q, 0));
        RoundTrip(new Tlcreate(1, "f", 0x42, 0x1a4, 0)); RoundTrip(new Rlcreate(Q, 4096));
        RoundTrip(new Tread(1, 10, 20)); RoundTrip(new Rread(20));
        RoundTrip(new Twrite(1, 10, 20)); RoundTrip(new Rwrite(20));
        RoundTrip(new Treaddir(1, 0, 4096)); RoundTrip(new Rreaddir(0));
        RoundTrip(new Tmkdir(1, "d", 0x1ed, 0)); RoundTrip(new Rmkdir(Q));
        RoundTrip(new Tsymlink(1, "l", "../t", 0)); RoundTrip(new Rsymlink(Q));
        RoundTrip(new Tlink(1, 2, "h")); RoundTrip(new Rlink());
        RoundTrip(new Trenameat(1, "a", 2, "b")); RoundTrip(new Rrenameat());
        RoundTrip(new Trename(1, 2, "b")); RoundTrip(new Rrename());
        RoundTrip(new Tunlinkat(1, "a", 0x200)); RoundTrip(new Runlinkat());
        RoundTrip(new Treadlink(1)); RoundTrip(new Rreadlink("/x"));
        RoundTrip(new Tstatfs(1)); RoundTrip(new Rstatfs(1, 2, 3, 4, 5, 6, 7, 8, 255));
        RoundTrip(new Tfsync(1, 1)); RoundTrip(new Rfsync());
        RoundTrip(new Txattrwalk(1, 2, "user.x")); RoundTrip(new Rxattrwalk(5));
        RoundTrip(new Txattrcreate(1, "user.x", 5, 0)); RoundTrip(new Rxattrcreate());
        RoundTrip(new Tlock(1, P9.LockWrite, 1, 0, 0, 42, "host")); RoundTrip(new Rlock(P9.LockBlocked));
        RoundTrip(new Tgetlock(1, P9.LockRead, 0, 10, 42, "host")); RoundTrip(new Rgetlock(P9.LockUnlock, 0, 10, 42, "host"));
        RoundTrip(new Tmknod(1, "n", 0x81a4, 0, 0, 0)); RoundTrip(new Rmknod(Q));
        RoundTrip(new Tclunk(1)); RoundTrip(new Rclunk());
        RoundTrip(new Tremove(1)); RoundTrip(new Rremove());
    }

    [Fact]
    public void Reader_refuses_truncated_trailing_and_invalid_input()
    {
        var full = P9TestClient.Encode(new Twalk(1, 2, ["abc"]));
        for (int cut = 0; cut < full.Length; cut++)
        {
            var cutMessage = full[..cut];
            if (cut >= 4) BinaryPrimitives.WriteUInt32LittleEndian(cutMessage, (uint)cut);
            Assert.Throws<P9Error>(() => P9Messages.Decode<Twalk>(cutMessage, out _));
        }
        var trailing = P9TestClient.Encode(new Tclunk(1)).Concat(new byte[] { 0 }).ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(trailing, (uint)trailing.Length);
        Assert.Equal(HostFs.EPROTO, Assert.Throws<P9Error>(() => P9Messages.Decode<Tclunk>(trailing, out _)).Errno);
        var badUtf8 = P9TestClient.Encode(new Twalk(1, 2, ["ab"]));
        badUtf8[^1] = 0xFF;
        Assert.Equal(HostFs.EINVAL, Assert.Throws<P9Error>(() => P9Messages.Decode<Twalk>(badUtf8, out _)).Errno);
        var tooMany = P9TestClient.Encode(new Twalk(1, 2, Enumerable.Repeat("a", 17).ToArray()));
        Assert.Equal(HostFs.EINVAL, Assert.Throws<P9Error>(() => P9Messages.Decode<Twalk>(tooMany, out _)).Errno);
    }

    [Theory]
    [InlineData("ok", true)]
    [InlineData("", false)]
    [InlineData("a/b", false)]
    [InlineData("a\0b", false)]
    [InlineData(".", false)]
    [InlineData("..", false)]
    [InlineData("...", true)]
    public void Names_are_single_components(string name, bool valid) => Assert.Equal(valid, P9.IsValidName(name));

    [Fact]
    public void Over_long_names_are_refused()
    {
        Assert.True(P9.IsValidName(new string('a', 255)));
        Assert.False(P9.IsValidName(new string('a', 256)));
        Assert.False(P9.IsValidName(new string('é', 128))); // 256 bytes in UTF-8
    }
}

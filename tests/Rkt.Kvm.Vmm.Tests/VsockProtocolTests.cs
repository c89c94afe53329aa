using System.Text;
using Rkt.Kvm.Vmm.Devices.Vsock;

namespace Rkt.Kvm.Vmm.Tests;

public class HybridVsockHandshakeTests
{
    private static ConnectLineStatus Parse(string text, out uint port) => HybridVsockHandshake.Parse(Encoding.ASCII.GetBytes(text), out port, out _);

    [Theory]
    [InlineData("CONNECT 1024\n", 1024u)]
    [InlineData("connect 52\n", 52u)]
    [InlineData("Connect 4294967295\n", uint.MaxValue)]
    [InlineData("CONNECT 00000000000000000000001\n", 1u)] // exactly 32 bytes
    public void Valid_lines(string line, uint expected)
    {
        Assert.Equal(ConnectLineStatus.Valid, Parse(line, out uint port));
        Assert.Equal(expected, port);
    }

    [Fact]
    public void Consumed_covers_the_line_so_data_after_it_is_kept()
    {
        Assert.Equal(ConnectLineStatus.Valid, HybridVsockHandshake.Parse("CONNECT 7\nPRI * HTTP/2"u8, out _, out int consumed));
        Assert.Equal(10, consumed);
    }

    [Theory]
    [InlineData("CONNECT 1024")]      // no newline yet
    [InlineData("CONN")]
    [InlineData("")]
    public void Partial_lines_need_more(string text) => Assert.Equal(ConnectLineStatus.NeedMore, Parse(text, out _));

    [Theory]
    [InlineData("GET / HTTP/1.1\n")]
    [InlineData("CONNECT\n")]
    [InlineData("CONNECT \n")]
    [InlineData("CONNECT -1\n")]
    [InlineData("CONNECT +5\n")]
    [InlineData("CONNECT 12a\n")]
    [InlineData("CONNECT 4294967296\n")]       // out of range
    [InlineData("CONNECT  1024\n")]            // two spaces
    [InlineData("CONNECT 1024 \n")]
    [InlineData("CONNECT 000000000000000000000001\n")] // 33 bytes, over the limit
    [InlineData("CONNECT 1234567890123456789012345")]  // no newline within the limit
    public void Garbage_is_invalid(string text) => Assert.Equal(ConnectLineStatus.Invalid, Parse(text, out _));

    [Fact]
    public void Ok_line_format() => Assert.Equal("OK 1073741824\n", Encoding.ASCII.GetString(HybridVsockHandshake.OkLine(1u << 30)));
}

public class VsockPacketHeaderTests
{
    private static VsockPacketHeader Rw(uint length) => new(3, 2, 1024, 5000, length, 1, VsockOp.Rw, 0, 65536, 0);

    [Fact]
    public void Header_round_trips_through_its_44_byte_encoding()
    {
        var h = new VsockPacketHeader(3, 2, 0x11223344, 0x55667788, 99, 1, VsockOp.CreditUpdate, 0, 0xAABBCCDD, 0x01020304);
        var bytes = new byte[VsockPacketHeader.Size];
        h.Write(bytes);
        Assert.Equal(3, bytes[0]);
        Assert.Equal(2, bytes[8]);
        Assert.Equal(0x44, bytes[16]);
        Assert.Equal(6, bytes[30]);
        Assert.Equal(h, VsockPacketHeader.Read(bytes));
        Assert.Throws<ArgumentException>(() => VsockPacketHeader.Read(new byte[43]));
    }

    [Fact]
    public void Valid_guest_packets_pass() => Assert.Null(Rw(100).ValidateFromGuest(3, 100));

    [Fact]
    public void Hostile_guest_packets_are_refused()
    {
        Assert.NotNull(Rw(100).ValidateFromGuest(4, 100));                             // spoofed source CID
        Assert.NotNull((Rw(1) with { DstCid = 7 }).ValidateFromGuest(3, 1));          // not to the host
        Assert.NotNull((Rw(1) with { Type = 2 }).ValidateFromGuest(3, 1));            // SEQPACKET
        Assert.NotNull((Rw(0) with { Op = (VsockOp)9 }).ValidateFromGuest(3, 0));     // unknown op
        Assert.NotNull((Rw(8) with { Op = VsockOp.Request }).ValidateFromGuest(3, 8)); // payload on a control packet
        Assert.NotNull(Rw(70_000).ValidateFromGuest(3, 70_000));                        // too big
        Assert.NotNull(Rw(100).ValidateFromGuest(3, 99));                               // claims more than supplied
        Assert.NotNull((Rw(0) with { Op = VsockOp.Shutdown, Flags = 4 }).ValidateFromGuest(3, 0));
    }
}

using System.Text;
using Rkt.Kvm.Agent;

namespace Rkt.Kvm.Agent.Tests;

public class LineProtocolTests
{
    private static byte[] A(string s) => Encoding.ASCII.GetBytes(s);

    [Theory]
    [InlineData("OK 1073741824\n", 1073741824u)]
    [InlineData("OK 0\n", 0u)]
    [InlineData("OK 4294967295\n", 4294967295u)]
    [InlineData("OK 1024", 1024u)]
    public void OkLineParses(string line, uint port)
    {
        Assert.True(HybridVsockHandshake.TryParseOk(A(line), out uint parsed));
        Assert.Equal(port, parsed);
    }

    [Theory]
    [InlineData("")]
    [InlineData("\n")]
    [InlineData("OK\n")]
    [InlineData("OK \n")]
    [InlineData("ok 5\n")]
    [InlineData("OK -1\n")]
    [InlineData("OK +1\n")]
    [InlineData("OK 4294967296\n")]
    [InlineData("OK 12 \n")]
    [InlineData("OK  12\n")]
    [InlineData("OK 12\r\n")]
    [InlineData("FAILED\n")]
    [InlineData("OK 000000000000000000000000001\n")]
    public void MalformedOkLinesAreRejected(string line) =>
        Assert.False(HybridVsockHandshake.TryParseOk(A(line), out _));

    [Fact]
    public void ConnectLineIsTheVmmFormat() =>
        Assert.Equal(A("CONNECT 1024\n"), HybridVsockHandshake.ConnectLine(AgentProtocol.GrpcPort));

    [Fact]
    public void ReadyLineRoundTrips()
    {
        var line = new ReadyLine("0.1.0", 15234);
        Assert.Equal("READY 0.1.0 15234\n", line.ToString());
        Assert.True(ReadyLine.TryParse(line.ToBytes(), out ReadyLine parsed));
        Assert.Equal(line, parsed);
    }

    [Theory]
    [InlineData("READY 1.2.3-dev+abc 0", "1.2.3-dev+abc", 0ul)]
    [InlineData("READY v 18446744073709551615\n", "v", ulong.MaxValue)]
    public void ReadyLineParses(string text, string version, ulong ms)
    {
        Assert.True(ReadyLine.TryParse(A(text), out ReadyLine parsed));
        Assert.Equal(version, parsed.AgentVersion);
        Assert.Equal(ms, parsed.MillisecondsSinceBoot);
    }

    [Theory]
    [InlineData("")]
    [InlineData("READY\n")]
    [InlineData("READY 0.1.0\n")]
    [InlineData("READY  12\n")]
    [InlineData("READY 0.1.0 \n")]
    [InlineData("READY 0.1.0 12 13\n")]
    [InlineData("READY 0.1.0 -12\n")]
    [InlineData("READY 0.1.0 18446744073709551616\n")]
    [InlineData("ready 0.1.0 12\n")]
    [InlineData("READY 0.1.\u00e9 12\n")]
    [InlineData("READY 0.1.0 12\n\n")]
    public void MalformedReadyLinesAreRejected(string text) =>
        Assert.False(ReadyLine.TryParse(Encoding.UTF8.GetBytes(text), out _));

    [Fact]
    public void OverlongReadyLineIsRejected() =>
        Assert.False(ReadyLine.TryParse(A("READY " + new string('v', 200) + " 1\n"), out _));

    [Fact]
    public void Crc32CMatchesTheCastagnoliCheckValue()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute(A("123456789")));
        Assert.Equal(0u, Crc32C.Compute([]));
    }

    [Fact]
    public void Crc32CIsTheSameInPieces()
    {
        byte[] data = new byte[10_007];
        new Random(42).NextBytes(data);
        var crc = new Crc32C();
        for (int i = 0; i < data.Length; i += 333) crc.Append(data.AsSpan(i, Math.Min(333, data.Length - i)));
        Assert.Equal(Crc32C.Compute(data), crc.Value);
    }

    [Theory]
    [InlineData(0ul)]
    [InlineData(250ul)]
    [InlineData(251ul)]
    [InlineData(123_456_789ul)]
    public void SourcePatternFollowsTheFormula(ulong offset)
    {
        byte[] chunk = new byte[1000];
        AgentProtocol.FillSourcePattern(chunk, offset);
        for (int i = 0; i < chunk.Length; i++) Assert.Equal(AgentProtocol.SourceByte(offset + (ulong)i), chunk[i]);
    }
}

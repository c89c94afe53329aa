using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Text;
using Google.Protobuf;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.GuestAgent;

namespace Rkt.Kvm.Agent.Tests;

public class GrpcFramingTests
{
    private static byte[] Frame(byte flag, uint length, int payloadBytes)
    {
        byte[] frame = new byte[5 + payloadBytes];
        frame[0] = flag;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), length);
        for (int i = 0; i < payloadBytes; i++) frame[5 + i] = (byte)i;
        return frame;
    }

    /// <summary>A sequence split into one segment per byte: the worst case for a frame parser.</summary>
    private static ReadOnlySequence<byte> Fragmented(byte[] data)
    {
        if (data.Length == 0) return ReadOnlySequence<byte>.Empty;
        var first = new Segment(data.AsMemory(0, 1), 0);
        Segment last = first;
        for (int i = 1; i < data.Length; i++) last = last.Append(data.AsMemory(i, 1));
        return new ReadOnlySequence<byte>(first, 0, last, 1);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long index) { Memory = memory; RunningIndex = index; }
        public Segment Append(ReadOnlyMemory<byte> memory) { var next = new Segment(memory, RunningIndex + Memory.Length); Next = next; return next; }
    }

    [Fact]
    public void IncompleteFramesWaitForMoreBytes()
    {
        byte[] frame = Frame(0, 10, 10);
        for (int cut = 0; cut < frame.Length; cut++)
        {
            var buffer = new ReadOnlySequence<byte>(frame, 0, cut);
            Assert.False(GrpcFraming.TryReadFrame(ref buffer, 100, out _, out _));
            Assert.Equal(cut, buffer.Length);
        }
    }

    [Fact]
    public void FramesAreTakenOneAtATimeAcrossSegments()
    {
        byte[] data = [.. Frame(0, 3, 3), .. Frame(0, 0, 0), .. Frame(0, 2, 2), 0];
        var buffer = Fragmented(data);
        Assert.True(GrpcFraming.TryReadFrame(ref buffer, 100, out var frame, out var payload));
        Assert.Equal(8, frame.Length);
        Assert.Equal(new byte[] { 0, 1, 2 }, payload.ToArray());
        Assert.True(GrpcFraming.TryReadFrame(ref buffer, 100, out _, out payload));
        Assert.True(payload.IsEmpty);
        Assert.True(GrpcFraming.TryReadFrame(ref buffer, 100, out _, out payload));
        Assert.Equal(new byte[] { 0, 1 }, payload.ToArray());
        Assert.False(GrpcFraming.TryReadFrame(ref buffer, 100, out _, out _));
        Assert.Equal(1, buffer.Length);
    }

    [Fact]
    public void CompressedFramesAreRefusedAsUnimplemented()
    {
        var buffer = new ReadOnlySequence<byte>(Frame(1, 1, 1));
        var e = Assert.Throws<GrpcException>(() => GrpcFraming.TryReadFrame(ref buffer, 100, out _, out _));
        Assert.Equal(GrpcException.Unimplemented, e.Status);
    }

    [Fact]
    public void InvalidFlagIsAnInternalError()
    {
        var buffer = new ReadOnlySequence<byte>(Frame(7, 1, 1));
        Assert.Equal(GrpcException.Internal, Assert.Throws<GrpcException>(() => GrpcFraming.TryReadFrame(ref buffer, 100, out _, out _)).Status);
    }

    [Fact]
    public void OversizedMessagesAreRefusedFromTheHeaderAlone()
    {
        var buffer = new ReadOnlySequence<byte>(Frame(0, 101, 0));
        Assert.Equal(GrpcException.ResourceExhausted, Assert.Throws<GrpcException>(() => GrpcFraming.TryReadFrame(ref buffer, 100, out _, out _)).Status);
        buffer = new ReadOnlySequence<byte>(Frame(0, 0xFFFFFFFF, 0));
        Assert.Equal(GrpcException.ResourceExhausted, Assert.Throws<GrpcException>(() => GrpcFraming.TryReadFrame(ref buffer, int.MaxValue, out _, out _)).Status);
    }

    [Fact]
    public void WrittenMessagesReadBack()
    {
        var writer = new ArrayBufferWriter<byte>();
        var sent = new Chunk { Data = ByteString.CopyFrom(Encoding.ASCII.GetBytes("hello agent")) };
        GrpcFraming.WriteMessage(writer, sent);
        GrpcFraming.WriteMessage(writer, new HealthRequest());
        Assert.Equal(5 + sent.CalculateSize() + 5, writer.WrittenCount);
        var buffer = new ReadOnlySequence<byte>(writer.WrittenMemory);
        Assert.True(GrpcFraming.TryReadFrame(ref buffer, 100, out _, out var payload));
        Assert.Equal(sent, Chunk.Parser.ParseFrom(payload));
        Assert.True(GrpcFraming.TryReadFrame(ref buffer, 100, out _, out payload));
        Assert.True(payload.IsEmpty);
        Assert.True(buffer.IsEmpty);
    }

    [Theory]
    [InlineData("100m", 100 * TimeSpan.TicksPerMillisecond)]
    [InlineData("5S", 5 * TimeSpan.TicksPerSecond)]
    [InlineData("2M", 2 * TimeSpan.TicksPerMinute)]
    [InlineData("1H", TimeSpan.TicksPerHour)]
    [InlineData("7u", 70L)]
    [InlineData("99999999n", 999999L)]
    public void GrpcTimeoutParses(string value, long ticks) => Assert.Equal(TimeSpan.FromTicks(ticks), GrpcFraming.ParseTimeout(value));

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("m")]
    [InlineData("10")]
    [InlineData("10x")]
    [InlineData("-1S")]
    [InlineData("123456789S")]
    public void MalformedGrpcTimeoutsAreIgnored(string? value) => Assert.Null(GrpcFraming.ParseTimeout(value));

    [Fact]
    public void GrpcMessageIsPercentEncoded() =>
        Assert.Equal("a%25b%0Ac%C3%A9", GrpcFraming.PercentEncode("a%b\nc\u00e9"));

    [Fact]
    public async Task CallReaderRejectsATruncatedRequestStream()
    {
        var pipe = new Pipe();
        await pipe.Writer.WriteAsync(Frame(0, 10, 4));
        await pipe.Writer.CompleteAsync();
        var call = new GrpcCall(pipe.Reader, new Pipe().Writer, CancellationToken.None);
        var e = await Assert.ThrowsAsync<GrpcException>(async () => await call.ReadAsync(Chunk.Parser));
        Assert.Equal(GrpcException.Internal, e.Status);
    }

    [Fact]
    public async Task UnaryReaderRejectsTwoMessages()
    {
        var pipe = new Pipe();
        var writer = new ArrayBufferWriter<byte>();
        GrpcFraming.WriteMessage(writer, new HealthRequest());
        GrpcFraming.WriteMessage(writer, new HealthRequest());
        await pipe.Writer.WriteAsync(writer.WrittenMemory);
        await pipe.Writer.CompleteAsync();
        var call = new GrpcCall(pipe.Reader, new Pipe().Writer, CancellationToken.None);
        await Assert.ThrowsAsync<GrpcException>(async () => await call.ReadSingleAsync(HealthRequest.Parser));
    }
}

public class ProcStatsTests
{
    [Fact]
    public void StatFieldsAreCountedAfterTheCommandName()
    {
        // comm may contain spaces and ')'; fields 10, 12 and 22 are minflt, majflt and starttime.
        string stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 555 0 7 0 1 2 0 0 20 0 9 0 98765 100000 300 18446744073709551615\n";
        Assert.True(ProcStats.ParseStat(Encoding.ASCII.GetBytes(stat), out ulong minflt, out ulong majflt, out ulong start));
        Assert.Equal(555ul, minflt);
        Assert.Equal(7ul, majflt);
        Assert.Equal(98765ul, start);
    }

    [Fact]
    public void TruncatedStatIsRejected() =>
        Assert.False(ProcStats.ParseStat(Encoding.ASCII.GetBytes("1 (init) S 0 1 1 0 -1 4194560 555"), out _, out _, out _));

    [Fact]
    public void StatusFieldsAreFoundByKeyAtLineStart()
    {
        byte[] status = Encoding.ASCII.GetBytes("Name:\tx\nVmHWM:\t    9000 kB\nVmRSS:\t    8144 kB\nThreads:\t8\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n");
        Assert.Equal(8144ul, ProcStats.StatusField(status, "VmRSS:"u8));
        Assert.Equal(9000ul, ProcStats.StatusField(status, "VmHWM:"u8));
        Assert.Equal(8ul, ProcStats.StatusField(status, "Threads:"u8));
        Assert.Equal(12ul, ProcStats.StatusField(status, "voluntary_ctxt_switches:"u8));
        Assert.Equal(3ul, ProcStats.StatusField(status, "nonvoluntary_ctxt_switches:"u8));
        Assert.Equal(0ul, ProcStats.StatusField(status, "VmSwap:"u8));
    }

    [Fact]
    public void OwnProcessFiguresAreRead()
    {
        var stats = ProcStats.Capture();
        Assert.True(stats.MinorFaults > 0);
        Assert.True(stats.VmRssBytes > 0 && stats.VmHwmBytes >= stats.VmRssBytes);
        Assert.True(stats.Threads >= 1);
    }
}

public class AgentOptionsTests
{
    [Fact]
    public void HostModeOptionsParse()
    {
        var o = AgentOptions.Parse(["--listen-unix", "/tmp/a", "--ready-unix", "/tmp/r"], strict: true);
        Assert.Equal(("/tmp/a", "/tmp/r", 1024u), (o.ListenUnix, o.ReadyUnix, o.VsockPort));
    }

    [Fact]
    public void UnknownArgumentsFailOnlyOutsidePid1()
    {
        // The kernel passes unknown command-line words (e.g. "noxsave") to init as arguments.
        Assert.Throws<ArgumentException>(() => AgentOptions.Parse(["noxsave"], strict: true));
        var o = AgentOptions.Parse(["noxsave", "--vsock-port", "2000"], strict: false);
        Assert.Equal((null, 2000u), (o.ListenUnix, o.VsockPort));
    }
}

public class AgentBenchServiceTests
{
    [Theory]
    [InlineData("1", true)]
    [InlineData(null, false)]
    [InlineData("", false)]
    [InlineData("0", false)]
    [InlineData("yes", false)]
    public void OnlyTheKernelWordsValueTurnsTheServiceOn(string? value, bool served) =>
        Assert.Equal(served, AgentBenchService.IsRequested(value));

    [Fact]
    public void TheKernelWordSetsTheVariableTheAgentReads()
    {
        // The kernel hands key=value words to init's environment only when the key has no dot.
        Assert.DoesNotContain('.', AgentProtocol.BenchServiceVariable);
        string[] parts = AgentProtocol.BenchServiceKernelWord.Split('=');
        Assert.Equal(AgentProtocol.BenchServiceVariable, parts[0]);
        Assert.True(AgentBenchService.IsRequested(parts[1]));
    }

    [Fact]
    public void ServiceNamesAreTheGeneratedOnes()
    {
        Assert.Equal(AgentProtocol.ServiceName, Rkt.Kvm.Agent.V1.Agent.Descriptor.FullName);
        Assert.Equal(AgentProtocol.BenchServiceName, AgentBench.Descriptor.FullName);
    }
}

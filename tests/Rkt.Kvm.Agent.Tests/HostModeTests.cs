using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Xunit.Abstractions;

namespace Rkt.Kvm.Agent.Tests;

/// <summary>Every RPC of a real host-mode agent, through the real client.</summary>
public class HostModeTests(AgentFixture fixture) : IClassFixture<AgentFixture>
{
    private AgentProcess Agent => fixture.Agent;

    internal static byte[] RandomBytes(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>Sends <paramref name="data"/> through Echo in chunks while reading concurrently; returns what came back.</summary>
    internal static async Task<byte[]> EchoAsync(AgentClient client, byte[] data, int chunk)
    {
        using var call = client.Bench.Echo(deadline: client.Deadline(TimeSpan.FromSeconds(120)));
        var received = new MemoryStream(data.Length);
        Task reading = Task.Run(async () =>
        {
            await foreach (Chunk c in call.ResponseStream.ReadAllAsync()) received.Write(c.Data.Span);
        });
        for (int offset = 0; offset < data.Length; offset += chunk)
            await call.RequestStream.WriteAsync(new Chunk { Data = ByteString.CopyFrom(data, offset, Math.Min(chunk, data.Length - offset)) });
        await call.RequestStream.CompleteAsync();
        await reading;
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        return received.ToArray();
    }

    [Fact]
    public async Task ReadyLineCarriesVersionAndBootTime()
    {
        Assert.Equal("0.1.0", Agent.Ready.AgentVersion);
        double uptimeMs = double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture) * 1000;
        Assert.InRange((double)Agent.Ready.MillisecondsSinceBoot, uptimeMs - 120_000, uptimeMs);
        using var client = Agent.Client();
        Assert.Equal(Agent.Ready.MillisecondsSinceBoot, (await client.GuestInfoAsync()).BootToReadyMs);
    }

    [Fact]
    public async Task HealthAnswers()
    {
        using var client = Agent.Client();
        HealthReply reply = await client.HealthAsync();
        Assert.Equal("0.1.0", reply.AgentVersion);
        Assert.Equal(AgentMode.HostProcess, reply.Mode);
    }

    [Fact]
    public async Task GuestInfoDescribesThisMachineAndTheAgent()
    {
        using var client = Agent.Client();
        GuestInfoReply info = await client.GuestInfoAsync();
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), info.KernelRelease);
        Assert.Equal((uint)Environment.ProcessorCount, info.OnlineCpus);
        long memTotalKb = long.Parse(File.ReadAllLines("/proc/meminfo")[0].Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        Assert.Equal((ulong)memTotalKb * 1024, info.MemTotalBytes);
        Assert.InRange(info.MemAvailableBytes, 1ul, info.MemTotalBytes);
        Assert.True(info.UptimeMs >= info.BootToReadyMs);
        Assert.True(info.MainToReadyUs > 0);
        Assert.True(info.AtReady.MinorFaults > 0 && info.AtReady.VmRssBytes > 0 && info.AtReady.VmHwmBytes >= info.AtReady.VmRssBytes);
        Assert.True(info.Now.MinorFaults >= info.AtReady.MinorFaults);
        Assert.True(info.Now.Threads >= 1);
        Assert.Equal("0.1.0", info.AgentVersion);
    }

    [Fact]
    public async Task EchoReturnsEveryByteInOrder()
    {
        byte[] data = RandomBytes(8 * 1024 * 1024 + 12345, 1);
        using var client = Agent.Client();
        byte[] back = await EchoAsync(client, data, 64 * 1024);
        Assert.Equal(data.Length, back.Length);
        Assert.Equal(Crc32C.Compute(data), Crc32C.Compute(back));
        Assert.True(data.AsSpan().SequenceEqual(back));
    }

    [Fact]
    public async Task EchoOfEmptyAndLargestChunks()
    {
        using var client = Agent.Client();
        using var call = client.Bench.Echo(deadline: client.Deadline());
        byte[] big = RandomBytes(AgentProtocol.MaxMessageBytes - 16, 2);
        await call.RequestStream.WriteAsync(new Chunk());
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        Assert.True(call.ResponseStream.Current.Data.IsEmpty);
        await call.RequestStream.WriteAsync(new Chunk { Data = ByteString.CopyFrom(big) });
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        Assert.True(big.AsSpan().SequenceEqual(call.ResponseStream.Current.Data.Span));
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext(CancellationToken.None));
    }

    [Fact]
    public async Task SixtyFourConcurrentEchoStreams()
    {
        using var client = Agent.Client();
        var streams = Enumerable.Range(0, 64).Select(async i =>
        {
            byte[] data = RandomBytes(256 * 1024 + i, 100 + i);
            byte[] back = await EchoAsync(client, data, 16 * 1024 + i);
            return data.AsSpan().SequenceEqual(back);
        }).ToArray();
        bool[] results = await Task.WhenAll(streams);
        Assert.All(results, Assert.True);
    }

    [Fact]
    public async Task SinkCountsAndChecksumsTheUpload()
    {
        byte[] data = RandomBytes(8 * 1024 * 1024 + 7, 3);
        using var client = Agent.Client();
        using var call = client.Bench.Sink(deadline: client.Deadline());
        int chunks = 0;
        for (int offset = 0; offset < data.Length; offset += 100_000, chunks++)
            await call.RequestStream.WriteAsync(new Chunk { Data = ByteString.CopyFrom(data, offset, Math.Min(100_000, data.Length - offset)) });
        await call.RequestStream.CompleteAsync();
        SinkReply reply = await call;
        Assert.Equal((ulong)data.Length, reply.Bytes);
        Assert.Equal((ulong)chunks, reply.Chunks);
        Assert.Equal(Crc32C.Compute(data), reply.Crc32C);
    }

    [Theory]
    [InlineData(8 * 1024 * 1024 + 3, 0)]
    [InlineData(1_000_000, 4093)]
    [InlineData(0, 0)]
    public async Task SourceSendsThePattern(int bytes, int chunkSize)
    {
        using var client = Agent.Client();
        using var call = client.Bench.Source(new SourceRequest { Bytes = (ulong)bytes, ChunkSize = (uint)chunkSize }, deadline: client.Deadline());
        ulong offset = 0;
        int expectedChunk = chunkSize == 0 ? AgentProtocol.DefaultSourceChunk : chunkSize;
        await foreach (Chunk chunk in call.ResponseStream.ReadAllAsync())
        {
            Assert.InRange(chunk.Data.Length, 1, expectedChunk);
            ReadOnlySpan<byte> span = chunk.Data.Span;
            for (int i = 0; i < span.Length; i++)
                if (span[i] != AgentProtocol.SourceByte(offset + (ulong)i)) Assert.Fail($"byte {offset + (ulong)i} is {span[i]}");
            offset += (ulong)span.Length;
        }
        Assert.Equal((ulong)bytes, offset);
    }

    [Fact]
    public async Task SourceRefusesOversizedChunks()
    {
        using var client = Agent.Client();
        var e = await Assert.ThrowsAsync<AgentException>(() => client.Translate(async () =>
        {
            using var call = client.Bench.Source(new SourceRequest { Bytes = 10, ChunkSize = 2 * 1024 * 1024 }, deadline: client.Deadline());
            return await call.ResponseStream.MoveNext(CancellationToken.None);
        }, "Source"));
        Assert.Equal(AgentFailure.Failed, e.Failure);
        Assert.Contains("InvalidArgument", e.Message);
        Assert.Contains("chunk_size", e.Message);
    }

    [Fact]
    public async Task UnknownMethodsAreUnimplemented()
    {
        using var client = Agent.Client();
        var method = new Method<HealthRequest, HealthReply>(MethodType.Unary, AgentProtocol.ServiceName, "NoSuchMethod",
            Marshallers.Create(m => m.ToByteArray(), HealthRequest.Parser.ParseFrom), Marshallers.Create(m => m.ToByteArray(), HealthReply.Parser.ParseFrom));
        var e = await Assert.ThrowsAsync<RpcException>(() => client.CallInvoker.AsyncUnaryCall(method, null, new CallOptions(deadline: client.Deadline()), new HealthRequest()).ResponseAsync);
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
        Assert.Contains("/rkt.kvm.agent.v1.Agent/NoSuchMethod", e.Status.Detail);
    }

    [Fact]
    public async Task DeadlinesEndLongCalls()
    {
        using var client = Agent.Client();
        var e = await Assert.ThrowsAsync<AgentException>(() => client.Translate(async () =>
        {
            using var call = client.Bench.Echo(deadline: client.Deadline(TimeSpan.FromMilliseconds(300)));
            await call.RequestStream.WriteAsync(new Chunk { Data = ByteString.CopyFromUtf8("x") });
            while (await call.ResponseStream.MoveNext(CancellationToken.None)) { }
            return 0;
        }, "Echo"));
        Assert.Equal(AgentFailure.Timeout, e.Failure);
        // The agent is still fine afterwards.
        Assert.Equal("0.1.0", (await client.HealthAsync()).AgentVersion);
    }
}

/// <summary>Process-level behaviour: shutdown, VM-gone errors, start-up figures.</summary>
public class AgentLifecycleTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ShutdownMakesTheHostModeAgentExitCleanly()
    {
        await using var agent = await AgentProcess.StartAsync();
        using var client = agent.Client();
        await client.ShutdownAsync();
        await agent.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, agent.Process.ExitCode);
        Assert.False(File.Exists(agent.SocketPath));
    }

    [Fact]
    public async Task SigtermMakesTheAgentExitCleanly()
    {
        await using var agent = await AgentProcess.StartAsync();
        using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", agent.Process.Id.ToString(CultureInfo.InvariantCulture)]))
            await kill.WaitForExitAsync();
        await agent.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, agent.Process.ExitCode);
    }

    [Fact]
    public async Task CallsToAKilledAgentFailAsUnreachable()
    {
        await using var agent = await AgentProcess.StartAsync();
        using var client = agent.Client(new AgentClientOptions { ConnectTimeout = TimeSpan.FromMilliseconds(500) });
        await client.HealthAsync();
        agent.Process.Kill();
        await agent.Process.WaitForExitAsync();
        var e = await Assert.ThrowsAsync<AgentException>(() => client.HealthAsync());
        Assert.Equal(AgentFailure.Unreachable, e.Failure);
        Assert.Contains(agent.SocketPath, e.Message);
        output.WriteLine(e.Message);
    }

    [Fact]
    public async Task MissingSocketIsReportedAsVmNotRunning()
    {
        string path = $"/tmp/rkt-agent-missing-{Guid.NewGuid():N}.sock";
        using var client = AgentClient.ForVm(path, new AgentClientOptions { ConnectTimeout = TimeSpan.FromMilliseconds(300) });
        var e = await Assert.ThrowsAsync<AgentException>(() => client.HealthAsync());
        Assert.Equal(AgentFailure.Unreachable, e.Failure);
        Assert.Contains("does not exist", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public async Task WithoutBeingAskedTheAgentDoesNotServeTheBenchmarkService()
    {
        await using var agent = await AgentProcess.StartAsync(benchService: false);
        using var client = agent.Client();
        void AssertUnimplemented(RpcException e, string method)
        {
            Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
            Assert.Contains($"/{AgentProtocol.BenchServiceName}/{method}", e.Status.Detail);
            Assert.Contains(AgentProtocol.BenchServiceKernelWord, e.Status.Detail);
        }
        using (var echo = client.Bench.Echo(deadline: client.Deadline()))
            AssertUnimplemented(await Assert.ThrowsAsync<RpcException>(() => echo.ResponseStream.MoveNext(CancellationToken.None)), "Echo");
        using (var sink = client.Bench.Sink(deadline: client.Deadline()))
            AssertUnimplemented(await Assert.ThrowsAsync<RpcException>(() => sink.ResponseAsync), "Sink");
        using (var source = client.Bench.Source(new SourceRequest { Bytes = 1 }, deadline: client.Deadline()))
            AssertUnimplemented(await Assert.ThrowsAsync<RpcException>(() => source.ResponseStream.MoveNext(CancellationToken.None)), "Source");
        // The agent's own service is unaffected.
        Assert.Equal("0.1.0", (await client.HealthAsync()).AgentVersion);
    }

    [Fact]
    public async Task ReadyListenerTimesOutWithASentence()
    {
        using var listener = new ReadyListener($"/tmp/rkt-agent-ready-{Guid.NewGuid():N}.sock");
        var e = await Assert.ThrowsAsync<AgentException>(() => listener.WaitAsync(TimeSpan.FromMilliseconds(200)));
        Assert.Equal(AgentFailure.Timeout, e.Failure);
        Assert.Contains("did not report ready", e.Message);
    }

    [Fact]
    public async Task ReadyListenerSkipsEmptyConnectionsAndRejectsGarbage()
    {
        string path = $"/tmp/rkt-agent-ready-{Guid.NewGuid():N}.sock";
        using var listener = new ReadyListener(path);
        Task<ReadyLine> waiting = listener.WaitAsync(TimeSpan.FromSeconds(10));
        using (var empty = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, 0))
            empty.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        using (var good = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, 0))
        {
            good.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
            good.Send("READY 9.9 4242\n"u8);
        }
        Assert.Equal(new ReadyLine("9.9", 4242), await waiting);

        waiting = listener.WaitAsync(TimeSpan.FromSeconds(10));
        using (var bad = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, 0))
        {
            bad.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
            bad.Send("HELLO\n"u8);
        }
        var e = await Assert.ThrowsAsync<AgentException>(() => waiting);
        Assert.Equal(AgentFailure.Failed, e.Failure);
        Assert.Contains("'HELLO\\n'", e.Message);
    }

    /// <summary>Start-up figures of the published static agent (skipped when out/agent/rkt-kvm-agent is not built).</summary>
    [Fact]
    public async Task PublishedAgentStartsSmall()
    {
        string? binary = AgentProcess.PublishedBinary();
        if (binary is null)
        {
            output.WriteLine("out/agent/rkt-kvm-agent not published: nothing to measure (dotnet publish guest-agent/Rkt.Kvm.GuestAgent -c Release -r linux-x64 -o out/agent)");
            return;
        }
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await using var agent = await AgentProcess.StartAsync(binary);
        long rss = agent.StatusKb("VmRSS"), hwm = agent.StatusKb("VmHWM"), minflt = agent.MinorFaults();
        using var client = agent.Client();
        await client.HealthAsync();
        TimeSpan toHealth = clock.Elapsed;
        GuestInfoReply info = await client.GuestInfoAsync();
        output.WriteLine($"{binary}: {new FileInfo(binary).Length} bytes; exec->READY {agent.ExecToReady.TotalMilliseconds:0.0} ms, exec->first Health {toHealth.TotalMilliseconds:0.0} ms; " +
            $"at READY: VmRSS {rss} kB, VmHWM {hwm} kB, minflt {minflt}; agent's own at_ready: RSS {info.AtReady.VmRssBytes / 1024} kB, minflt {info.AtReady.MinorFaults}, threads {info.AtReady.Threads}, syscr+syscw {info.AtReady.ReadSyscalls}+{info.AtReady.WriteSyscalls}, main->ready {info.MainToReadyUs} us");
        Assert.InRange(hwm, 1, 16 * 1024);
    }
}

using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Grpc.Core;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.GuestAgent;
using Rkt.Kvm.GuestAgent.Resume;

namespace Rkt.Kvm.Agent.Tests;

/// <summary>Resume's parts that run safely on the test host: the rand_pool_info layout, validation, the
/// host-process refusal, the error mapping (ioctls aimed at /dev/null), and the real ioctls with zero credit
/// (mixing uncredited random bytes into a pool and reseeding takes nothing from it). Nothing here sets the clock:
/// every guest-mode call sends unix_time_ns 0.</summary>
public class ResumeTests
{
    [DllImport("libc")] private static extern uint geteuid();

    private static ResumeRequest Request(int entropyBytes, long unixTimeNs = 0) =>
        new() { UnixTimeNs = unixTimeNs, Entropy = ByteString.CopyFrom(HostModeTests.RandomBytes(entropyBytes, entropyBytes)) };

    [Fact]
    public void The_ioctl_numbers_are_those_of_linux_random_h()
    {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr; _IOC_WRITE = 1.
        Assert.Equal((1u << 30) | (8u << 16) | ((uint)'R' << 8) | 0x03, KernelRng.RNDADDENTROPY);
        Assert.Equal(((uint)'R' << 8) | 0x07, KernelRng.RNDRESEEDCRNG);
    }

    [Fact]
    public void PoolInfo_credits_only_the_hwrng_bytes_and_carries_both_padded_to_u32()
    {
        byte[] hwrng = [1, 2, 3, 4, 5];
        byte[] host = [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5];
        byte[] info = KernelRng.PoolInfo(hwrng, host);
        Assert.Equal(Convert.FromHexString(
            "28000000" +                 // entropy_count: 5 bytes * 8 = 40 bits
            "0b000000" +                 // buf_size: 11 bytes
            "0102030405" + "a0a1a2a3a4a5" + "00"), // hwrng then host, padded to 12 (3 u32)
            info);

        byte[] hostOnly = KernelRng.PoolInfo([], HostModeTests.RandomBytes(32, 7));
        Assert.Equal(0, BinaryPrimitives.ReadInt32LittleEndian(hostOnly));
        Assert.Equal(32, BinaryPrimitives.ReadInt32LittleEndian(hostOnly.AsSpan(4)));
        Assert.Equal(8 + 32, hostOnly.Length);
        Assert.Equal(HostModeTests.RandomBytes(32, 7), hostOnly[8..]);
    }

    [Theory]
    [InlineData(0, 0, "carries 0 bytes of entropy; Resume needs at least 32")]
    [InlineData(31, 0, "carries 31 bytes of entropy; Resume needs at least 32")]
    [InlineData(4097, 0, "carries 4097 bytes of entropy, more than the limit of 4096")]
    [InlineData(32, -1, "unix_time_ns -1 is before 1970")]
    public void Validate_refuses_too_little_or_too_much_entropy_and_a_negative_time(int entropy, long time, string message)
    {
        var e = Assert.Throws<GrpcException>(() => ResumeHandler.Validate(Request(entropy, time)));
        Assert.Equal(GrpcException.InvalidArgument, e.Status);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Validate_accepts_32_to_4096_bytes_and_any_time_from_0()
    {
        ResumeHandler.Validate(Request(32));
        ResumeHandler.Validate(Request(4096, 1_700_000_000_000_000_000));
    }

    [Fact]
    public void A_host_process_agent_refuses_Resume_before_looking_at_the_request()
    {
        // Paths that would fail loudly if it went on: the refusal must come first.
        var handler = new ResumeHandler(AgentMode.HostProcess) { HwrngPath = "/nonexistent", UrandomPath = "/dev/null" };
        foreach (var request in new[] { Request(64, AgentNowNs()), Request(0) })
        {
            var e = Assert.Throws<GrpcException>(() => handler.Resume(request));
            Assert.Equal(GrpcException.FailedPrecondition, e.Status);
            Assert.Equal("Resume only applies in the guest: this agent runs as a host process, whose clock and RNG are the host's.", e.Message);
        }
    }

    private static long AgentNowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;

    [Fact]
    public void A_failed_reseed_is_internal_with_the_ioctl_and_errno()
    {
        var handler = new ResumeHandler(AgentMode.Guest) { HwrngPath = "/nonexistent/hwrng", UrandomPath = "/dev/null" };
        var e = Assert.Throws<GrpcException>(() => handler.Resume(Request(32)));
        Assert.Equal(GrpcException.Internal, e.Status);
        Assert.Equal("Reseeding the guest's RNG failed: ioctl RNDADDENTROPY on /dev/null: Inappropriate ioctl for device (errno 25). " +
            "The VM may still share its RNG state with its template: run no apps in it.", e.Message);

        handler = new ResumeHandler(AgentMode.Guest) { HwrngPath = "/nonexistent/hwrng", UrandomPath = "/nonexistent/urandom" };
        e = Assert.Throws<GrpcException>(() => handler.Resume(Request(32)));
        Assert.Equal(GrpcException.Internal, e.Status);
        Assert.StartsWith("Reseeding the guest's RNG failed: open /nonexistent/urandom: No such file or directory (errno 2).", e.Message);
    }

    [Fact]
    public void ReadHwrng_reads_the_bytes_treats_a_missing_device_as_absent_and_reports_other_failures()
    {
        byte[] bytes = KernelRng.ReadHwrng("/dev/urandom", KernelRng.HwrngBytes, out string? failure);
        Assert.Null(failure);
        Assert.Equal(64, bytes.Length);
        Assert.Contains(bytes, b => b != 0);

        Assert.Empty(KernelRng.ReadHwrng("/nonexistent/hwrng", 64, out failure));
        Assert.Null(failure);

        Assert.Empty(KernelRng.ReadHwrng("/tmp", 64, out failure));
        Assert.Equal("read /tmp: Is a directory (errno 21)", failure);

        Assert.Empty(KernelRng.ReadHwrng("/dev/null", 64, out failure)); // ends at once: nothing to credit
        Assert.Null(failure);
    }

    [SkippableFact]
    public void Reseed_runs_both_ioctls_on_the_real_urandom_and_the_kernel_reads_the_struct_as_laid_out()
    {
        Skip.If(!OperatingSystem.IsLinux() || geteuid() != 0, "needs root (CAP_SYS_ADMIN for RNDADDENTROPY)");
        // Zero credit: uncredited random bytes and a reseed leave the host's pool no weaker.
        KernelRng.Reseed("/dev/urandom", KernelRng.PoolInfo([], HostModeTests.RandomBytes(32, 3)));

        // A negative entropy_count is refused by the kernel with EINVAL: it reads the first int as the count.
        byte[] bad = KernelRng.PoolInfo([], HostModeTests.RandomBytes(32, 4));
        BinaryPrimitives.WriteInt32LittleEndian(bad, -8);
        var e = Assert.Throws<IOException>(() => KernelRng.Reseed("/dev/urandom", bad));
        Assert.Equal("ioctl RNDADDENTROPY on /dev/urandom: Invalid argument (errno 22)", e.Message);
    }

    [Fact]
    public void The_clock_step_is_the_move_in_whole_milliseconds_and_the_timespec_splits_the_nanoseconds()
    {
        Assert.Equal(90_061_001, RealtimeClock.StepMs(1_000_000_000_000_000_000, 1_000_090_061_001_999_999));
        Assert.Equal(-1_500, RealtimeClock.StepMs(2_000_000_000_000, 1_998_500_000_000));
        Assert.Equal(0, RealtimeClock.StepMs(5, 999_999));
        Libc.Timespec t = RealtimeClock.ToTimespec(1_700_000_000_123_456_789);
        Assert.Equal((1_700_000_000L, 123_456_789L), (t.Seconds, t.Nanoseconds));
        Assert.InRange(RealtimeClock.NowNs(), AgentNowNs() - 5_000_000_000, AgentNowNs() + 5_000_000_000);
    }
}

/// <summary>Resume through the real client against a real host-process agent: refused, and the host's clock untouched.</summary>
public class ResumeHostModeTests(AgentFixture fixture) : IClassFixture<AgentFixture>
{
    [Fact]
    public async Task A_host_process_agent_answers_Resume_with_failed_precondition()
    {
        using var client = fixture.Agent.Client();
        // The host's own time, so that even an agent that wrongly applied it would barely move the clock.
        long now = (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;
        var request = new ResumeRequest { UnixTimeNs = now, Entropy = ByteString.CopyFrom(HostModeTests.RandomBytes(32, 1)) };
        var e = await Assert.ThrowsAsync<RpcException>(() => client.Stub.ResumeAsync(request, deadline: client.Deadline()).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Equal("Resume only applies in the guest: this agent runs as a host process, whose clock and RNG are the host's.", e.Status.Detail);
    }
}

using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent.Resume;

/// <summary>
/// The Resume RPC: the host calls it first after restoring a VM from a template snapshot, so that the guest stops
/// being a clone of the template. Two pods restored from one template must not share RNG output (their kernels
/// hold the same CRNG state), and the template's wall clock is stale by its age. Calling it on a VM booted cold
/// is harmless: it reseeds and sets the clock all the same. Validation first, then the RNG (its failure is
/// INTERNAL and leaves the clock alone), then the clock.
/// </summary>
internal sealed class ResumeHandler(AgentMode mode)
{
    public const int MinEntropyBytes = 32, MaxEntropyBytes = 4096;

    private readonly Lock _lock = new();

    /// <summary>Where the bytes come from and go to; the guest's devices unless a test says otherwise.</summary>
    internal string HwrngPath { get; init; } = KernelRng.HwrngPath;
    internal string UrandomPath { get; init; } = KernelRng.UrandomPath;

    /// <summary>Throws <see cref="GrpcException"/> for a request Resume must refuse before touching anything.</summary>
    public static void Validate(ResumeRequest request)
    {
        int n = request.Entropy.Length;
        if (n < MinEntropyBytes)
            throw new GrpcException(GrpcException.InvalidArgument, $"The request carries {n} bytes of entropy; Resume needs at least {MinEntropyBytes} random bytes from the host.");
        if (n > MaxEntropyBytes)
            throw new GrpcException(GrpcException.InvalidArgument, $"The request carries {n} bytes of entropy, more than the limit of {MaxEntropyBytes}.");
        if (request.UnixTimeNs < 0)
            throw new GrpcException(GrpcException.InvalidArgument, $"unix_time_ns {request.UnixTimeNs} is before 1970; send the host's CLOCK_REALTIME, or 0 to leave the clock.");
    }

    public ResumeReply Resume(ResumeRequest request)
    {
        // As a host process the agent would reseed and step the host's own RNG and clock: never.
        if (mode != AgentMode.Guest)
            throw new GrpcException(GrpcException.FailedPrecondition, "Resume only applies in the guest: this agent runs as a host process, whose clock and RNG are the host's.");
        Validate(request);
        lock (_lock)
        {
            byte[] hwrng = KernelRng.ReadHwrng(HwrngPath, KernelRng.HwrngBytes, out string? hwrngFailure);
            if (hwrngFailure is not null) Log.Line($"rkt-kvm-agent: resume: {hwrngFailure}; mixing in the host's bytes only");
            byte[] poolInfo = KernelRng.PoolInfo(hwrng, request.Entropy.Span);
            try { KernelRng.Reseed(UrandomPath, poolInfo); }
            catch (IOException e)
            {
                throw new GrpcException(GrpcException.Internal, $"Reseeding the guest's RNG failed: {e.Message}. The VM may still share its RNG state with its template: run no apps in it.");
            }
            finally { Array.Clear(poolInfo); Array.Clear(hwrng); }

            long stepMs = 0;
            if (request.UnixTimeNs != 0)
            {
                try { stepMs = RealtimeClock.Set(request.UnixTimeNs); }
                catch (IOException e) { throw new GrpcException(GrpcException.Internal, $"Setting the guest's clock failed: {e.Message}."); }
            }
            return new ResumeReply
            {
                HwrngUsed = hwrng.Length > 0, ReseededBytes = (uint)(hwrng.Length + request.Entropy.Length), ClockStepMs = stepMs,
                AgentVersion = AgentService.Version,
            };
        }
    }
}

namespace Rkt.Kvm.GuestAgent;

/// <summary>
/// Fault points for the host's fault tests (docs/LIFETIME.md): <c>RKT_KVM_FAULTS=p1,p2,…</c> on the
/// VM's kernel command line, which the kernel hands to PID 1's environment. Only the host writes the
/// command line and nothing in the guest can change PID 1's environment, so a guest cannot arm one.
/// Each point fires once, in the order given: a point is armed only after those before it fired.
/// Points: <c>stage2:app-setup</c>, <c>stage2:app-started</c>, <c>stage2:exec-setup</c>,
/// <c>stage2:exec-started</c> (the stage2 helper SIGKILLs itself there) and <c>pod-init-after-start:APP</c>
/// (the agent SIGKILLs pod-init once the app APP has started).
/// </summary>
internal sealed class FaultPoints(string? armed)
{
    public const string Variable = "RKT_KVM_FAULTS";
    public const string PodInitAfterStart = "pod-init-after-start:";
    private const string Stage2Prefix = "stage2:";

    /// <summary>The points this agent's kernel command line armed (none in production).</summary>
    public static FaultPoints Armed { get; } = new(Environment.GetEnvironmentVariable(Variable));

    private readonly Lock _lock = new();
    private readonly Queue<string> _armed = new((armed ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    /// <summary>Fires (dequeues and returns true) when <paramref name="point"/> is the armed one.</summary>
    public bool Fire(string point)
    {
        lock (_lock)
        {
            if (_armed.Count == 0 || _armed.Peek() != point) return false;
            _armed.Dequeue();
        }
        Log.Line($"rkt-kvm-agent: fault point {point} fires");
        return true;
    }

    /// <summary>When a <c>stage2:MODE-…</c> point is armed for a helper run in <paramref name="mode"/>
    /// (app, exec), fires it and returns what the helper's RKT_KVM_FAULT is to be; null otherwise.</summary>
    public string? FireForStage2(string mode)
    {
        string? next;
        lock (_lock) next = _armed.Count > 0 ? _armed.Peek() : null;
        return next is not null && next.StartsWith(Stage2Prefix + mode + "-", StringComparison.Ordinal) && Fire(next)
            ? next[Stage2Prefix.Length..] : null;
    }
}

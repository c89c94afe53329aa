namespace Rkt.Kvm.Agent.Client;

/// <summary>Why a call to the agent failed.</summary>
public enum AgentFailure
{
    /// <summary>The agent cannot be reached: socket missing or refused, or the VM closed the connection (VM gone, or not booted yet).</summary>
    Unreachable,
    /// <summary>The call or the wait ran past its deadline.</summary>
    Timeout,
    /// <summary>The agent answered with an error, or broke the protocol.</summary>
    Failed,
    /// <summary>The agent has nothing by the name the call gave (gRPC NOT_FOUND: e.g. no such app).</summary>
    NotFound,
}

/// <summary>The one exception the agent client throws; its message is a full sentence naming the socket.</summary>
public sealed class AgentException(AgentFailure failure, string message, Exception? inner = null) : Exception(message, inner)
{
    public AgentFailure Failure { get; } = failure;
}

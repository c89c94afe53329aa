namespace Rkt.Kvm.Images.Registry;

/// <summary>A failure worth another attempt (429, 5xx, a dropped or stalled transfer); after the
/// last attempt it becomes an <see cref="ImageException"/> saying what happened.</summary>
internal sealed class TransientRegistryException(string message, TimeSpan? retryAfter = null) : Exception(message)
{
    public TimeSpan? RetryAfter { get; } = retryAfter;
}

namespace Rkt.Kvm.Vmm.Snapshot;

/// <summary>A snapshot could not be taken, or a snapshot file cannot be used for this VM; the message is one sentence saying why.</summary>
public sealed class SnapshotException(string message, Exception? inner = null) : Exception(message, inner);

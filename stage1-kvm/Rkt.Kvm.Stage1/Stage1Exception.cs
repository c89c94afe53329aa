namespace Rkt.Kvm.Stage1;

/// <summary>A pod that cannot be run as asked: a malformed manifest, an unsupported option, a
/// missing file. The message is one sentence for the user; entrypoints print it and exit non-zero.</summary>
public class Stage1Exception(string message, Exception? inner = null) : Exception(message, inner);

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>
/// rkt's per-app stream modes (Documentation/devel/log-attach-design.md): the annotations
/// <c>coreos.com/rkt/stage2/{stdin,stdout,stderr}</c>, set by stage0's <c>--stdin --stdout --stderr</c>
/// and by <c>--interactive</c>. Here: stdin <c>interactive</c> gives the app the user's terminal
/// through stage1 run, <c>tty</c> a terminal of its own in the pod that attach reaches, <c>stream</c>
/// a stdin pipe attach writes; output is always kept by the agent (log) and can be attached to.
/// </summary>
public static class StreamModes
{
    public const string Interactive = "interactive", Tty = "tty", Stream = "stream", Null = "null", Log = "log";
    public static readonly string[] Streams = ["stdin", "stdout", "stderr"];

    public static string Annotation(string stream) => $"coreos.com/rkt/stage2/{stream}";

    public static IReadOnlyList<string> Allowed(string stream) =>
        stream == "stdin" ? [Interactive, Null, Stream, Tty] : [Interactive, Log, Null, Stream, Tty];

    public static bool IsValid(string stream, string mode) => Streams.Contains(stream) && Allowed(stream).Contains(mode);

    /// <summary>The app's mode for <paramref name="stream"/> (rkt's default when it has none: stdin null, output log).</summary>
    public static string Of(RuntimeApp app, string stream) =>
        app.Annotations.LastOrDefault(a => a.Key == Annotation(stream)).Value ?? (stream == "stdin" ? Null : Log);
}

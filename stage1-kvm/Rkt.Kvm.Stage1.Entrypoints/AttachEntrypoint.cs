using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Stage1.Entrypoints.Terminal;
using Rkt.Kvm.Stage1.Manifests;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// <c>attach</c> (rkt attach): joins a running app's streams through the agent's Attach. An app's
/// endpoints follow its stream modes: <c>tty</c> for an app with a terminal of its own (stdin mode
/// tty), <c>stdin</c> for a stdin pipe (stream), and <c>stdout</c>/<c>stderr</c> for every app without
/// a terminal (the agent keeps all output). <c>list</c> prints them one per line; <c>auto-attach</c>
/// takes them all; <c>custom-attach</c> the ones asked for. Output shown is what comes from now on;
/// the attach ends when the app exits (its exit code is ours) or when we are stopped; our end of
/// stdin never closes the app's.
/// </summary>
internal static class AttachEntrypoint
{
    public static int Execute(string[] argv)
    {
        var args = AttachArguments.Parse(argv);
        var files = Stage1Files.ForCurrentPod();
        var pod = PodManifest.Load(files.Pod.Manifest);
        var app = pod.App(args.App) ?? throw new Stage1Exception($"attach: the pod has no app \"{args.App}\"");
        var endpoints = Endpoints(app);
        if (args.Action == "list")
        {
            foreach (var e in endpoints) Console.WriteLine(e);
            return 0;
        }
        bool tty = endpoints.Contains("tty");
        bool ttyIn = tty, ttyOut = tty, stdin = endpoints.Contains("stdin"), stdout = !tty, stderr = !tty;
        if (args.Action == "custom-attach")
        {
            foreach (var (wanted, name) in new[] { (args.TtyIn, "tty-in"), (args.TtyOut, "tty-out"), (args.Stdin, "stdin"), (args.Stdout, "stdout"), (args.Stderr, "stderr") })
                if (wanted && !endpoints.Contains(name.StartsWith("tty", StringComparison.Ordinal) ? "tty" : name))
                    throw new Stage1Exception($"attach: app \"{app.Name}\" has no {name} endpoint (it has: {string.Join(", ", endpoints)})");
            (ttyIn, ttyOut, stdin, stdout, stderr) = (args.TtyIn, args.TtyOut, args.Stdin, args.Stdout, args.Stderr);
        }
        var mode = new StdioMode(Tty: ttyIn && RawTerminal.IsTerminal(0), Stdin: ttyIn || stdin);
        using var agent = Supervision.PodUserSession.Enter(files).Agent();
        using var stream = agent.AttachAsync(new AttachStart { Name = app.Name, Live = true }, Timeout.InfiniteTimeSpan).GetAwaiter().GetResult();
        return StdioRelay.RunAsync(stream, mode, closeStdinAtEof: false, showStdout: ttyOut || stdout, showStderr: stderr).GetAwaiter().GetResult();
    }

    /// <summary>What rkt attach can reach for this app, from its stream modes (rkt's iottymux endpoints).</summary>
    public static IReadOnlyList<string> Endpoints(RuntimeApp app) => StreamModes.Of(app, "stdin") switch
    {
        StreamModes.Tty => ["tty"],
        StreamModes.Stream => ["stdin", "stdout", "stderr"],
        _ => ["stdout", "stderr"],
    };
}

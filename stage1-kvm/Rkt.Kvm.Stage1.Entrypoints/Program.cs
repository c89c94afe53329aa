using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Entrypoints;
using Rkt.Kvm.Vmm.Client.Control;

// rkt-kvm-stage1 ENTRYPOINT ARGS…: the scripts at the paths the stage1 manifest names call this
// binary with their entrypoint's name. Errors: one line on stderr, exit 1 (app/stop: 5 = not running).
if (args.Length == 0)
{
    Console.Error.WriteLine("usage: rkt-kvm-stage1 run|enter|gc|stop|app/add|app/start|app/stop|app/rm|attach ARGS...");
    return 2;
}
var rest = args[1..];
try
{
    return args[0] switch
    {
        "run" => RunEntrypoint.Execute(rest),
        "enter" => EnterEntrypoint.Execute(rest),
        "gc" => GcEntrypoint.Execute(rest),
        "stop" => StopEntrypoint.Execute(rest),
        "app/add" => AppEntrypoints.Add(rest),
        "app/start" => AppEntrypoints.Start(rest),
        "app/stop" => AppEntrypoints.Stop(rest),
        "app/rm" => AppEntrypoints.Remove(rest),
        "attach" => AttachEntrypoint.Execute(rest),
        Rkt.Kvm.Stage1.Entrypoints.Supervision.SupervisorContract.Entrypoint => Rkt.Kvm.Stage1.Entrypoints.Supervision.SupervisorEntrypoint.Execute(rest),
        var other => throw new Stage1Exception($"unknown entrypoint \"{other}\""),
    };
}
catch (Exception e) when (e is Stage1Exception or AgentException or VmmControlException or IOException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"stage1-kvm {args[0]}: {Describe(e)}");
    return 1;
}

// NativeAOT with UseSystemResourceKeys gives runtime exceptions a resource key for a message
// ("IO_PathNotFound_Path, /x"): say what it means instead.
static string Describe(Exception e)
{
    var message = e.Message.Split('\n')[0];
    var comma = message.IndexOf(", ", StringComparison.Ordinal);
    if (comma < 0 || !(message.StartsWith("IO_", StringComparison.Ordinal) || message.StartsWith("UnauthorizedAccess_", StringComparison.Ordinal)))
        return message;
    var path = message[(comma + 2)..];
    return e switch
    {
        FileNotFoundException or DirectoryNotFoundException => $"{path}: no such file or directory",
        UnauthorizedAccessException => $"{path}: permission denied",
        _ => $"{path}: {message[..comma]}",
    };
}

using System.Text.Json;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary><c>status [--wait-ready=DUR] [--format=json] UUID</c>: rkt's key=value lines.</summary>
public sealed class StatusCommand() : Command("status", "Show a pod's status", "status [--wait-ready=DURATION] [--wait=DURATION] [--format=json|json-pretty] UUID")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("wait-ready", "wait until the pod's apps can be added or entered (e.g. 30s, 2m)"),
        new("wait", "wait until the pod has exited (e.g. 30s, 2m)"),
        new("format", "output format: text (default), json or json-pretty", Default: ""),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        var uuid = args.Expect(1, $"rkt-kvm {Usage}")[0];
        var store = new PodStore(context.DataDir);
        var pod = PodInfo.Read(store.Find(uuid));
        if (args.Get("wait-ready") is { } readyText)
            pod = Wait(store, pod, Durations.Parse(readyText, "--wait-ready"), p => p.Running && p.Pod.Directory.SupervisorReady, "ready");
        if (args.Get("wait") is { } waitText)
            pod = Wait(store, pod, Durations.Parse(waitText, "--wait"), p => !p.Running && p.State != "preparing", "exited");

        var format = args.Get("format");
        if (format is "json" or "json-pretty")
        {
            context.Out.WriteLine(JsonSerializer.Serialize(PodJson.Pod(pod), PodJson.Options(format == "json-pretty")));
            return 0;
        }
        if (format is not "" and not "text") throw new UsageException($"--format: unknown format \"{format}\"");
        var o = context.Out;
        o.WriteLine($"state={pod.State}");
        if (pod.Created is { } c) o.WriteLine($"created={c.ToLocalTime():yyyy-MM-dd HH:mm:ss.fff zzz}");
        if (pod.Started is { } s) o.WriteLine($"started={s.ToLocalTime():yyyy-MM-dd HH:mm:ss.fff zzz}");
        o.WriteLine($"networks={pod.NetworksText}");
        if (pod.Pid is { } pid) o.WriteLine($"pid={pid}");
        o.WriteLine($"exited={(pod.Running || pod.State is "preparing" or "prepared" or "embryo" ? "false" : "true")}");
        foreach (var app in pod.Apps.Where(a => a.ExitCode is not null))
            o.WriteLine($"app-{app.Name}={app.ExitCode}");
        return 0;
    }

    private static PodInfo Wait(PodStore store, PodInfo pod, TimeSpan timeout, Func<PodInfo, bool> done, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!done(pod))
        {
            if (DateTime.UtcNow >= deadline) throw new UsageException($"pod {pod.Pod.Uuid} is not {what} after {timeout.TotalSeconds:F0}s");
            Thread.Sleep(100);
            pod = PodInfo.Read(store.Find(pod.Pod.Uuid));
        }
        return pod;
    }
}

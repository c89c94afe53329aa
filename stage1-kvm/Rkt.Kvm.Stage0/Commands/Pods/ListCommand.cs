using System.Text.Json;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary><c>list</c>: rkt's columns UUID APP IMAGE NAME STATE CREATED STARTED NETWORKS, one
/// line per app with the pod's columns on its first line only; --full, --no-legend, --format.</summary>
public sealed class ListCommand() : Command("list", "List pods", "list [--full] [--no-legend] [--format=json|json-pretty]")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("full", "show full UUIDs and image IDs, exact times", IsBool: true),
        new("no-legend", "omit the header line", IsBool: true),
        new("format", "output format: text (default), json or json-pretty", Default: ""),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        args.Expect(0, $"rkt-kvm {Usage}");
        var pods = new PodStore(context.DataDir).All().Select(PodInfo.Read).OrderBy(p => p.Created).ToList();
        var format = args.Get("format");
        if (format is "json" or "json-pretty")
        {
            context.Out.WriteLine(JsonSerializer.Serialize(pods.Select(PodJson.Pod).ToList(), PodJson.Options(format == "json-pretty")));
            return 0;
        }
        if (format is not "" and not "text") throw new UsageException($"--format: unknown format \"{format}\"");
        bool full = args.Bool("full");
        var now = DateTimeOffset.UtcNow;
        string Time(DateTimeOffset? t) => t is null ? "" : full ? t.Value.ToString("u") : RelativeTime.Ago(t.Value, now);
        var rows = new List<string[]>();
        if (!args.Bool("no-legend")) rows.Add(["UUID", "APP", "IMAGE NAME", "STATE", "CREATED", "STARTED", "NETWORKS"]);
        foreach (var pod in pods)
        {
            var uuid = full ? pod.Pod.Uuid : pod.Pod.Uuid[..8];
            if (pod.Apps.Count == 0) rows.Add([uuid, "-", "-", pod.State, Time(pod.Created), Time(pod.Started), pod.NetworksText]);
            for (int i = 0; i < pod.Apps.Count; i++)
            {
                var app = pod.Apps[i];
                rows.Add(i == 0
                    ? [uuid, app.Name, app.ImageName, pod.State, Time(pod.Created), Time(pod.Started), pod.NetworksText]
                    : ["", app.Name, app.ImageName, "", "", "", ""]);
            }
        }
        TextTable.Write(context.Out, rows);
        return 0;
    }
}

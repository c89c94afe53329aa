using System.Text.Json;
using Rkt.Kvm.Stage0.Pods;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary>rkt's JSON shapes for pods (times in unix seconds) and apps (unix ns).</summary>
public static class PodJson
{
    public static JsonSerializerOptions Options(bool pretty) => new() { WriteIndented = pretty };

    public static Dictionary<string, object?> Pod(PodInfo pod) => new()
    {
        ["name"] = pod.Pod.Uuid,
        ["state"] = pod.State,
        ["networks"] = pod.Networks.Select(n => n.ToJson()).ToList(),
        ["app_names"] = pod.Apps.Select(a => a.Name).ToList(),
        ["apps"] = pod.Apps.Select(App).ToList(),
        ["created_at"] = pod.Created?.ToUnixTimeSeconds(),
        ["started_at"] = pod.Started?.ToUnixTimeSeconds(),
        ["user_annotations"] = new Dictionary<string, string>(),
        ["user_labels"] = new Dictionary<string, string>(),
    };

    public static Dictionary<string, object?> App(AppInfo app) => new()
    {
        ["name"] = app.Name,
        ["state"] = app.State,
        ["created_at"] = Nanos(app.Created),
        ["started_at"] = Nanos(app.Started),
        ["finished_at"] = Nanos(app.Finished),
        ["exit_code"] = app.ExitCode,
        ["image_id"] = app.ImageId,
        ["mounts"] = app.Mounts.Select(m => new Dictionary<string, string> { ["volume"] = m.Volume, ["path"] = m.Path }).ToList(),
    };

    private static long? Nanos(DateTimeOffset? t) => t is null ? null : (t.Value - DateTimeOffset.UnixEpoch).Ticks * 100;
}

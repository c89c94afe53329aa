using System.Text.RegularExpressions;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary><c>image gc</c>: like rkt, removes images unused for --grace-period (default 24h),
/// then unreferenced blobs and trees and the leftovers of interrupted imports.</summary>
public sealed partial class GcImagesCommand() : Command("gc",
    "Remove unused images and leftovers from the local store",
    "image gc [--grace-period=DURATION|never]")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("grace-period", "remove images not used for this long (Go duration, or \"never\")", Default: "24h")];

    public override int Run(CommandContext context, GoFlags args)
    {
        args.Expect(0, $"rkt-kvm {Usage}");
        var graceText = args.Get("grace-period")!;
        TimeSpan? grace = graceText == "never" ? null : ParseDuration(graceText);
        var result = context.Store.Collect(grace, DateTimeOffset.UtcNow, new PodStore(context.DataDir).TreesInUse());
        foreach (var image in result.RemovedImages) context.Out.WriteLine($"successfully removed image \"{image.Id}\"");
        context.Out.WriteLine($"gc: {result.RemovedImages.Count} image(s), {result.RemovedBlobs} blob(s), {result.RemovedTrees} tree(s), {result.RemovedScratch} interrupted operation(s) removed");
        return 0;
    }

    [GeneratedRegex(@"^(?:(\d+(?:\.\d+)?)(h|m|s|ms))+$")]
    private static partial Regex DurationPattern();

    /// <summary>Go's duration syntax, the subset people type: "24h", "1h30m", "90s", "0".</summary>
    public static TimeSpan ParseDuration(string text)
    {
        if (text == "0") return TimeSpan.Zero;
        var match = DurationPattern().Match(text);
        if (!match.Success) throw new UsageException($"--grace-period: \"{text}\" is not a duration like 24h or 30m");
        var total = TimeSpan.Zero;
        for (int i = 0; i < match.Groups[1].Captures.Count; i++)
        {
            var value = double.Parse(match.Groups[1].Captures[i].Value, System.Globalization.CultureInfo.InvariantCulture);
            total += match.Groups[2].Captures[i].Value switch
            {
                "h" => TimeSpan.FromHours(value),
                "m" => TimeSpan.FromMinutes(value),
                "s" => TimeSpan.FromSeconds(value),
                _ => TimeSpan.FromMilliseconds(value),
            };
        }
        return total;
    }
}

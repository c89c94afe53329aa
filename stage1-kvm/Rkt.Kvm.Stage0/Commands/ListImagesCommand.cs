using System.Text.Json;
using Rkt.Kvm.Stage0.CommandLine;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary><c>image list</c> with rkt's columns ID, NAME, SIZE, IMPORT TIME, LAST USED; IDs
/// shortened as rkt does unless --full; --format=json for scripts (times in unix ns).</summary>
public sealed class ListImagesCommand() : Command("list",
    "List images in the local store",
    "image list [--full] [--no-legend] [--format=json|json-pretty]")
{
    /// <summary>rkt shows "sha512-" and 32 hex digits.</summary>
    private const int ShortIdLength = 7 + 32;

    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("full", "show full image IDs and exact times", IsBool: true),
        new("no-legend", "omit the header line", IsBool: true),
        new("format", "output format: text (default), json or json-pretty", Default: ""),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        args.Expect(0, $"rkt-kvm {Usage}");
        var images = context.Store.List().OrderBy(i => i.ImportTime).ToList();
        var format = args.Get("format");
        if (format is "json" or "json-pretty")
        {
            var rows = images.Select(i => new Dictionary<string, object>
            {
                ["id"] = i.Id, ["name"] = i.DisplayName, ["format"] = i.Format, ["size"] = i.Size,
                ["import_time"] = i.ImportTime.ToUnixTimeMilliseconds() * 1_000_000,
                ["last_used"] = i.LastUsed.ToUnixTimeMilliseconds() * 1_000_000,
            });
            context.Out.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = format == "json-pretty" }));
            return 0;
        }
        if (format is not "" and not "text") throw new UsageException($"--format: unknown format \"{format}\"");

        bool full = args.Bool("full");
        var now = DateTimeOffset.UtcNow;
        var table = new List<string[]>();
        if (!args.Bool("no-legend")) table.Add(["ID", "NAME", "SIZE", "IMPORT TIME", "LAST USED"]);
        foreach (var i in images)
            table.Add([
                full ? i.Id : i.Id[..Math.Min(ShortIdLength, i.Id.Length)], i.DisplayName, full ? i.Size.ToString() : Sizes.Format(i.Size),
                full ? i.ImportTime.ToString("u") : RelativeTime.Ago(i.ImportTime, now),
                full ? i.LastUsed.ToString("u") : RelativeTime.Ago(i.LastUsed, now),
            ]);
        TextTable.Write(context.Out, table);
        return 0;
    }
}

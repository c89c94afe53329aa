using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>Typed reads from untrusted JSON with errors that say where: <c>apps[1].app.exec: …</c>.
/// appc lets every list be null; absent and null read the same.</summary>
internal static class JsonRead
{
    public static JsonObject Object(JsonNode? node, string where) =>
        node as JsonObject ?? throw new Stage1Exception($"{where}: expected a JSON object");

    public static string? OptionalString(JsonObject obj, string key, string where)
    {
        var node = obj[key];
        if (node is null) return null;
        return node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>() : throw new Stage1Exception($"{where}.{key}: expected a string");
    }

    public static string RequiredString(JsonObject obj, string key, string where) =>
        OptionalString(obj, key, where) ?? throw new Stage1Exception($"{where}.{key}: is required");

    public static bool? OptionalBool(JsonObject obj, string key, string where)
    {
        var node = obj[key];
        if (node is null) return null;
        return node.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new Stage1Exception($"{where}.{key}: expected true or false"),
        };
    }

    public static long? OptionalInteger(JsonObject obj, string key, string where)
    {
        var node = obj[key];
        if (node is null) return null;
        if (node.GetValueKind() == JsonValueKind.Number && node.AsValue().TryGetValue(out long value)) return value;
        throw new Stage1Exception($"{where}.{key}: expected an integer");
    }

    /// <summary>The array's elements (empty for absent or null).</summary>
    public static IEnumerable<(JsonNode? Item, string Where)> Array(JsonObject obj, string key, string where)
    {
        var node = obj[key];
        if (node is null) yield break;
        if (node is not JsonArray array) throw new Stage1Exception($"{where}.{key}: expected an array");
        for (int i = 0; i < array.Count; i++) yield return (array[i], $"{where}.{key}[{i}]");
    }

    public static IReadOnlyList<string> Strings(JsonObject obj, string key, string where) =>
        Array(obj, key, where).Select(e => e.Item?.GetValueKind() == JsonValueKind.String ? e.Item.GetValue<string>()
            : throw new Stage1Exception($"{e.Where}: expected a string")).ToList();

    /// <summary>appc name/value lists (labels, annotations, environment), in order; a later
    /// duplicate replaces the earlier value.</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> NameValues(JsonObject obj, string key, string where)
    {
        var result = new List<KeyValuePair<string, string>>();
        foreach (var (item, at) in Array(obj, key, where))
        {
            var pair = Object(item, at);
            var name = RequiredString(pair, "name", at);
            var value = OptionalString(pair, "value", at) ?? "";
            int existing = result.FindIndex(p => p.Key == name);
            if (existing >= 0) result[existing] = new(name, value);
            else result.Add(new(name, value));
        }
        return result;
    }
}

using System.Net;

namespace Rkt.Kvm.Images.Appc;

/// <summary>One <c>&lt;meta name="ac-…" content="PREFIX URI"&gt;</c> tag of a discovery page.</summary>
public sealed record DiscoveryMeta(string Name, string Prefix, string Uri)
{
    /// <summary>
    /// The <c>ac-*</c> meta tags of an HTML page, in order, read as appc's discovery reads them
    /// (golang.org/x/net/html's tokenizer): tag and attribute names in any case, values quoted or
    /// not, entities decoded, a repeated attribute's last value wins; comments and the raw text of
    /// <c>script</c>, <c>style</c> and their kind hold no tags. <c>content</c> is the prefix, one
    /// space, then the URI; a tag without both is skipped. Linear in the page's length.
    /// </summary>
    public static IReadOnlyList<DiscoveryMeta> Parse(string html)
    {
        var found = new List<DiscoveryMeta>();
        int i = 0;
        while ((i = html.IndexOf('<', i)) >= 0)
        {
            if (string.CompareOrdinal(html, i, "<!--", 0, 4) == 0)
            {
                var end = html.IndexOf("-->", i + 4, StringComparison.Ordinal);
                i = end < 0 ? html.Length : end + 3;
                continue;
            }
            i++;
            bool closing = i < html.Length && html[i] == '/';
            if (closing) i++;
            int nameStart = i;
            while (i < html.Length && char.IsAsciiLetterOrDigit(html[i])) i++;
            if (i == nameStart) continue; // "<" as text, "<!doctype", "<?"
            var tag = html[nameStart..i].ToLowerInvariant();
            var attributes = ReadAttributes(html, ref i, out bool complete);
            if (closing || !complete) continue; // a tag the page ends inside is no tag (as x/net/html)
            if (tag == "meta") Add(found, attributes);
            else if (RawText.Contains(tag))
            {
                if (tag == "plaintext") break;
                var end = html.IndexOf("</" + tag, i, StringComparison.OrdinalIgnoreCase);
                i = end < 0 ? html.Length : end;
            }
        }
        return found;
    }

    /// <summary>Elements whose content is text, never tags (x/net/html's raw-text and RCDATA tags).</summary>
    private static readonly HashSet<string> RawText = ["script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext"];

    /// <summary>Reads attributes up to and past the tag's '&gt;' (or the end of the page).</summary>
    private static List<(string Key, string Value)> ReadAttributes(string html, ref int i, out bool complete)
    {
        var attributes = new List<(string, string)>();
        complete = false;
        while (i < html.Length)
        {
            while (i < html.Length && (char.IsWhiteSpace(html[i]) || html[i] == '/')) i++;
            if (i >= html.Length) break;
            if (html[i] == '>') { i++; complete = true; break; }
            int keyStart = i;
            while (i < html.Length && !char.IsWhiteSpace(html[i]) && html[i] is not ('/' or '>' or '=')) i++;
            if (i == keyStart) i++; // a stray character: never stop making progress
            var key = html[keyStart..i].ToLowerInvariant();
            while (i < html.Length && char.IsWhiteSpace(html[i])) i++;
            string value = "";
            if (i < html.Length && html[i] == '=')
            {
                i++;
                while (i < html.Length && char.IsWhiteSpace(html[i])) i++;
                if (i < html.Length && html[i] is '"' or '\'')
                {
                    var quote = html[i];
                    var end = html.IndexOf(quote, i + 1);
                    if (end < 0) end = html.Length;
                    value = html[(i + 1)..end];
                    i = Math.Min(end + 1, html.Length);
                }
                else
                {
                    int valueStart = i;
                    while (i < html.Length && !char.IsWhiteSpace(html[i]) && html[i] != '>') i++;
                    value = html[valueStart..i];
                }
            }
            attributes.Add((key, WebUtility.HtmlDecode(value)));
        }
        return attributes;
    }

    private static void Add(List<DiscoveryMeta> found, List<(string Key, string Value)> attributes)
    {
        string name = "", prefix = "", uri = "";
        foreach (var (key, value) in attributes)
        {
            if (key == "name") name = value;
            else if (key == "content")
            {
                // appc: SplitN(TrimSpace(content), " ", 2); without a space the tag has no URI.
                var parts = value.Trim().Split(' ', 2);
                (prefix, uri) = parts.Length == 2 ? (parts[0], parts[1].Trim()) : ("", "");
            }
        }
        if (name.StartsWith("ac-", StringComparison.Ordinal) && prefix != "" && uri != "") found.Add(new DiscoveryMeta(name, prefix, uri));
    }
}

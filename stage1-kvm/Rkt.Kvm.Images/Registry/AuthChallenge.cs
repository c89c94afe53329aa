namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// A <c>WWW-Authenticate</c> challenge (RFC 7235) as registries send it:
/// <c>Bearer realm="https://auth.example/token",service="registry.example",scope="repository:x:pull"</c>
/// or <c>Basic realm="…"</c>. Parameter values may be quoted, with backslash escapes.
/// </summary>
public sealed record AuthChallenge(string Scheme, IReadOnlyDictionary<string, string> Parameters)
{
    public string? Realm => Parameters.GetValueOrDefault("realm");
    public string? Service => Parameters.GetValueOrDefault("service");
    public string? Scope => Parameters.GetValueOrDefault("scope");
    public bool IsBearer => Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase);
    public bool IsBasic => Scheme.Equals("Basic", StringComparison.OrdinalIgnoreCase);

    public static AuthChallenge? TryParse(string? header)
    {
        if (string.IsNullOrWhiteSpace(header)) return null;
        header = header.Trim();
        int space = header.IndexOf(' ');
        var scheme = space < 0 ? header : header[..space];
        var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        int i = space < 0 ? header.Length : space + 1;
        while (i < header.Length)
        {
            while (i < header.Length && (header[i] == ' ' || header[i] == ',')) i++;
            int eq = header.IndexOf('=', i);
            if (eq < 0) break;
            var key = header[i..eq].Trim();
            i = eq + 1;
            string value;
            if (i < header.Length && header[i] == '"')
            {
                var sb = new System.Text.StringBuilder();
                for (i++; i < header.Length && header[i] != '"'; i++)
                {
                    if (header[i] == '\\' && i + 1 < header.Length) i++;
                    sb.Append(header[i]);
                }
                i++; // the closing quote
                value = sb.ToString();
            }
            else
            {
                int comma = header.IndexOf(',', i);
                value = (comma < 0 ? header[i..] : header[i..comma]).Trim();
                i = comma < 0 ? header.Length : comma;
            }
            if (key.Length > 0) parameters[key] = value;
        }
        return new AuthChallenge(scheme, parameters);
    }
}

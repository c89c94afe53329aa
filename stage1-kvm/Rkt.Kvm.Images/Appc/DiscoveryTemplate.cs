using System.Text.RegularExpressions;

namespace Rkt.Kvm.Images.Appc;

/// <summary>
/// appc discovery's URL templates: <c>https://example.com/{name}-{version}-{os}-{arch}.{ext}</c>
/// takes <c>{name}</c> and the image's labels (version defaulting to <c>latest</c>), then
/// <c>{ext}</c> as <c>aci</c> or <c>aci.asc</c>. A template with a variable left over does not fit
/// the image and is skipped. Substitution is one pass: a label's value is never read as a template.
/// </summary>
public static partial class DiscoveryTemplate
{
    [GeneratedRegex(@"\{([^{}]*)\}")]
    private static partial Regex Variable();

    /// <summary>The ACI's and the signature's URL text, or null when the template names a variable the image lacks.</summary>
    public static (string Aci, string Asc)? Render(string template, AppImageName app)
    {
        var vars = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in app.Labels) vars[k] = v;
        vars.TryAdd("version", "latest");
        vars["name"] = app.Name; // as appc: a label called "name" does not replace the image's name
        var aci = Fill(template, vars, "aci");
        var asc = Fill(template, vars, "aci.asc");
        return aci is null || asc is null ? null : (aci, asc);
    }

    private static string? Fill(string template, Dictionary<string, string> vars, string ext)
    {
        bool complete = true;
        var result = Variable().Replace(template, m =>
        {
            var key = m.Groups[1].Value;
            if (key == "ext") return ext;
            if (vars.TryGetValue(key, out var value)) return value;
            complete = false;
            return m.Value;
        });
        return complete ? result : null;
    }
}

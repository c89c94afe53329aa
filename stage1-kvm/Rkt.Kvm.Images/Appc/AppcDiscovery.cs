using System.Text;
using Rkt.Kvm.Images.Registry;
using Serilog;

namespace Rkt.Kvm.Images.Appc;

/// <summary>No page on the name's path said where the image (or its keys) is.</summary>
public sealed class DiscoveryException(string message) : ImageException(message);

/// <summary>Where discovery says an image and its signature are.</summary>
public sealed record AciEndpoint(Uri Aci, Uri Asc);

/// <summary>
/// appc meta discovery (appc/spec discovery, as rkt 1.30 uses it): GETs
/// <c>https://PREFIX?ac-discovery=1</c> for the image's name, then for each shorter prefix
/// (<c>example.com/team/app</c>, <c>example.com/team</c>, <c>example.com</c>) until a page has what
/// is asked for: <c>ac-discovery</c> templates that fit the image, or <c>ac-discovery-pubkeys</c>
/// locations. A meta tag counts only when its prefix is a prefix of the image's name. Plain http
/// is tried after https fails only with <c>--insecure-options=http</c>; each page is one attempt
/// (a missing page is the normal case), at most <see cref="MaxPageBytes"/>.
/// </summary>
internal sealed class AppcDiscovery(HttpSession http)
{
    public const long MaxPageBytes = 1 << 20;
    private static ILogger Log => Serilog.Log.ForContext<AppcDiscovery>();

    public async Task<AciEndpoint> DiscoverImage(AppImageName app, CancellationToken ct)
    {
        var endpoints = await Walk(app, "ac-discovery", metas => metas
            .Select(m => DiscoveryTemplate.Render(m.Uri, app))
            .OfType<(string Aci, string Asc)>()
            .Select(e => new AciEndpoint(Absolute(e.Aci, app), Absolute(e.Asc, app)))
            .ToList(), ct);
        return endpoints[0];
    }

    public Task<List<string>> DiscoverKeys(AppImageName app, CancellationToken ct) =>
        Walk(app, "ac-discovery-pubkeys", metas => metas.Select(m => m.Uri).ToList(), ct);

    private async Task<List<T>> Walk<T>(AppImageName app, string tag, Func<IEnumerable<DiscoveryMeta>, List<T>> pick, CancellationToken ct)
    {
        var failures = new List<string>();
        var parts = app.Name.Split('/');
        for (int end = parts.Length; end > 0; end--)
        {
            var prefix = string.Join('/', parts[..end]);
            string page;
            try { page = await FetchPage(prefix, ct); }
            catch (ImageException e)
            {
                Log.Debug("meta tag '{Tag}' not found on {Prefix}: {Error}", tag, prefix, e.Message);
                failures.Add($"{prefix}: {e.Message}");
                continue;
            }
            var found = pick(DiscoveryMeta.Parse(page).Where(m => m.Name == tag && app.Name.StartsWith(m.Prefix, StringComparison.Ordinal)));
            if (found.Count > 0) return found;
            failures.Add($"{prefix}: no {tag} meta tag for {app.Name}");
        }
        throw new DiscoveryException($"discovery failed for {app}: {string.Join("; ", failures)}");
    }

    /// <summary>https, then (allowed) plain http; the reason of the last attempt when neither answers 200.</summary>
    private async Task<string> FetchPage(string prefix, CancellationToken ct)
    {
        var schemes = http.Options.Insecure.HasFlag(InsecureOptions.Http) ? new[] { "https", "http" } : ["https"];
        Exception? last = null;
        foreach (var scheme in schemes)
        {
            var url = new Uri($"{scheme}://{prefix}?ac-discovery=1");
            try
            {
                using var response = await http.GetOk(url, "discovery", ct);
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(http.Options.ResponseTimeout);
                var body = await HttpSession.ReadLimited(response, MaxPageBytes, $"the discovery page of {prefix}", timeout.Token);
                return Encoding.UTF8.GetString(body);
            }
            catch (Exception e) when (e is ImageException or TransientRegistryException or HttpRequestException or IOException
                                          || (e is OperationCanceledException && !ct.IsCancellationRequested))
            {
                last = e;
            }
        }
        throw new ImageException(last switch
        {
            HttpRequestException h => $"{h.Message}{(h.InnerException is { } inner ? $" ({inner.Message})" : "")}",
            OperationCanceledException => $"no answer within {http.Options.ResponseTimeout.TotalSeconds:0} s",
            _ => last!.Message,
        });
    }

    /// <summary>A rendered template must be an absolute http(s) URL; plain http needs <c>--insecure-options=http</c>.</summary>
    private Uri Absolute(string text, AppImageName app)
    {
        if (!Uri.TryCreate(text, UriKind.Absolute, out var url) || url.Scheme is not ("https" or "http"))
            throw new ImageException($"discovery for {app} gave \"{text}\", which is not an http(s) URL");
        if (url.Scheme == "http" && !http.Options.Insecure.HasFlag(InsecureOptions.Http))
            throw new ImageException($"discovery for {app} gave plain-http URL {HttpSession.ForLog(url)}; allow it with --insecure-options=http");
        return url;
    }
}

using System.Net;
using Serilog;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// The HTTP side of one fetch from one registry repository, over the shared <see cref="HttpSession"/>:
/// picks https (or, with <c>--insecure-options=http</c>, plain http when TLS fails), answers auth
/// challenges once, keeps the Authorization header on the registry's own host, and turns the
/// registry's status codes into clear errors.
/// </summary>
internal sealed class RegistryHttp : IDisposable
{
    private static ILogger Log => Serilog.Log.ForContext<RegistryHttp>();
    private readonly HttpSession _session;
    private readonly ImageReference _reference;
    private readonly RegistryAuthenticator _auth;
    private readonly SemaphoreSlim _authLock = new(1, 1);
    private Uri? _base;

    public RegistryHttp(ImageReference reference, RegistryOptions options)
    {
        _reference = reference;
        _session = new HttpSession(options);
        _auth = new RegistryAuthenticator(_session.Client, reference, options);
    }

    public RegistryOptions Options => _session.Options;

    /// <summary>"registry/repository", for messages.</summary>
    public string Repository => _reference.Name;

    /// <summary>The URL of a path under the registry's <c>/v2/&lt;repository&gt;/</c>.</summary>
    public async Task<Uri> Url(string path, CancellationToken ct)
    {
        _base ??= await ChooseBase(ct);
        return new Uri(_base, $"/v2/{_reference.Repository}/{path}");
    }

    /// <summary>https, unless it fails to connect and plain HTTP is allowed (docker's fallback for
    /// insecure registries).</summary>
    private async Task<Uri> ChooseBase(CancellationToken ct)
    {
        var https = new Uri($"https://{_reference.Registry}/");
        if (!Options.Insecure.HasFlag(InsecureOptions.Http)) return https;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(Options.ConnectTimeout);
            using var ping = await _session.Client.GetAsync(new Uri(https, "/v2/"), HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            Log.Debug("GET {Url} -> {Status}", new Uri(https, "/v2/"), (int)ping.StatusCode);
            return https;
        }
        // A plain-HTTP server answers a TLS hello with an error, or (some) with silence until the time-out.
        catch (Exception e) when (e is HttpRequestException || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            Log.Debug("https to {Registry} failed ({Error}); using plain http (--insecure-options=http)", _reference.Registry, e.Message);
            return new Uri($"http://{_reference.Registry}/");
        }
    }

    /// <summary>
    /// GETs <paramref name="url"/> and returns the successful response, its body unread (the caller
    /// disposes it). 401 is answered once with credentials or a token; 404, 401 and other client
    /// errors are <see cref="ImageException"/>s; 429 and 5xx are <see cref="TransientRegistryException"/>s
    /// for <see cref="Retry"/>.
    /// </summary>
    /// <param name="resume">the part of a blob the caller has: a 416 answer is then returned too.</param>
    public async Task<HttpResponseMessage> Get(Uri url, string? accept, string what, CancellationToken ct, ResumeFrom? resume = null)
    {
        var sent = _auth.Header;
        var response = await _session.Follow(url, accept, what, sent, ct, resume: resume);
        // Answered once per request: a first contact, or a token whose scope or lifetime ran out.
        if (response.StatusCode == HttpStatusCode.Unauthorized)
        {
            var challenge = AuthChallenge.TryParse(response.Headers.WwwAuthenticate.ToString());
            response.Dispose();
            if (challenge is null) throw new ImageException($"{what}: registry {_reference.Registry} answered 401 without a WWW-Authenticate challenge");
            await _authLock.WaitAsync(ct);
            // Parallel downloads meet an expired token together: the first renews it, the others use that.
            try { if (ReferenceEquals(_auth.Header, sent)) await _auth.Answer(challenge, ct); }
            finally { _authLock.Release(); }
            response = await _session.Follow(url, accept, what, _auth.Header, ct, resume: resume);
        }
        var code = (int)response.StatusCode;
        if (response.IsSuccessStatusCode || (resume is not null && response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)) return response;
        var retryAfter = response.Headers.RetryAfter?.Delta;
        response.Dispose();
        throw code switch
        {
            401 or 403 => new ImageException(_auth.HasCredentials
                ? $"{what}: registry {_reference.Registry} refused the configured credentials ({code})"
                : $"{what}: registry {_reference.Registry} requires credentials ({code}): add a dockerAuth file to auth.d/ in --local-config"),
            404 => new ImageException($"{what}: not found in {_reference.Registry}/{_reference.Repository} (404)"),
            429 or >= 500 => new TransientRegistryException($"{what}: registry {_reference.Registry} answered {code}", retryAfter),
            _ => new ImageException($"{what}: registry {_reference.Registry} answered {code} {response.ReasonPhrase}"),
        };
    }

    /// <inheritdoc cref="HttpSession.Retry"/>
    public Task<T> Retry<T>(string what, Func<CancellationToken, Task<T>> attempt, CancellationToken ct) => _session.Retry(what, attempt, ct);

    public void Dispose()
    {
        _session.Dispose();
        _authLock.Dispose();
    }
}

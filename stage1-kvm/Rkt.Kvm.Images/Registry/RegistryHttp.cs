using System.Net;
using System.Net.Http.Headers;
using Serilog;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// The HTTP side of one fetch from one registry repository, on .NET's <c>SocketsHttpHandler</c>
/// (which honours <c>HTTPS_PROXY</c>/<c>HTTP_PROXY</c>/<c>NO_PROXY</c>): picks https (or, with
/// <c>--insecure-options=http</c>, plain http when TLS fails), answers auth challenges once,
/// follows a bounded number of redirects (to blob storage: without our Authorization header on
/// another host), and retries 429, 5xx and dropped connections with exponential backoff.
/// </summary>
internal sealed class RegistryHttp : IDisposable
{
    private static ILogger Log => Serilog.Log.ForContext<RegistryHttp>();
    private readonly HttpClient _client;
    private readonly RegistryOptions _options;
    private readonly ImageReference _reference;
    private readonly RegistryAuthenticator _auth;
    private readonly SemaphoreSlim _authLock = new(1, 1);
    private Uri? _base;

    public RegistryHttp(ImageReference reference, RegistryOptions options)
    {
        _reference = reference;
        _options = options;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false, // followed by hand: bounded, and the Authorization header stays home
            AutomaticDecompression = DecompressionMethods.None, // blobs are hashed as the registry stores them
            ConnectTimeout = options.ConnectTimeout,
            UseCookies = false,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
        };
        if (options.Insecure.HasFlag(InsecureOptions.Tls))
            handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        _client = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan }; // our own time-outs, per phase
        _client.DefaultRequestHeaders.UserAgent.ParseAdd("rkt-kvm/1.0");
        _auth = new RegistryAuthenticator(_client, reference, options);
    }

    public RegistryOptions Options => _options;

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
        if (!_options.Insecure.HasFlag(InsecureOptions.Http)) return https;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_options.ConnectTimeout);
            using var ping = await _client.GetAsync(new Uri(https, "/v2/"), HttpCompletionOption.ResponseHeadersRead, timeout.Token);
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
    public async Task<HttpResponseMessage> Get(Uri url, string? accept, string what, CancellationToken ct)
    {
        var sent = _auth.Header;
        var response = await Follow(url, accept, what, ct);
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
            response = await Follow(url, accept, what, ct);
        }
        var code = (int)response.StatusCode;
        if (response.IsSuccessStatusCode) return response;
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

    /// <summary>Sends one GET, following redirects (at most <see cref="RegistryOptions.MaxRedirects"/>).</summary>
    private async Task<HttpResponseMessage> Follow(Uri url, string? accept, string what, CancellationToken ct)
    {
        var home = url.Authority;
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            if (accept is not null) request.Headers.Accept.ParseAdd(accept);
            // Blob storage a registry redirects to gets its own credentials in the URL, never ours.
            if (url.Authority == home && _auth.Header is { } header) request.Headers.Authorization = header;
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_options.ResponseTimeout);
            HttpResponseMessage response;
            try { response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token); }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TransientRegistryException($"{what}: no answer from {url.Host} within {_options.ResponseTimeout.TotalSeconds:0} s");
            }
            catch (HttpRequestException e) when (e.InnerException is System.Security.Authentication.AuthenticationException tls)
            {
                // Not worth a retry: the same handshake fails the same way.
                throw new ImageException($"{what}: TLS with {url.Authority} failed ({tls.Message}); a plain-HTTP registry needs " +
                    "--insecure-options=http, one with an untrusted certificate --insecure-options=tls", e);
            }
            Log.Debug("GET {Url}{Auth} -> {Status}", ForLog(url), request.Headers.Authorization is { } a ? $" ({a.Scheme})" : "", (int)response.StatusCode);
            if ((int)response.StatusCode is not (301 or 302 or 303 or 307 or 308)) return response;
            var location = response.Headers.Location;
            response.Dispose();
            if (location is null) throw new ImageException($"{what}: {url.Host} redirected without a Location");
            if (hop + 1 > _options.MaxRedirects) throw new ImageException($"{what}: more than {_options.MaxRedirects} redirects (a redirect loop?)");
            var next = location.IsAbsoluteUri ? location : new Uri(url, location);
            if (next.Scheme is not ("https" or "http")) throw new ImageException($"{what}: redirected to an unsupported URL scheme \"{next.Scheme}\"");
            if (next.Scheme == "http" && url.Scheme == "https" && !_options.Insecure.HasFlag(InsecureOptions.Http))
                throw new ImageException($"{what}: redirected from https to plain http ({next.Host}); allow it with --insecure-options=http");
            url = next;
        }
    }

    /// <summary>Runs <paramref name="attempt"/> until it succeeds, retrying transient failures
    /// with exponential backoff; the last failure becomes one clear <see cref="ImageException"/>.</summary>
    public async Task<T> Retry<T>(string what, Func<CancellationToken, Task<T>> attempt, CancellationToken ct)
    {
        for (int n = 1; ; n++)
        {
            try { return await attempt(ct); }
            catch (Exception e) when (IsTransient(e, ct))
            {
                var message = e switch
                {
                    TransientRegistryException => e.Message,
                    OperationCanceledException => $"{what}: timed out after {_options.ResponseTimeout.TotalSeconds:0} s",
                    _ => $"{what}: {e.Message}",
                };
                if (n >= _options.MaxAttempts) throw new ImageException($"{message} (gave up after {n} attempts)", e);
                var wait = (e as TransientRegistryException)?.RetryAfter ?? _options.RetryBaseDelay * Math.Pow(2, n - 1);
                if (wait > _options.MaxRetryWait) wait = _options.MaxRetryWait;
                Log.Debug("{Message}; attempt {Attempt} of {Max} in {Wait} ms", message, n + 1, _options.MaxAttempts, (int)wait.TotalMilliseconds);
                await Task.Delay(wait, ct);
            }
        }
    }

    private static bool IsTransient(Exception e, CancellationToken ct) => e switch
    {
        TransientRegistryException or HttpRequestException => true,
        IOException => true, // a connection reset mid-body
        OperationCanceledException => !ct.IsCancellationRequested,
        _ => false,
    };

    /// <summary>Reads a small body (manifest, token) whole, refusing more than <paramref name="limit"/> bytes.</summary>
    public static async Task<byte[]> ReadLimited(HttpResponseMessage response, long limit, string what, CancellationToken ct)
    {
        if (response.Content.Headers.ContentLength > limit) throw new ImageException($"{what} is larger than {limit} bytes");
        await using var body = await response.Content.ReadAsStreamAsync(ct);
        var buffer = new MemoryStream();
        var chunk = new byte[1 << 16];
        int n;
        while ((n = await body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + n > limit) throw new ImageException($"{what} is larger than {limit} bytes");
            buffer.Write(chunk, 0, n);
        }
        return buffer.ToArray();
    }

    /// <summary>URLs as the debug log shows them: a redirect's query string may hold a signed
    /// credential (S3's X-Amz-Signature), so it is left out.</summary>
    public static string ForLog(Uri url) => url.Query.Length > 1 ? url.GetLeftPart(UriPartial.Path) + "?…" : url.ToString();

    public void Dispose()
    {
        _client.Dispose();
        _authLock.Dispose();
    }
}

using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Serilog;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// The HTTP client of every remote fetch (a registry, appc discovery, an ACI and its signature, a
/// public key), on .NET's <c>SocketsHttpHandler</c> (which honours <c>HTTPS_PROXY</c>/<c>HTTP_PROXY</c>/
/// <c>NO_PROXY</c>): per-phase time-outs, a bounded number of redirects (never https→http without
/// <c>--insecure-options=http</c>), retries with backoff, bounded small bodies and a debug log
/// without credentials or query strings. What a caller adds (registry auth, discovery's
/// https-then-http) sits in the caller.
/// </summary>
internal sealed class HttpSession : IDisposable
{
    private static ILogger Log => Serilog.Log.ForContext<HttpSession>();

    public HttpSession(RegistryOptions options)
    {
        Options = options;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false, // followed by hand: bounded, and an Authorization header stays home
            AutomaticDecompression = DecompressionMethods.None, // blobs are hashed, ACIs verified, as the server stores them
            ConnectTimeout = options.ConnectTimeout,
            UseCookies = false,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
        };
        if (options.Insecure.HasFlag(InsecureOptions.Tls))
            handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        else if (options.Test?.TrustedRoot is { } root)
            // Tests only (no flag or variable reaches this): their CA instead of the system's, checked as strictly.
            handler.SslOptions.CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust, CustomTrustStore = { root },
                RevocationMode = X509RevocationMode.NoCheck,
            };
        if (options.Test?.ConnectTo is { } connectTo) handler.ConnectCallback = (context, ct) => Connect(connectTo(context.DnsEndPoint), ct);
        Client = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan }; // our own time-outs, per phase
        Client.DefaultRequestHeaders.UserAgent.ParseAdd("rkt-kvm/1.0");
    }

    public HttpClient Client { get; }
    public RegistryOptions Options { get; }

    private static async ValueTask<Stream> Connect(DnsEndPoint endpoint, CancellationToken ct)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endpoint, ct);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends one GET, following redirects (at most <see cref="RegistryOptions.MaxRedirects"/>);
    /// <paramref name="authorization"/> goes only to <paramref name="url"/>'s own host (storage a
    /// registry redirects to gets its credentials in the URL, never ours). The response's body is
    /// unread; the caller disposes it.
    /// </summary>
    /// <param name="ifNoneMatch">an ETag the caller has: a 304 answer then means it is current.</param>
    /// <param name="resume">the part of the body the caller has already: asked for the rest (see <see cref="RangeResume"/>).</param>
    /// <param name="hostAuth">each hop carries the Authorization header an <c>auth</c> file gives its
    /// own host (<see cref="AuthConfig.HeaderFor"/>), if any: a redirect to another host never carries
    /// the first host's.</param>
    public async Task<HttpResponseMessage> Follow(Uri url, string? accept, string what, AuthenticationHeaderValue? authorization, CancellationToken ct,
        string? ifNoneMatch = null, ResumeFrom? resume = null, bool hostAuth = false)
    {
        var home = url.Authority;
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            if (accept is not null) request.Headers.Accept.ParseAdd(accept);
            if (url.Authority == home && authorization is not null) request.Headers.Authorization = authorization;
            else if (hostAuth) request.Headers.Authorization = Options.Auth.HeaderFor(url, Options.Insecure);
            if (ifNoneMatch is not null) request.Headers.TryAddWithoutValidation("If-None-Match", ifNoneMatch);
            resume?.AddTo(request);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(Options.ResponseTimeout);
            HttpResponseMessage response;
            try { response = await Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token); }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TransientRegistryException($"{what}: no answer from {url.Host} within {Options.ResponseTimeout.TotalSeconds:0} s");
            }
            catch (HttpRequestException e) when (e.InnerException is System.Security.Authentication.AuthenticationException tls)
            {
                // Not worth a retry: the same handshake fails the same way.
                throw new ImageException($"{what}: TLS with {url.Authority} failed ({tls.Message}); a plain-HTTP server needs " +
                    "--insecure-options=http, one with an untrusted certificate --insecure-options=tls", e);
            }
            Log.Debug("GET {Url}{Headers} -> {Status}", ForLog(url), ForLog(request), (int)response.StatusCode);
            if ((int)response.StatusCode is not (301 or 302 or 303 or 307 or 308)) return response;
            var location = response.Headers.Location;
            response.Dispose();
            if (location is null) throw new ImageException($"{what}: {url.Host} redirected without a Location");
            if (hop + 1 > Options.MaxRedirects) throw new ImageException($"{what}: more than {Options.MaxRedirects} redirects (a redirect loop?)");
            var next = location.IsAbsoluteUri ? location : new Uri(url, location);
            if (next.Scheme is not ("https" or "http")) throw new ImageException($"{what}: redirected to an unsupported URL scheme \"{next.Scheme}\"");
            if (next.Scheme == "http" && url.Scheme == "https" && !Options.Insecure.HasFlag(InsecureOptions.Http))
                throw new ImageException($"{what}: redirected from https to plain http ({next.Host}); allow it with --insecure-options=http");
            url = next;
        }
    }

    /// <summary>A GET (of discovery, an ACI, a signature, a key: with the <c>auth</c> files'
    /// credentials for each host) that must succeed: 429 and 5xx are <see cref="TransientRegistryException"/>s
    /// for <see cref="Retry"/>, any other failure an <see cref="ImageException"/>.</summary>
    /// <param name="ifNoneMatch">an ETag the caller has: a 304 answer is then returned too.</param>
    /// <param name="resume">the part the caller has: a 416 answer is then returned too.</param>
    public async Task<HttpResponseMessage> GetOk(Uri url, string what, CancellationToken ct, string? ifNoneMatch = null, ResumeFrom? resume = null)
    {
        var response = await Follow(url, null, what, null, ct, ifNoneMatch, resume, hostAuth: true);
        if (response.IsSuccessStatusCode || (ifNoneMatch is not null && response.StatusCode == HttpStatusCode.NotModified)
            || (resume is not null && response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)) return response;
        var (code, reason) = ((int)response.StatusCode, response.ReasonPhrase);
        var retryAfter = response.Headers.RetryAfter?.Delta;
        response.Dispose();
        throw code is 429 or >= 500
            ? new TransientRegistryException($"{what}: {url.Host} answered {code}", retryAfter)
            : new ImageException($"{what}: {ForLog(url)} answered {code} {reason}");
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
                    OperationCanceledException => $"{what}: timed out after {Options.ResponseTimeout.TotalSeconds:0} s",
                    _ => $"{what}: {e.Message}",
                };
                if (n >= Options.MaxAttempts) throw new ImageException($"{message} (gave up after {n} attempts)", e);
                var wait = (e as TransientRegistryException)?.RetryAfter ?? Options.RetryBaseDelay * Math.Pow(2, n - 1);
                if (wait > Options.MaxRetryWait) wait = Options.MaxRetryWait;
                Log.Debug("{Message}; attempt {Attempt} of {Max} in {Wait} ms", message, n + 1, Options.MaxAttempts, (int)wait.TotalMilliseconds);
                await Task.Delay(wait, ct);
            }
        }
    }

    /// <summary>Whether <paramref name="e"/> (an attempt's failure, or the last one <see cref="Retry"/>
    /// gave up after) came from the network rather than from what was received: a partial download
    /// is then worth keeping for the next attempt.</summary>
    public static bool IsNetworkFailure(Exception e, CancellationToken ct) =>
        IsTransient(e, ct) || (e is ImageException { InnerException: { } inner } && IsTransient(inner, ct)) || ct.IsCancellationRequested;

    private static bool IsTransient(Exception e, CancellationToken ct) => e switch
    {
        TransientRegistryException or HttpRequestException => true,
        IOException => true, // a connection reset mid-body
        OperationCanceledException => !ct.IsCancellationRequested,
        _ => false,
    };

    /// <summary>Reads a small body (manifest, token, page, key) whole, refusing more than <paramref name="limit"/> bytes.</summary>
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

    /// <summary>GETs a small document whole, within the response time-out, retrying transient failures.</summary>
    public Task<byte[]> GetSmall(Uri url, long limit, string what, CancellationToken ct) =>
        Retry(what, async ct =>
        {
            using var response = await GetOk(url, what, ct);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(Options.ResponseTimeout);
            return await ReadLimited(response, limit, what, timeout.Token);
        }, ct);

    /// <summary>The request headers the debug log shows: an Authorization header as its scheme
    /// alone (its credentials or token never), and a range asked for.</summary>
    private static string ForLog(HttpRequestMessage request)
    {
        var shown = new List<string>();
        if (request.Headers.Authorization is { } auth) shown.Add($"Authorization: {auth.Scheme} <redacted>");
        if (request.Headers.Range is { } range) shown.Add($"Range: {range}");
        if (request.Headers.IfRange is { } ifRange) shown.Add($"If-Range: {ifRange}");
        if (request.Headers.IfNoneMatch.Count > 0) shown.Add($"If-None-Match: {request.Headers.IfNoneMatch}");
        return shown.Count == 0 ? "" : $" ({string.Join("; ", shown)})";
    }

    /// <summary>URLs as the debug log shows them: a redirect's query string may hold a signed
    /// credential (S3's X-Amz-Signature), so it is left out.</summary>
    public static string ForLog(Uri url) => url.Query.Length > 1 ? url.GetLeftPart(UriPartial.Path) + "?…" : url.ToString();

    public void Dispose() => Client.Dispose();
}

using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Rkt.Kvm.Images.Registry;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// An HTTPS server on 127.0.0.1 (Kestrel, a certificate from a <see cref="TestCa"/>) that plays
/// every host of an appc test: it serves the files a test puts (discovery pages, ACIs, signatures,
/// keys) by path and query, and records each request. <see cref="Network"/> points fetches for
/// any host name at it and trusts the test CA, so names like <c>example.com</c> keep their TLS
/// checks and nothing leaves the machine.
/// </summary>
public sealed class AppcServer : IDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, (byte[] Body, string Type)> _files = new();
    private readonly ConcurrentDictionary<string, (string ETag, string? CacheControl)> _caching = new();

    /// <param name="address">where it listens (127.0.0.1 by default; 127.0.0.2 is another host on this machine).</param>
    /// <param name="https">false: plain http, on <paramref name="address"/> (for a real rkt-kvm process, which knows no test CA).</param>
    public AppcServer(TestCa ca, IPAddress? address = null, bool https = true)
    {
        Ca = ca;
        Address = address ?? IPAddress.Loopback;
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(Address, 0, l => { if (https) l.UseHttps(ca.Server); }));
        _app = builder.Build();
        _app.Run(Answer);
        _app.StartAsync().GetAwaiter().GetResult();
        var listening = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        Port = new Uri(listening).Port;
    }

    public TestCa Ca { get; }
    public IPAddress Address { get; }
    public int Port { get; }
    public ConcurrentQueue<string> Requests { get; } = new();

    /// <summary>Each request with the headers the auth and resume tests look at.</summary>
    public ConcurrentQueue<Received> Received { get; } = new();

    /// <summary>When set, every request must carry this Authorization header, or is answered 401.</summary>
    public string? RequiredAuthorization { get; set; }

    /// <summary>Range requests answered with the whole file (200), as by a server that knows no ranges.</summary>
    public bool IgnoreRange { get; set; }

    /// <summary>Range requests answered 416 Range Not Satisfiable.</summary>
    public bool RefuseRange { get; set; }

    private readonly ConcurrentDictionary<string, string> _redirects = new();
    private readonly ConcurrentDictionary<string, (int Bytes, int Times)> _cuts = new();

    /// <summary>Every connection goes to this server, whatever host it names; the test CA is the only root.</summary>
    internal TestNetwork Network => new(Ca.Root, _ => new DnsEndPoint("127.0.0.1", Port));

    /// <summary>The same, with no trusted root: the system's CAs, which never issued the test certificate.</summary>
    internal TestNetwork UntrustedNetwork => Network with { TrustedRoot = null };

    /// <summary>Serves <paramref name="body"/> at <paramref name="pathAndQuery"/> ("/app?ac-discovery=1").</summary>
    public void Put(string pathAndQuery, byte[] body, string type = "application/octet-stream") => _files[pathAndQuery] = (body, type);

    public void Remove(string pathAndQuery) => _files.TryRemove(pathAndQuery, out _);

    /// <summary>Serves <paramref name="pathAndQuery"/> with an ETag (a request that sends it back as
    /// If-None-Match is answered 304) and, when given, a Cache-Control header.</summary>
    public void Cache(string pathAndQuery, string etag, string? cacheControl = null) => _caching[pathAndQuery] = (etag, cacheControl);

    /// <summary>Answers <paramref name="pathAndQuery"/> with a 302 to <paramref name="location"/>.</summary>
    public void Redirect(string pathAndQuery, string location) => _redirects[pathAndQuery] = location;

    /// <summary>The next <paramref name="times"/> answers for <paramref name="pathAndQuery"/> send
    /// <paramref name="bytes"/> bytes of their body, then the connection is cut.</summary>
    public void CutAfter(string pathAndQuery, int bytes, int times = 1) => _cuts[pathAndQuery] = (bytes, times);

    /// <summary>How many requests were answered 304 Not Modified.</summary>
    public int NotModified => _notModified;
    private int _notModified;

    /// <summary>A discovery page holding <paramref name="metas"/> (name, content) as meta tags.</summary>
    public void PutDiscovery(string path, params (string Name, string Content)[] metas) =>
        Put(path + "?ac-discovery=1", System.Text.Encoding.UTF8.GetBytes(
            "<!DOCTYPE html>\n<html><head>\n" + string.Concat(metas.Select(m => $"  <meta name=\"{m.Name}\" content=\"{m.Content}\">\n")) +
            "</head><body></body></html>\n"), "text/html");

    public int Count(string pathPrefix) => Requests.Count(r => r.StartsWith(pathPrefix, StringComparison.Ordinal));

    private async Task Answer(HttpContext context)
    {
        var key = context.Request.Path + context.Request.QueryString;
        var headers = context.Request.Headers;
        Requests.Enqueue($"{key} host={context.Request.Host.Host}");
        Received.Enqueue(new Received(key, context.Request.Host.Host, Header(headers.Authorization), Header(headers.Range), Header(headers.IfRange)));
        if (RequiredAuthorization is not null && headers.Authorization != RequiredAuthorization)
        {
            context.Response.StatusCode = 401;
            return;
        }
        if (_redirects.TryGetValue(key, out var location))
        {
            context.Response.StatusCode = 302;
            context.Response.Headers.Location = location;
            return;
        }
        if (!_files.TryGetValue(key, out var file))
        {
            context.Response.StatusCode = 404;
            return;
        }
        string? etag = null;
        if (_caching.TryGetValue(key, out var caching))
        {
            etag = caching.ETag;
            context.Response.Headers.ETag = caching.ETag;
            if (caching.CacheControl is not null) context.Response.Headers.CacheControl = caching.CacheControl;
            if (headers.IfNoneMatch == caching.ETag)
            {
                Interlocked.Increment(ref _notModified);
                context.Response.StatusCode = 304;
                return;
            }
        }
        var body = file.Body.AsMemory();
        // Range as RFC 9110 says: only "bytes=N-" here, and only while If-Range (when sent) is the current ETag.
        if (headers.Range.ToString() is ['b', 'y', 't', 'e', 's', '=', .. var spec] && spec.EndsWith('-') && !IgnoreRange
            && (headers.IfRange.Count == 0 || headers.IfRange == etag))
        {
            var from = int.Parse(spec[..^1]);
            if (RefuseRange || from >= body.Length)
            {
                context.Response.StatusCode = 416;
                context.Response.Headers.ContentRange = $"bytes */{body.Length}";
                return;
            }
            context.Response.StatusCode = 206;
            context.Response.Headers.ContentRange = $"bytes {from}-{body.Length - 1}/{body.Length}";
            body = body[from..];
        }
        context.Response.ContentType = file.Type;
        context.Response.ContentLength = body.Length;
        if (_cuts.TryGetValue(key, out var cut) && cut.Times > 0)
        {
            _cuts[key] = cut with { Times = cut.Times - 1 };
            await context.Response.Body.WriteAsync(body[..Math.Min(cut.Bytes, body.Length)]);
            await context.Response.Body.FlushAsync();
            await Task.Delay(200); // what was sent arrives before the cut
            context.Abort();
            return;
        }
        await context.Response.Body.WriteAsync(body);
    }

    private static string? Header(Microsoft.Extensions.Primitives.StringValues value) => value.Count == 0 ? null : value.ToString();

    public void Dispose()
    {
        _app.StopAsync().GetAwaiter().GetResult();
        ((IDisposable)_app).Dispose();
    }
}

/// <summary>One request an <see cref="AppcServer"/> answered, with the headers the tests check.</summary>
public sealed record Received(string PathAndQuery, string Host, string? Authorization, string? Range, string? IfRange);

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

    public AppcServer(TestCa ca)
    {
        Ca = ca;
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseHttps(ca.Server)));
        _app = builder.Build();
        _app.Run(Answer);
        _app.StartAsync().GetAwaiter().GetResult();
        var address = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        Port = new Uri(address).Port;
    }

    public TestCa Ca { get; }
    public int Port { get; }
    public ConcurrentQueue<string> Requests { get; } = new();

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
        Requests.Enqueue($"{key} host={context.Request.Host.Host}");
        if (!_files.TryGetValue(key, out var file))
        {
            context.Response.StatusCode = 404;
            return;
        }
        if (_caching.TryGetValue(key, out var caching))
        {
            context.Response.Headers.ETag = caching.ETag;
            if (caching.CacheControl is not null) context.Response.Headers.CacheControl = caching.CacheControl;
            if (context.Request.Headers.IfNoneMatch == caching.ETag)
            {
                Interlocked.Increment(ref _notModified);
                context.Response.StatusCode = 304;
                return;
            }
        }
        context.Response.ContentType = file.Type;
        context.Response.ContentLength = file.Body.Length;
        await context.Response.Body.WriteAsync(file.Body);
    }

    public void Dispose()
    {
        _app.StopAsync().GetAwaiter().GetResult();
        ((IDisposable)_app).Dispose();
    }
}

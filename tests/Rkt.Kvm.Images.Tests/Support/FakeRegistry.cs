using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// A small in-process registry (HttpListener on 127.0.0.1) that serves an OCI layout through the
/// distribution API, for the behaviours a real registry never shows: a test installs a
/// <see cref="Handler"/> that answers (or mangles) a request before the default serving does.
/// Every request is recorded with the Authorization header it carried.
/// </summary>
public sealed class FakeRegistry : IDisposable
{
    private readonly HttpListener _listener;
    private readonly Dictionary<string, byte[]> _blobs = new();
    private readonly Dictionary<string, (byte[] Body, string Type)> _manifests = new();
    private readonly CancellationTokenSource _stop = new();

    public FakeRegistry()
    {
        // A free port can be taken by a parallel test between the look and the bind: try another.
        for (int attempt = 1; ; attempt++)
        {
            Port = RegistryServer.FreePort();
            _listener = new HttpListener();
            _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
            try { _listener.Start(); break; }
            catch (HttpListenerException) when (attempt < 5) { _listener.Close(); }
        }
        _ = Task.Run(Serve);
    }

    public int Port { get; private set; }
    public string Host => $"127.0.0.1:{Port}";
    public ConcurrentQueue<(string Path, string? Authorization)> Requests { get; } = new();

    /// <summary>Returns true when it answered the request itself.</summary>
    public Func<HttpListenerContext, Task<bool>>? Handler { get; set; }

    /// <summary>Serves the blobs of an OCI layout, and its one manifest under <paramref name="tag"/> and its digest.</summary>
    public void Serve(string layout, string tag)
    {
        foreach (var file in Directory.EnumerateFiles(Path.Join(layout, "blobs", "sha256")))
            _blobs["sha256:" + Path.GetFileName(file)] = File.ReadAllBytes(file);
        using var index = JsonDocument.Parse(File.ReadAllBytes(Path.Join(layout, "index.json")));
        var digest = index.RootElement.GetProperty("manifests")[0].GetProperty("digest").GetString()!;
        PutManifest(tag, _blobs[digest]);
    }

    public void PutManifest(string reference, byte[] body, string type = "application/vnd.oci.image.manifest.v1+json")
    {
        _manifests[reference] = (body, type);
        _manifests[RegistryPush.Sha256(body)] = (body, type);
    }

    public byte[] Blob(string digest) => _blobs[digest];

    private async Task Serve()
    {
        while (!_stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try { context = await _listener.GetContextAsync(); }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            catch (HttpListenerException) { return; }
            catch (ObjectDisposedException) { return; }
            _ = Task.Run(() => Answer(context));
        }
    }

    private async Task Answer(HttpListenerContext context)
    {
        var path = context.Request.Url!.AbsolutePath;
        Requests.Enqueue((path, context.Request.Headers["Authorization"]));
        try
        {
            if (Handler is { } handler && await handler(context)) return;
            var response = context.Response;
            if (path == "/v2/") { await Write(response, 200, "{}"u8.ToArray()); return; }
            var parts = path.Split('/');
            // /v2/<repo…>/manifests/<ref> or /v2/<repo…>/blobs/<digest>
            var kind = parts.Length >= 4 ? parts[^2] : "";
            var reference = Uri.UnescapeDataString(parts[^1]);
            if (kind == "manifests" && _manifests.TryGetValue(reference, out var manifest))
            {
                response.ContentType = manifest.Type;
                response.Headers["Docker-Content-Digest"] = RegistryPush.Sha256(manifest.Body);
                await Write(response, 200, manifest.Body);
            }
            else if (kind == "blobs" && _blobs.TryGetValue(reference, out var blob)) await Write(response, 200, blob);
            else await Write(response, 404, Encoding.UTF8.GetBytes("""{"errors":[{"code":"NOT_FOUND"}]}"""));
        }
        catch (Exception) when (_stop.IsCancellationRequested) { }
        catch (HttpListenerException) { } // the client went away: expected in the hostile tests
        catch (IOException) { }
    }

    public static async Task Write(HttpListenerResponse response, int status, byte[] body)
    {
        response.StatusCode = status;
        response.ContentLength64 = body.Length;
        await response.OutputStream.WriteAsync(body);
        response.Close();
    }

    public void Dispose()
    {
        _stop.Cancel();
        // The managed HttpListener can throw while tearing its endpoint down; the test is over either way.
        try { _listener.Stop(); _listener.Close(); } catch (Exception e) when (e is ObjectDisposedException or HttpListenerException) { }
        _stop.Dispose();
    }
}

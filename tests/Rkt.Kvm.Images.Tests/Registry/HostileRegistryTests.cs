using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests.Registry;

/// <summary>
/// Registries that lie, stall or attack, played by an in-process server on 127.0.0.1: every case
/// ends in one clear sentence, in bounded time, with the store exactly as it was (empty).
/// Retries and time-outs are shortened so that the cases run in seconds.
/// </summary>
public sealed class HostileRegistryTests : StoreTest, IDisposable
{
    private readonly FakeRegistry _registry = new();
    private readonly string _layout;
    private readonly string _layer; // the first layer's digest

    private static readonly RegistryOptions Fast = new()
    {
        Insecure = InsecureOptions.Image | InsecureOptions.Http,
        MaxAttempts = 3, RetryBaseDelay = TimeSpan.FromMilliseconds(10),
        IdleTimeout = TimeSpan.FromSeconds(1), ResponseTimeout = TimeSpan.FromSeconds(5), SlowGrace = TimeSpan.FromSeconds(1),
    };

    public HostileRegistryTests()
    {
        _layout = RegistryPush.Layout(_tmp, "img", "v1", layers: 2, bytesPerLayer: 200_000);
        _registry.Serve(_layout, "v1");
        _layer = Manifest()["layers"]![0]!["digest"]!.GetValue<string>();
    }

    public new void Dispose()
    {
        _registry.Dispose();
        base.Dispose();
    }

    private System.Text.Json.Nodes.JsonNode Manifest()
    {
        using var index = JsonDocument.Parse(File.ReadAllBytes(Path.Join(_layout, "index.json")));
        var digest = index.RootElement.GetProperty("manifests")[0].GetProperty("digest").GetString()!;
        return System.Text.Json.Nodes.JsonNode.Parse(_registry.Blob(digest))!;
    }

    private ImageRecord Fetch(RegistryOptions? options = null, string tag = "v1") =>
        new RegistryFetcher(_store.Store, options ?? Fast).Fetch(ImageReference.Parse($"docker://{_registry.Host}/evil/img:{tag}"), PullPolicy.Update, new ImportOptions());

    /// <summary>The fetch fails with one sentence containing <paramref name="expected"/>, and the store holds nothing.</summary>
    private string Refused(string expected, RegistryOptions? options = null, string tag = "v1")
    {
        var e = Assert.ThrowsAny<ImageException>(() => Fetch(options, tag));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        _store.AssertEmpty();
        return e.Message;
    }

    private bool IsLayer(HttpListenerContext c) => c.Request.Url!.AbsolutePath.EndsWith("/blobs/" + _layer, StringComparison.Ordinal);

    /// <summary>Serves a hand-made manifest under tag "bad".</summary>
    private void BadManifest(Action<System.Text.Json.Nodes.JsonNode> edit)
    {
        var manifest = Manifest();
        edit(manifest);
        _registry.PutManifest("bad", Encoding.UTF8.GetBytes(manifest.ToJsonString()));
    }

    [Fact]
    public void The_fake_registry_serves_a_good_image()
    {
        var image = Fetch();
        Assert.Equal(2, image.Blobs.Count);
    }

    [Fact]
    public void A_blob_with_the_wrong_digest_is_refused()
    {
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            var bytes = (byte[])_registry.Blob(_layer).Clone();
            bytes[^1] ^= 0xff;
            await FakeRegistry.Write(c.Response, 200, bytes);
            return true;
        };
        Refused($"({_layer}) does not match its digest");
    }

    [Fact]
    public void A_blob_longer_than_its_descriptor_is_cut_off()
    {
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            // No Content-Length (chunked): the client must count for itself.
            c.Response.SendChunked = true;
            await c.Response.OutputStream.WriteAsync(_registry.Blob(_layer));
            await c.Response.OutputStream.WriteAsync(new byte[1 << 20]);
            c.Response.Close();
            return true;
        };
        Refused("is longer than the");
    }

    [Fact]
    public void A_blob_shorter_than_its_descriptor_is_refused()
    {
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            // Chunked and cleanly ended, one byte short: nothing but the count can tell.
            c.Response.SendChunked = true;
            var blob = _registry.Blob(_layer);
            await c.Response.OutputStream.WriteAsync(blob.AsMemory(0, blob.Length - 1));
            c.Response.Close();
            return true;
        };
        Refused($"the connection ended after {_registry.Blob(_layer).Length - 1} of {_registry.Blob(_layer).Length} bytes (gave up after 3 attempts)");
    }

    [Fact]
    public void A_content_length_other_than_the_descriptor_is_refused_before_reading()
    {
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            await FakeRegistry.Write(c.Response, 200, new byte[10]);
            return true;
        };
        Refused("the registry sends 10 bytes, its manifest says");
    }

    [Fact]
    public void A_server_that_stops_mid_blob_is_retried_then_given_up_on()
    {
        int calls = 0;
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            Interlocked.Increment(ref calls);
            var blob = _registry.Blob(_layer);
            c.Response.ContentLength64 = blob.Length;
            await c.Response.OutputStream.WriteAsync(blob.AsMemory(0, blob.Length / 2));
            await c.Response.OutputStream.FlushAsync();
            c.Response.Abort();
            return true;
        };
        var message = Refused("gave up after 3 attempts");
        Assert.Contains("the connection ended after", message);
        Assert.Equal(3, calls);
    }

    /// <summary>The first answer for the layer is cut in half; the next ones answer the Range
    /// asked for with <paramref name="rest"/> (the blob and where the rest starts → the 206 body).</summary>
    private List<string?> CutThenServeRanges(Func<byte[], int, byte[]> rest)
    {
        var ranges = new List<string?>();
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            var blob = _registry.Blob(_layer);
            string? range = c.Request.Headers["Range"];
            lock (ranges) ranges.Add(range);
            if (range is null)
            {
                c.Response.ContentLength64 = blob.Length;
                await c.Response.OutputStream.WriteAsync(blob.AsMemory(0, blob.Length / 2));
                await c.Response.OutputStream.FlushAsync();
                c.Response.Abort();
                return true;
            }
            int from = int.Parse(range["bytes=".Length..^1]);
            c.Response.Headers["Content-Range"] = $"bytes {from}-{blob.Length - 1}/{blob.Length}";
            await FakeRegistry.Write(c.Response, 206, rest(blob, from));
            return true;
        };
        return ranges;
    }

    [Fact]
    public void A_blob_cut_off_is_continued_with_a_range_and_its_digest_checked_over_the_whole()
    {
        var ranges = CutThenServeRanges((blob, from) => blob[from..]);
        var image = Fetch();
        Assert.Equal(2, ranges.Count);
        Assert.Null(ranges[0]);
        Assert.Matches("^bytes=[1-9][0-9]*-$", ranges[1]);
        Assert.Contains(_layer, image.Blobs);
    }

    [Fact]
    public void A_continuation_that_does_not_fit_the_part_held_fails_the_digest()
    {
        CutThenServeRanges((blob, from) => new byte[blob.Length - from]);
        Refused("does not match its digest");
    }

    [Fact]
    public void A_server_that_stalls_hits_the_idle_timeout()
    {
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            var blob = _registry.Blob(_layer);
            c.Response.ContentLength64 = blob.Length;
            await c.Response.OutputStream.WriteAsync(blob.AsMemory(0, 1000));
            await c.Response.OutputStream.FlushAsync();
            await Task.Delay(TimeSpan.FromSeconds(30));
            return true;
        };
        var clock = Stopwatch.StartNew();
        Refused("nothing received for 1 s after", Fast with { MaxAttempts = 2 });
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
    }

    [Fact]
    public void A_server_that_trickles_is_given_up_on_in_bounded_time()
    {
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            var blob = _registry.Blob(_layer);
            c.Response.ContentLength64 = blob.Length;
            // A byte well within the idle timeout each time, but far below any useful rate.
            for (int i = 0; i < blob.Length; i++)
            {
                await c.Response.OutputStream.WriteAsync(blob.AsMemory(i, 1));
                await c.Response.OutputStream.FlushAsync();
                await Task.Delay(100);
            }
            return true;
        };
        var clock = Stopwatch.StartNew();
        Refused("arrives too slowly", Fast with { MinBytesPerSecond = 100_000, SlowGrace = TimeSpan.FromSeconds(1) });
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
    }

    [Fact]
    public void A_refused_layer_stops_the_downloads_still_running()
    {
        // Layer 1 escapes with "..": the import refuses it while layer 2 is still (not) arriving.
        var evil = _tmp["evil.tar"];
        using (var writer = new System.Formats.Tar.TarWriter(File.Create(evil)))
            writer.WriteEntry(new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.RegularFile, "../evil") { DataStream = new MemoryStream("x"u8.ToArray()) });
        var layout = OciBuilder.Build(_tmp["evil-oci"], "evil", evil, _tmp["img-layer2.tar"]);
        _registry.Serve(layout, "evil");
        using var index = JsonDocument.Parse(File.ReadAllBytes(Path.Join(layout, "index.json")));
        var manifest = JsonDocument.Parse(_registry.Blob(index.RootElement.GetProperty("manifests")[0].GetProperty("digest").GetString()!));
        var stalled = manifest.RootElement.GetProperty("layers")[1].GetProperty("digest").GetString()!;
        _registry.Handler = async c =>
        {
            if (!c.Request.Url!.AbsolutePath.EndsWith(stalled, StringComparison.Ordinal)) return false;
            c.Response.ContentLength64 = _registry.Blob(stalled).Length;
            await c.Response.OutputStream.WriteAsync(_registry.Blob(stalled).AsMemory(0, 10));
            await c.Response.OutputStream.FlushAsync();
            await Task.Delay(TimeSpan.FromSeconds(60));
            return true;
        };
        var clock = Stopwatch.StartNew();
        Refused("refusing archive entry \"../evil\"", Fast with { IdleTimeout = TimeSpan.FromSeconds(60), SlowGrace = TimeSpan.FromSeconds(60) }, tag: "evil");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
    }

    [Fact]
    public void Ten_thousand_layers_are_refused_before_any_blob_is_read()
    {
        BadManifest(m =>
        {
            var layer = m["layers"]![0]!.ToJsonString();
            m["layers"] = new System.Text.Json.Nodes.JsonArray(Enumerable.Range(0, 10_000).Select(_ => System.Text.Json.Nodes.JsonNode.Parse(layer)).ToArray());
        });
        Refused("lists 10000 layers; at most 256", tag: "bad");
        Assert.DoesNotContain(_registry.Requests, r => r.Path.Contains("/blobs/"));
    }

    [Fact]
    public void A_one_terabyte_layer_is_refused_before_any_blob_is_read()
    {
        BadManifest(m => m["layers"]![0]!["size"] = 1L << 40);
        Refused("more than the size limit", tag: "bad");
        Assert.DoesNotContain(_registry.Requests, r => r.Path.Contains("/blobs/"));
    }

    [Theory]
    [InlineData("sha256:../../../../../etc/passwd")]
    [InlineData("sha256:0000000000000000000000000000000000000000000000000000000000000000/../x")]
    [InlineData("md5:d41d8cd98f00b204e9800998ecf8427e")]
    public void A_digest_that_could_be_a_path_is_refused(string digest)
    {
        BadManifest(m => m["layers"]![1]!["digest"] = digest);
        Refused("invalid digest", tag: "bad");
        Assert.DoesNotContain(_registry.Requests, r => r.Path.Contains("/blobs/"));
    }

    [Fact]
    public void A_manifest_that_does_not_match_the_digest_asked_for_is_refused()
    {
        var other = Encoding.UTF8.GetBytes(Manifest().ToJsonString() + " ");
        var wanted = RegistryPush.Sha256(Encoding.UTF8.GetBytes(Manifest().ToJsonString()));
        _registry.Handler = async c =>
        {
            if (!c.Request.Url!.AbsolutePath.EndsWith("/manifests/" + wanted, StringComparison.Ordinal)) return false;
            await FakeRegistry.Write(c.Response, 200, other);
            return true;
        };
        var e = Assert.Throws<ImageException>(() => new RegistryFetcher(_store.Store, Fast)
            .Fetch(ImageReference.Parse($"docker://{_registry.Host}/evil/img@{wanted}"), PullPolicy.Update, new ImportOptions()));
        Assert.Contains("does not match its digest", e.Message);
        _store.AssertEmpty();
    }

    [Fact]
    public void An_oversized_manifest_is_refused()
    {
        _registry.PutManifest("huge", new byte[5 << 20]);
        Refused("is larger than 4194304 bytes", tag: "huge");
    }

    [Fact]
    public void A_schema1_manifest_is_refused_with_a_hint()
    {
        _registry.PutManifest("old", """{"schemaVersion":1,"name":"evil/img","tag":"old","fsLayers":[]}"""u8.ToArray(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws");
        Refused("Docker schema 1 manifest, which is not supported", tag: "old");
    }

    [Fact]
    public void A_redirect_loop_ends_after_the_redirect_limit()
    {
        _registry.Handler = c =>
        {
            if (!IsLayer(c)) return Task.FromResult(false);
            c.Response.StatusCode = 302;
            c.Response.RedirectLocation = c.Request.Url!.AbsolutePath;
            c.Response.Close();
            return Task.FromResult(true);
        };
        Refused("more than 5 redirects");
    }

    [Fact]
    public void Busy_and_failing_servers_are_retried_with_backoff()
    {
        int calls = 0;
        _registry.Handler = async c =>
        {
            if (!IsLayer(c) || Interlocked.Increment(ref calls) > 2) return false;
            if (calls == 1) c.Response.Headers["Retry-After"] = "0";
            await FakeRegistry.Write(c.Response, calls == 1 ? 429 : 503, []);
            return true;
        };
        Assert.Equal(2, Fetch().Blobs.Count);
        Assert.Equal(3, calls);
    }

    [Fact]
    public void Bearer_tokens_are_fetched_with_the_credentials_and_blob_storage_redirects_get_none()
    {
        using var storage = new FakeRegistry(); // another host: the blob storage a registry redirects to
        var authDir = _tmp.Dir("etc/auth.d");
        File.WriteAllText(Path.Join(authDir, "r.json"),
            $$$"""{"rktKind":"dockerAuth","rktVersion":"v1","registries":["{{{_registry.Host}}}"],"credentials":{"user":"bob","password":"pw"}}""");
        string? tokenAuth = null, tokenQuery = null;
        _registry.Handler = async c =>
        {
            var path = c.Request.Url!.AbsolutePath;
            if (path == "/token")
            {
                tokenAuth = c.Request.Headers["Authorization"];
                tokenQuery = c.Request.Url.Query;
                await FakeRegistry.Write(c.Response, 200, """{"token":"tok-123"}"""u8.ToArray());
                return true;
            }
            if (c.Request.Headers["Authorization"] != "Bearer tok-123")
            {
                c.Response.Headers["WWW-Authenticate"] = $"Bearer realm=\"http://{_registry.Host}/token\",service=\"fake\",scope=\"repository:evil/img:pull\"";
                await FakeRegistry.Write(c.Response, 401, []);
                return true;
            }
            if (IsLayer(c))
            {
                c.Response.StatusCode = 307;
                c.Response.RedirectLocation = $"http://{storage.Host}/store/{_layer}?X-Amz-Signature=secret";
                c.Response.Close();
                return true;
            }
            return false;
        };
        storage.Handler = async c =>
        {
            await FakeRegistry.Write(c.Response, 200, _registry.Blob(_layer));
            return true;
        };
        var image = Fetch(Fast with { Auth = AuthConfig.Load(_tmp["etc"]) });
        Assert.Equal(2, image.Blobs.Count);
        Assert.Equal("Basic " + Convert.ToBase64String("bob:pw"u8.ToArray()), tokenAuth);
        Assert.Contains("scope=repository%3Aevil%2Fimg%3Apull", tokenQuery);
        Assert.Contains("service=fake", tokenQuery);
        Assert.Single(storage.Requests);
        Assert.Null(storage.Requests.Single().Authorization); // our token stays with the registry
    }

    [Fact]
    public void A_token_that_expires_mid_fetch_is_renewed_once_for_the_parallel_downloads()
    {
        int issued = 0;
        _registry.Handler = async c =>
        {
            var path = c.Request.Url!.AbsolutePath;
            if (path == "/token")
            {
                var token = $"tok-{Interlocked.Increment(ref issued)}";
                await FakeRegistry.Write(c.Response, 200, Encoding.UTF8.GetBytes($$"""{"token":"{{token}}"}"""));
                return true;
            }
            // The first token "expires" before the layers: they need the second.
            var wanted = path.Contains("/blobs/") && path != $"/v2/evil/img/blobs/{Manifest()["config"]!["digest"]}" ? "Bearer tok-2" : null;
            var auth = c.Request.Headers["Authorization"];
            if (auth is null || (wanted is not null && auth != wanted))
            {
                c.Response.Headers["WWW-Authenticate"] = $"Bearer realm=\"http://{_registry.Host}/token\",service=\"fake\"";
                await FakeRegistry.Write(c.Response, 401, []);
                return true;
            }
            return false;
        };
        Assert.Equal(2, Fetch().Blobs.Count);
        Assert.Equal(2, issued);
    }

    [Fact]
    public async Task A_fetch_killed_mid_download_leaves_no_image_and_gc_removes_its_scratch()
    {
        var gotHalf = new TaskCompletionSource();
        _registry.Handler = async c =>
        {
            if (!IsLayer(c)) return false;
            var blob = _registry.Blob(_layer);
            c.Response.ContentLength64 = blob.Length;
            await c.Response.OutputStream.WriteAsync(blob.AsMemory(0, blob.Length / 2));
            await c.Response.OutputStream.FlushAsync();
            gotHalf.TrySetResult();
            await Task.Delay(TimeSpan.FromSeconds(60));
            return true;
        };
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { CliProcess.Dll, "--dir", _tmp["data"], "--insecure-options=image,http", "fetch", $"docker://{_registry.Host}/evil/img:v1" })
            psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        await gotHalf.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var scratch = Path.Join(_tmp["data"], "cas", "tmp");
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!Directory.EnumerateFiles(scratch, _layer[7..], SearchOption.AllDirectories).Any(f => new FileInfo(f).Length > 0))
        {
            Assert.True(DateTime.UtcNow < deadline, "the fetch never wrote its download");
            await Task.Delay(10);
        }
        process.Kill(); // SIGKILL: no clean-up of any kind
        await process.WaitForExitAsync();

        Assert.Empty(_store.Store.List());
        var gc = await CliProcess.Run("--dir", _tmp["data"], "image", "gc");
        Assert.Contains("1 interrupted operation(s) removed", gc.Out);
        _store.AssertEmpty();
    }
}

using System.Net;
using System.Text;
using Rkt.Kvm.Images.Appc;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Tests.Support;
using Rkt.Kvm.Images.Trust;

namespace Rkt.Kvm.Images.Tests.Appc;

/// <summary>
/// What rkt's resumable session does for an ACI download: a download cut off is continued with
/// Range and If-Range (by a retry, or by the next fetch), started again when the server sends the
/// whole or its file changed; per-host credentials from <c>auth.d</c> (<c>auth</c> kind) for
/// discovery, the ACI and its signature, to that host only; and HTTP caching of an image fetched by name.
/// </summary>
public sealed partial class AppcFetchTests
{
    private const string ETag1 = "\"v1\"";
    private static readonly RegistryOptions FastRetry = new() { MaxAttempts = 2, RetryBaseDelay = TimeSpan.FromMilliseconds(10) };
    private static readonly RegistryOptions NoRetry = FastRetry with { MaxAttempts = 1 };

    private string Url => "https://example.com" + UrlPath;

    /// <summary>The URL's ACI (signed by <see cref="Signer"/>, trusted), served with an ETag.</summary>
    private void PublishAtUrl(byte[] aci, string etag = ETag1)
    {
        _server.Put(UrlPath, aci);
        _server.Put(UrlPath + ".asc", Signer.Sign(aci));
        _server.Cache(UrlPath, etag);
    }

    private ImageRecord FetchUrl(RegistryOptions options) =>
        new AppcFetcher(_store.Store, new TrustedKeyStore(_tmp.Dir("usr-lib-rkt"), _tmp.Dir("etc-rkt")), options with { Test = _server.Network },
            new KeyReviewConsole(TextWriter.Null, TextWriter.Null, null)).FetchUrl(new Uri(Url), PullPolicy.Update, new ImportOptions());

    private List<Received> AciRequests => _server.Received.Where(r => r.PathAndQuery == UrlPath).ToList();

    private string[] Partials => Directory.Exists(_store.Store.TmpDir) ? Directory.GetFiles(_store.Store.TmpDir, "partial-*") : [];

    private static long RangeStart(Received request) =>
        request.Range is ['b', 'y', 't', 'e', 's', '=', .. var spec] && spec.EndsWith('-') ? long.Parse(spec[..^1]) : -1;

    [Fact]
    public void An_aci_download_cut_off_is_continued_by_the_next_fetch_with_range_and_if_range()
    {
        Trust(Signer);
        PublishAtUrl(_aci);
        _server.CutAfter(UrlPath, _aci.Length / 2);

        Assert.Contains("gave up after 1 attempts", Assert.Throws<ImageException>(() => FetchUrl(NoRetry)).Message);
        Assert.Empty(_store.Store.List()); // nothing half-written is an image
        var held = new FileInfo(Assert.Single(Partials, p => !p.EndsWith(".lock") && !p.EndsWith(".validator"))).Length;
        Assert.InRange(held, 1, _aci.Length / 2);

        var image = FetchUrl(NoRetry);
        var second = AciRequests[^1];
        Assert.Equal(held, RangeStart(second));
        Assert.Equal(ETag1, second.IfRange);
        // The signature was checked over the whole file, so the two parts joined make the image.
        Assert.Equal("hello\n", File.ReadAllText(Path.Join(_store.Render(image, _tmp["tree"]), "hello")));
        Assert.Empty(Partials);
    }

    [Fact]
    public void Image_gc_removes_a_part_no_fetch_holds_and_a_refusal_keeps_none()
    {
        Trust(Signer);
        PublishAtUrl(_aci);
        _server.CutAfter(UrlPath, _aci.Length / 2);
        Assert.Throws<ImageException>(() => FetchUrl(NoRetry));
        Assert.NotEmpty(Partials);
        Assert.Equal(1, _store.Store.Collect(null, DateTimeOffset.UtcNow).RemovedScratch);
        Assert.Empty(Partials);

        // Cut off, then continued with bytes that are not the image's: refused, and nothing is kept.
        _server.CutAfter(UrlPath, _aci.Length / 2);
        Assert.Throws<ImageException>(() => FetchUrl(NoRetry));
        var tampered = (byte[])_aci.Clone();
        tampered[^100] ^= 1;
        _server.Put(UrlPath, tampered);
        Assert.Contains("does not match it", Assert.ThrowsAny<ImageException>(() => FetchUrl(NoRetry)).Message);
        _store.AssertEmpty();
    }

    [Fact]
    public void A_retry_within_the_fetch_continues_the_download()
    {
        Trust(Signer);
        PublishAtUrl(_aci);
        _server.CutAfter(UrlPath, _aci.Length / 3);
        var image = FetchUrl(FastRetry);
        Assert.Equal(2, AciRequests.Count);
        Assert.Null(AciRequests[0].Range);
        Assert.True(RangeStart(AciRequests[1]) > 0);
        Assert.Equal("example.com/app", image.Name);
        Assert.Empty(Partials);
    }

    [Fact]
    public void A_server_that_ignores_the_range_sends_the_whole_again()
    {
        Trust(Signer);
        PublishAtUrl(_aci);
        _server.CutAfter(UrlPath, _aci.Length / 2);
        _server.IgnoreRange = true;
        var image = FetchUrl(FastRetry);
        Assert.True(RangeStart(AciRequests[1]) > 0); // asked, answered 200: written from the start
        Assert.Equal("hello\n", File.ReadAllText(Path.Join(_store.Render(image, _tmp["tree"]), "hello")));
    }

    [Fact]
    public void A_range_not_satisfiable_starts_the_download_again()
    {
        Trust(Signer);
        PublishAtUrl(_aci);
        _server.CutAfter(UrlPath, _aci.Length / 2);
        _server.RefuseRange = true;
        FetchUrl(FastRetry);
        Assert.Equal(3, AciRequests.Count); // cut, 416, the whole
        Assert.True(RangeStart(AciRequests[1]) > 0);
        Assert.Null(AciRequests[2].Range);
    }

    [Fact]
    public void A_file_changed_on_the_server_since_the_cut_is_downloaded_whole()
    {
        Trust(Signer);
        PublishAtUrl(_aci);
        _server.CutAfter(UrlPath, _aci.Length / 2);
        Assert.Throws<ImageException>(() => FetchUrl(NoRetry));

        var v2 = Aci("example.com/app", "v2");
        PublishAtUrl(v2, "\"v2\"");
        var image = FetchUrl(NoRetry);
        Assert.Equal(ETag1, AciRequests[^1].IfRange); // the old validator: the server sent the new file whole
        Assert.Equal("v2", image.Labels["version"]);
        Assert.Equal("\"v2\"", image.ETag);
    }

    private static string BasicHeader(string user, string password) => "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}"));

    private void AuthFile(string name, string json) => File.WriteAllText(Path.Join(_tmp.Dir("etc-rkt/auth.d"), name), json);

    [Theory]
    [InlineData("basic")]
    [InlineData("oauth")]
    public void Discovery_the_aci_and_its_signature_carry_the_hosts_credentials_and_a_redirect_elsewhere_none(string type)
    {
        Trust(Signer);
        using var other = new AppcServer(_ca);
        var network = new TestNetwork(_ca.Root, e => new DnsEndPoint("127.0.0.1", e.Host == "other.example" ? other.Port : _server.Port));
        // The ACI itself lives on another host, as on a CDN.
        other.Put(AciPath, _aci);
        _server.Redirect(AciPath, "https://other.example" + AciPath);
        _server.RequiredAuthorization = type == "basic" ? BasicHeader("alice", "s3cret") : "Bearer t0ken-s3cret";

        var (rc, _, err) = Cli(["fetch", "example.com/app:v1"], network: network);
        Assert.Equal(254, rc);
        Assert.Contains("answered 401", err); // no auth file yet

        AuthFile("example.json", type == "basic"
            ? """{"rktKind":"auth","rktVersion":"v1","domains":["example.com"],"type":"basic","credentials":{"user":"alice","password":"s3cret"}}"""
            : """{"rktKind":"auth","rktVersion":"v1","domains":["example.com"],"type":"oauth","credentials":{"token":"t0ken-s3cret"}}""");
        (rc, _, err) = Cli(["fetch", "example.com/app:v1"], network: network);
        Assert.True(rc == 0, err);
        var home = _server.Received.Where(r => r.Authorization is not null).Select(r => r.PathAndQuery).ToList();
        Assert.Contains("/app?ac-discovery=1", home);
        Assert.Contains(AciPath, home);
        Assert.Contains(AciPath + ".asc", home);
        Assert.Single(other.Received, r => r.PathAndQuery == AciPath);
        Assert.All(other.Received, r => Assert.Null(r.Authorization));
        Assert.DoesNotContain("s3cret", err);
    }

    [Fact]
    public async Task Credentials_go_over_plain_http_only_when_allowed_and_never_into_the_debug_log()
    {
        Trust(Signer);
        // A real process (the --debug log is its own stderr): plain http, as it knows no test CA.
        using var home = new AppcServer(_ca, IPAddress.Loopback, https: false);
        using var other = new AppcServer(_ca, IPAddress.Parse("127.0.0.2"), https: false);
        var url = $"http://127.0.0.1:{home.Port}{UrlPath}";
        home.Redirect(UrlPath, $"http://127.0.0.2:{other.Port}{UrlPath}");
        home.Put(UrlPath + ".asc", Signer.Sign(_aci));
        other.Put(UrlPath, _aci);
        home.RequiredAuthorization = BasicHeader("alice", "s3cret");
        AuthFile("local.json", $$$"""{"rktKind":"auth","rktVersion":"v1","domains":["127.0.0.1:{{{home.Port}}}"],"type":"basic","credentials":{"user":"alice","password":"s3cret"}}""");
        string[] Args(string insecure) => ["--dir", _tmp["data"], "--local-config", _tmp["etc-rkt"], "--system-config", _tmp["usr-lib-rkt"], insecure, "--debug", "fetch", url];

        // https only, as rkt: the plain-http URL needs --insecure-options=http anyway.
        var (rc, id, err) = await CliProcess.Run(Args("--insecure-options=http"));
        Assert.True(rc == 0, err);
        Assert.Matches("^sha512-", id.Trim());
        Assert.All(home.Received, r => Assert.Equal(BasicHeader("alice", "s3cret"), r.Authorization));
        Assert.All(other.Received, r => Assert.Null(r.Authorization));
        Assert.Contains("(Authorization: Basic <redacted>)", err);
        Assert.DoesNotContain("s3cret", err);
        Assert.DoesNotContain(BasicHeader("alice", "s3cret")[6..], err);
    }

    /// <summary>example.com/app:v1 fetched once, its ACI served with <see cref="ETag1"/> and
    /// <paramref name="cacheControl"/>; then fetched again with update (after <paramref name="wait"/>),
    /// which must give the same image. Returns that second fetch's stderr.</summary>
    private string FetchByNameTwice(string cacheControl, TimeSpan wait)
    {
        Trust(Signer);
        _server.Cache(AciPath, ETag1, cacheControl);
        var (rc, _, err) = Cli("fetch", "example.com/app:v1");
        Assert.True(rc == 0, err);
        var image = Assert.Single(_store.Store.List());
        Assert.Equal(ETag1, image.ETag);
        Thread.Sleep(wait);
        (rc, var stdout, err) = Cli("fetch", "--pull-policy=update", "example.com/app:v1");
        Assert.True(rc == 0, err);
        Assert.Equal(image.Id, stdout.Trim());
        Assert.Single(_store.Store.List());
        return err;
    }

    [Fact]
    public void An_image_fetched_by_name_is_not_asked_for_again_within_its_max_age()
    {
        FetchByNameTwice("max-age=3600", TimeSpan.Zero);
        Assert.Equal(2, _server.Count("/app?ac-discovery=1")); // discovery, as rkt, then the stored image
        Assert.Equal(1, _server.Count(AciPath + " "));
        Assert.Equal(1, _server.Count(AciPath + ".asc"));
    }

    [Fact]
    public void An_image_fetched_by_name_past_its_max_age_is_asked_for_with_if_none_match_and_kept_on_304()
    {
        var err = FetchByNameTwice("max-age=1", TimeSpan.FromMilliseconds(1100));
        Assert.Equal(1, _server.NotModified);
        Assert.DoesNotContain("downloading ACI", err);
        Assert.Empty(Partials);
    }
}

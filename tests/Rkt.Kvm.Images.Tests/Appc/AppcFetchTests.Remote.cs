using System.Net;
using System.Text;
using Rkt.Kvm.Images.Registry;
using Rkt.Kvm.Images.Tests.Support;

namespace Rkt.Kvm.Images.Tests.Appc;

/// <summary>
/// Per-host credentials from <c>auth.d</c> (<c>auth</c> kind) for discovery, the ACI and its
/// signature, to that host only.
/// </summary>
public sealed partial class AppcFetchTests
{
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
}

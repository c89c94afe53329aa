namespace Rkt.Kvm.Images.Tests.Appc;

/// <summary>
/// <c>fetch ./app.aci</c> and <c>fetch https://…/app.aci</c>, as rkt's file and http fetchers: the
/// signature next to the image (or <c>--signature</c>), checked with the keys trusted for the name
/// the image's manifest gives.
/// </summary>
public sealed partial class AppcFetchTests
{
    private const string UrlPath = "/files/app-1.aci";

    /// <summary>The image as a local file, with <paramref name="signature"/> (null: none) next to it.</summary>
    private string LocalAci(byte[] aci, byte[]? signature)
    {
        var dir = _tmp.Dir($"local-{Guid.NewGuid():N}");
        var path = Path.Join(dir, "app.aci");
        File.WriteAllBytes(path, aci);
        if (signature is not null) File.WriteAllBytes(path + ".asc", signature);
        return path;
    }

    /// <summary>A fetch of <paramref name="image"/> refused: exit 254, one error line holding <paramref name="expected"/>, the store empty.</summary>
    private void FetchRefused(string image, string expected, params string[] flags)
    {
        var (rc, stdout, err) = Cli([.. flags, "fetch", image]);
        Assert.Equal(254, rc);
        Assert.Equal("", stdout);
        // Progress and "signature verified" may come first; the refusal is the one line after them.
        var line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries),
            l => !IsProgress(l) && !l.StartsWith("rkt-kvm: signature verified: ", StringComparison.Ordinal));
        Assert.StartsWith("rkt-kvm: ", line);
        Assert.Contains(expected, line);
        _store.AssertEmpty();
    }

    [Fact]
    public void A_local_aci_is_verified_with_its_asc_and_the_keys_for_the_name_its_manifest_gives()
    {
        Trust(Signer);
        var path = LocalAci(_aci, Signer.Sign(_aci));
        var (rc, stdout, err) = Cli("fetch", path);
        Assert.True(rc == 0, err);
        Assert.Contains("rkt-kvm: signature verified: Example Signer <signer@example.com>", err);
        Assert.Equal(Assert.Single(_store.Store.List()).Id, stdout.Trim());
        Assert.Empty(_server.Requests); // nothing remote
    }

    [Fact]
    public void An_unsigned_local_aci_is_refused_unless_image_checks_are_off()
    {
        Trust(Signer);
        var path = LocalAci(_aci, null);
        FetchRefused(path, "error opening signature file:");
        FetchRefused(path, "app.aci.asc");

        var (rc, _, err) = Cli("--insecure-options=image", "fetch", path);
        Assert.True(rc == 0, err);
        Assert.Contains("rkt-kvm: warning: image signature verification has been disabled", err);
        Assert.Single(_store.Store.List());
    }

    [Fact]
    public void A_signature_of_another_file_is_refused()
    {
        Trust(Signer);
        FetchRefused(LocalAci(_aci, Signer.Sign(Aci("example.com/app", "v2"))), "does not match it: the image or its signature was altered");
    }

    [Fact]
    public void A_local_aci_is_checked_with_the_keys_of_its_own_name_only()
    {
        Trust(Signer, "example.com/other");
        FetchRefused(LocalAci(_aci, Signer.Sign(_aci)), "no key is trusted for image example.com/app");
    }

    [Fact]
    public void The_signature_flag_names_the_signature_file()
    {
        Trust(Signer);
        var path = LocalAci(_aci, Signer.Sign(Aci("example.com/app", "v2"))); // the .asc next to it is wrong
        var elsewhere = _tmp["elsewhere.asc"];
        File.WriteAllBytes(elsewhere, Signer.Sign(_aci));
        var (rc, _, err) = Cli("fetch", "--signature", elsewhere, path);
        Assert.True(rc == 0, err);
        Assert.Single(_store.Store.List());
        (rc, _, err) = Cli("fetch", "--signature", elsewhere, "example.com/app:v1");
        Assert.Equal(254, rc);
        Assert.Contains("--signature applies to image files and URLs", err);
    }

    [Fact]
    public void An_aci_url_is_fetched_with_its_asc_and_found_again_by_url()
    {
        Trust(Signer);
        _server.Put(UrlPath, _aci);
        _server.Put(UrlPath + ".asc", Signer.Sign(_aci));
        var url = "https://example.com" + UrlPath;
        var (rc, stdout, err) = Cli("fetch", url);
        Assert.True(rc == 0, err);
        Assert.Contains("signature verified: Example Signer", err);
        // Progress off a terminal: one plain line per download, then the import's.
        Assert.Contains("downloading signature app-1.aci.asc (", err);
        Assert.Contains("downloading ACI app-1.aci (", err);
        Assert.Contains("importing app-1.aci (", err);
        var image = Assert.Single(_store.Store.List());
        Assert.Equal(url, image.Remote);
        Assert.Equal(image.Id, stdout.Trim());

        int before = _server.Requests.Count;
        (rc, stdout, err) = Cli("fetch", "--pull-policy=new", "--quiet", url);
        Assert.True(rc == 0, err);
        Assert.Equal(image.Id, stdout.Trim());
        Assert.Equal(before, _server.Requests.Count);
        Assert.Equal("", err); // --quiet: no progress
    }

    [Fact]
    public void An_aci_url_is_fetched_again_only_when_its_etag_changed_or_its_max_age_passed()
    {
        Trust(Signer);
        var url = "https://example.com" + UrlPath;
        _server.Put(UrlPath, _aci);
        _server.Put(UrlPath + ".asc", Signer.Sign(_aci));
        _server.Cache(UrlPath, "\"v1\"");
        var (rc, stdout, err) = Cli("fetch", url);
        Assert.True(rc == 0, err);
        var image = Assert.Single(_store.Store.List());
        Assert.Equal("\"v1\"", image.ETag);

        // update: asked again with If-None-Match, answered 304: the stored image, nothing downloaded.
        (rc, stdout, err) = Cli("fetch", url);
        Assert.True(rc == 0, err);
        Assert.Equal(image.Id, stdout.Trim());
        Assert.Equal(1, _server.NotModified);
        Assert.DoesNotContain("downloading ACI", err);

        // A new ETag: the new image.
        var v2 = Aci("example.com/app", "v2");
        _server.Put(UrlPath, v2);
        _server.Put(UrlPath + ".asc", Signer.Sign(v2));
        _server.Cache(UrlPath, "\"v2\"", "max-age=3600");
        (rc, stdout, err) = Cli("fetch", url);
        Assert.True(rc == 0, err);
        var second = _store.Store.Resolve(stdout.Trim());
        Assert.NotEqual(image.Id, second.Id);
        Assert.Equal(3600, second.CacheMaxAge);

        // Within its max-age even update does not ask.
        int before = _server.Requests.Count;
        (rc, stdout, err) = Cli("fetch", url);
        Assert.True(rc == 0, err);
        Assert.Equal(second.Id, stdout.Trim());
        Assert.Equal(before, _server.Requests.Count);
    }

    [Fact]
    public void An_aci_url_without_a_signature_is_refused_before_the_image_is_downloaded()
    {
        Trust(Signer);
        _server.Put(UrlPath, _aci);
        FetchRefused("https://example.com" + UrlPath, ".aci.asc answered 404");
        Assert.Equal(0, _server.Count(UrlPath + " "));
    }

    [Fact]
    public void Plain_http_and_other_url_schemes_are_refused()
    {
        FetchRefused("http://example.com" + UrlPath, "plain-http URL; allow it with --insecure-options=http");
        FetchRefused("ftp://example.com" + UrlPath, "an unsupported URL scheme \"ftp\"");
    }

    [Fact]
    public void An_oci_layout_is_fetched_only_with_image_checks_off()
    {
        var layout = Support.Fixtures.BusyboxOci(_tmp);
        FetchRefused(layout, "signature verification for OCI and docker images is not supported");
        var (rc, _, err) = Cli("--insecure-options=image", "fetch", layout);
        Assert.True(rc == 0, err);
    }
}

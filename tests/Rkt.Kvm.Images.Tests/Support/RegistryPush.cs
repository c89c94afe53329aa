using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// Test images for the registry tests: small layer tars made by GNU tar, assembled into an OCI
/// layout (<see cref="OciBuilder"/>), and a minimal distribution-API pusher for what skopeo would
/// not write (a hand-made multi-platform index).
/// </summary>
public static class RegistryPush
{
    /// <summary>An OCI layout of <paramref name="layers"/> layers, each holding one file
    /// <c>/layerN.txt</c> of <paramref name="bytesPerLayer"/> random bytes.</summary>
    public static string Layout(TempDir tmp, string name, string tag, int layers = 2, int bytesPerLayer = 1000)
    {
        var tars = new List<string>();
        for (int i = 1; i <= layers; i++)
        {
            var root = tmp.Dir($"{name}-rootfs{i}");
            File.WriteAllBytes(Path.Join(root, $"layer{i}.txt"), RandomNumberGenerator.GetBytes(bytesPerLayer));
            var tar = tmp[$"{name}-layer{i}.tar"];
            Tool.Run("tar", null, "-C", root, "--owner=0", "--group=0", "-cf", tar, ".");
            tars.Add(tar);
        }
        return OciBuilder.Build(tmp[$"{name}-oci"], tag, [.. tars]);
    }

    /// <summary>Pushes an OCI layout's image with skopeo (plain http to 127.0.0.1).</summary>
    public static void Skopeo(string layout, string tag, string destination, string? creds = null)
    {
        var args = new List<string> { "copy", "--quiet", "--dest-tls-verify=false" };
        if (creds is not null) args.Add($"--dest-creds={creds}");
        args.AddRange([$"oci:{layout}:{tag}", $"docker://{destination}"]);
        Tool.Run("skopeo", null, [.. args]);
    }

    public static string Sha256(byte[] data) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(data));

    /// <summary>Uploads one blob (monolithic upload: POST, then PUT with the digest).</summary>
    public static async Task Blob(HttpClient http, string baseUrl, string repo, byte[] data)
    {
        var start = await http.PostAsync($"{baseUrl}/v2/{repo}/blobs/uploads/", null);
        start.EnsureSuccessStatusCode();
        var location = start.Headers.Location!;
        var url = location.IsAbsoluteUri ? location.ToString() : baseUrl + location;
        var put = await http.PutAsync($"{url}{(url.Contains('?') ? '&' : '?')}digest={Sha256(data)}", new ByteArrayContent(data));
        put.EnsureSuccessStatusCode();
    }

    public static async Task Manifest(HttpClient http, string baseUrl, string repo, string reference, byte[] manifest, string mediaType)
    {
        var content = new ByteArrayContent(manifest);
        content.Headers.ContentType = new MediaTypeHeaderValue(mediaType);
        var put = await http.PutAsync($"{baseUrl}/v2/{repo}/manifests/{reference}", content);
        if (!put.IsSuccessStatusCode) throw new InvalidOperationException($"pushing manifest {reference}: {(int)put.StatusCode} {await put.Content.ReadAsStringAsync()}");
    }

    /// <summary>Pushes every blob of an OCI layout and its one manifest by digest; returns the
    /// manifest's bytes and digest (for an index to name).</summary>
    public static async Task<(byte[] Manifest, string Digest)> LayoutImage(HttpClient http, string baseUrl, string repo, string layout)
    {
        foreach (var blob in Directory.EnumerateFiles(Path.Join(layout, "blobs", "sha256")))
            await Blob(http, baseUrl, repo, File.ReadAllBytes(blob));
        using var index = JsonDocument.Parse(File.ReadAllBytes(Path.Join(layout, "index.json")));
        var digest = index.RootElement.GetProperty("manifests")[0].GetProperty("digest").GetString()!;
        var manifest = File.ReadAllBytes(Path.Join(layout, "blobs", "sha256", digest["sha256:".Length..]));
        await Manifest(http, baseUrl, repo, digest, manifest, "application/vnd.oci.image.manifest.v1+json");
        return (manifest, digest);
    }

    public static byte[] Index(params (string Digest, int Size, string Arch)[] entries) =>
        Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new
        {
            schemaVersion = 2, mediaType = "application/vnd.oci.image.index.v1+json",
            manifests = entries.Select(e => new
            {
                mediaType = "application/vnd.oci.image.manifest.v1+json", digest = e.Digest, size = e.Size,
                platform = new { architecture = e.Arch, os = "linux" },
            }),
        }));
}

using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// Assembles an OCI image layout around layer tars made by GNU tar (for hand-made hostile
/// layers, which umoci would never write): blobs named by their real digests, a config with the
/// real diff_ids, a manifest and an index.
/// </summary>
public static class OciBuilder
{
    public static string Build(string layout, string tag, params string[] layerTars)
    {
        Directory.CreateDirectory(Path.Join(layout, "blobs", "sha256"));
        File.WriteAllText(Path.Join(layout, "oci-layout"), """{"imageLayoutVersion":"1.0.0"}""");
        var layers = new List<object>();
        var diffIds = new List<string>();
        foreach (var tar in layerTars)
        {
            var plain = File.ReadAllBytes(tar);
            diffIds.Add(Sha(plain));
            var gz = Path.Join(layout, "tmp.gz");
            Tool.Shell($"gzip -n -c '{tar}' > '{gz}'");
            var bytes = File.ReadAllBytes(gz);
            File.Delete(gz);
            layers.Add(new { mediaType = "application/vnd.oci.image.layer.v1.tar+gzip", digest = Put(layout, bytes), size = bytes.Length });
        }
        var config = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new
        {
            architecture = "amd64", os = "linux",
            config = new { Cmd = new[] { "/bin/sh" } },
            rootfs = new { type = "layers", diff_ids = diffIds },
        }));
        var manifest = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new
        {
            schemaVersion = 2, mediaType = "application/vnd.oci.image.manifest.v1+json",
            config = new { mediaType = "application/vnd.oci.image.config.v1+json", digest = Put(layout, config), size = config.Length },
            layers,
        }));
        var index = JsonSerializer.Serialize(new
        {
            schemaVersion = 2,
            manifests = new[]
            {
                new Dictionary<string, object>
                {
                    ["mediaType"] = "application/vnd.oci.image.manifest.v1+json", ["digest"] = Put(layout, manifest), ["size"] = manifest.Length,
                    ["annotations"] = new Dictionary<string, string> { ["org.opencontainers.image.ref.name"] = tag },
                },
            },
        });
        File.WriteAllText(Path.Join(layout, "index.json"), index);
        return layout;
    }

    private static string Sha(byte[] data) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(data));

    private static string Put(string layout, byte[] data)
    {
        var digest = Sha(data);
        File.WriteAllBytes(Path.Join(layout, "blobs", "sha256", digest["sha256:".Length..]), data);
        return digest;
    }
}

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// Fixture images built with the real tools from Debian's busybox-static: a rootfs with the
/// busybox binary, applet symlinks and hardlinks, odd modes and owners, and a FIFO; then an ACI
/// (actool build + validate), an OCI layout (umoci) and a docker archive (skopeo).
/// </summary>
public static class Fixtures
{
    public const string AciName = "example.com/busybox";

    /// <summary>Builds the busybox rootfs under <paramref name="rootfs"/>.</summary>
    public static void BusyboxRootfs(string rootfs)
    {
        var busybox = Tool.RequireBusybox();
        Directory.CreateDirectory(Path.Join(rootfs, "bin"));
        File.Copy(busybox, Path.Join(rootfs, "bin/busybox"));
        foreach (var applet in new[] { "sh", "ls", "cat", "echo" })
            File.CreateSymbolicLink(Path.Join(rootfs, "bin", applet), "busybox");
        Directory.CreateDirectory(Path.Join(rootfs, "sbin"));
        Tool.Run("ln", null, Path.Join(rootfs, "bin/busybox"), Path.Join(rootfs, "sbin/init")); // a hardlink
        File.CreateSymbolicLink(Path.Join(rootfs, "sbin/absolute-sh"), "/bin/sh");
        Directory.CreateDirectory(Path.Join(rootfs, "tmp"));
        Directory.CreateDirectory(Path.Join(rootfs, "etc"));
        File.WriteAllText(Path.Join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n");
        Directory.CreateDirectory(Path.Join(rootfs, "home/user"));
        File.WriteAllText(Path.Join(rootfs, "home/user/notes"), "owned by 1000\n");
        File.WriteAllText(Path.Join(rootfs, "etc/secret"), "0600\n");
        File.WriteAllText(Path.Join(rootfs, "bin/suid"), "#!/bin/sh\n");
        Tool.Run("mkfifo", null, Path.Join(rootfs, "tmp/fifo"));
        Tool.Run("chown", null, "-R", "1000:1000", Path.Join(rootfs, "home/user"));
        Tool.Run("chmod", null, "1777", Path.Join(rootfs, "tmp"));
        Tool.Run("chmod", null, "0600", Path.Join(rootfs, "etc/secret"));
        Tool.Run("chmod", null, "4755", Path.Join(rootfs, "bin/suid"));
        Tool.Run("chmod", null, "0555", Path.Join(rootfs, "sbin"));
        // A setgid directory: new subdirectories inherit its group and setgid bit unless told not to.
        var shared = Path.Join(rootfs, "srv/shared");
        Directory.CreateDirectory(shared);
        Tool.Run("chown", null, "0:50", shared);
        Tool.Run("chmod", null, "2775", shared);
        Directory.CreateDirectory(Path.Join(shared, "inherits"));
        Directory.CreateDirectory(Path.Join(shared, "plain"));
        Tool.Run("chmod", null, "g-s", Path.Join(shared, "plain"));
        Tool.Run("chown", null, "0:0", Path.Join(shared, "plain"));
        Tool.Run("touch", null, "-h", "-d", "2020-02-02 02:02:02Z", Path.Join(rootfs, "bin/sh"));
        Tool.Run("touch", null, "-d", "2021-03-04 05:06:07Z", Path.Join(rootfs, "etc/passwd"), Path.Join(rootfs, "etc"));
    }

    /// <summary>An ACI image layout (a <c>manifest</c> naming the image, an empty <c>rootfs/</c>)
    /// for tests to fill and tar themselves; returns its directory.</summary>
    public static string AciLayout(TempDir tmp, string dir, string name)
    {
        var layout = tmp.Dir(dir);
        File.WriteAllText(Path.Join(layout, "manifest"), $$"""{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{{name}}","labels":[]}""");
        Directory.CreateDirectory(Path.Join(layout, "rootfs"));
        return layout;
    }

    /// <summary>A busybox ACI made and validated by actool (gzip-compressed, as actool writes).</summary>
    public static string BusyboxAci(TempDir tmp, string file = "busybox.aci")
    {
        var layout = tmp.Dir("aci-layout");
        BusyboxRootfs(Path.Join(layout, "rootfs"));
        File.WriteAllText(Path.Join(layout, "manifest"), $$$"""
            {"acKind":"ImageManifest","acVersion":"0.8.11","name":"{{{AciName}}}",
             "labels":[{"name":"version","value":"1.36"},{"name":"arch","value":"amd64"},{"name":"os","value":"linux"}],
             "app":{"exec":["/bin/sh","-c","echo hello"],"user":"0","group":"0"}}
            """);
        var aci = tmp[file];
        Tool.Run("actool", null, "build", layout, aci);
        Tool.Run("actool", null, "validate", aci);
        return aci;
    }

    /// <summary>A busybox OCI layout made by umoci: one layer from the rootfs, then a config
    /// with entrypoint, cmd, env, working dir, user and a port. Returns the layout directory.</summary>
    public static string BusyboxOci(TempDir tmp, string tag = "1.36")
    {
        var rootfs = tmp.Dir("oci-rootfs");
        BusyboxRootfs(rootfs);
        var layout = tmp["oci"];
        Tool.Run("umoci", null, "init", "--layout", layout);
        Tool.Run("umoci", null, "new", "--image", $"{layout}:{tag}");
        Tool.Run("umoci", null, "insert", "--image", $"{layout}:{tag}", rootfs, "/");
        Tool.Run("umoci", null, "config", "--image", $"{layout}:{tag}", "--config.entrypoint", "/bin/sh",
            "--config.cmd", "-c", "--config.cmd", "echo hi", "--config.env", "GREETING=hello world",
            "--config.workingdir", "/home/user", "--config.user", "1000:1000", "--config.exposedports", "8080/tcp",
            "--config.volume", "/data");
        return layout;
    }

    /// <summary>The OCI image copied to a docker-archive by skopeo ("docker save" format).</summary>
    public static string DockerArchive(TempDir tmp, string layout, string tag, string repoTag = "example/busybox:1.36")
    {
        var file = tmp["docker.tar"];
        Tool.Run("skopeo", null, "--insecure-policy", "copy", "--quiet", $"oci:{layout}:{tag}", $"docker-archive:{file}:{repoTag}");
        return file;
    }

    /// <summary>The layer blobs of an OCI image, in order, as umoci's manifest lists them.</summary>
    public static IReadOnlyList<string> LayerBlobs(string layout, string tag)
    {
        var index = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Join(layout, "index.json")))!;
        var desc = index["manifests"]!.AsArray().First(m => (string?)m!["annotations"]?["org.opencontainers.image.ref.name"] == tag)!;
        string Blob(string digest) => Path.Join(layout, "blobs", "sha256", digest["sha256:".Length..]);
        var manifest = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Blob((string)desc["digest"]!)))!;
        return manifest["layers"]!.AsArray().Select(l => Blob((string)l!["digest"]!)).ToList();
    }
}

using System.Text;
using Rkt.Kvm.Stage1.Manifests;

namespace Rkt.Kvm.Stage1.Tests;

public sealed class ManifestTests
{
    private const string Id = "sha512-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    private static string Pod(string apps = "", string volumes = "null", string isolators = "null", bool mutable = false) => $$"""
        {"acKind":"PodManifest","acVersion":"1.30.0","apps":[{{apps}}],"volumes":{{volumes}},"isolators":{{isolators}},
         "annotations":[{"name":"coreos.com/rkt/stage1/mutable","value":"{{(mutable ? "true" : "false")}}"}],"ports":null}
        """;

    private static string App(string name, string extra = "", string appExtra = "") => $$"""
        {"name":"{{name}}","image":{"name":"example.com/busybox","id":"{{Id}}","labels":null},
         "app":{"exec":["/bin/sh","-c","echo hi"],"user":"0","group":"0","environment":[{"name":"A","value":"1"}]{{appExtra}}}{{extra}}}
        """;

    private static PodManifest Parse(string json) => PodManifest.Parse(Encoding.UTF8.GetBytes(json));

    [Fact]
    public void ParsesAppsVolumesMountsAndTheMutableAnnotation()
    {
        var pod = Parse(Pod(
            App("web", ""","mounts":[{"volume":"data","path":"/data"}],"readOnlyRootFS":true""",
                ""","workingDirectory":"/srv","supplementaryGIDs":[10,20],"mountPoints":[{"name":"data","path":"/data","readOnly":true}]""") + "," + App("side"),
            """[{"name":"data","kind":"host","source":"/srv/data","readOnly":false},{"name":"scratch","kind":"empty","mode":"0700","uid":1000,"gid":1000}]""",
            mutable: true));
        Assert.True(pod.Mutable);
        Assert.Equal(["web", "side"], pod.Apps.Select(a => a.Name));
        var web = pod.App("web")!;
        Assert.True(web.ReadOnlyRootFs);
        Assert.Equal("/srv", web.App!.WorkingDirectory);
        Assert.Equal([10u, 20u], web.App.SupplementaryGids);
        Assert.Equal(new AppMount("data", "/data"), web.Mounts.Single());
        Assert.Equal("1", web.App.Environment.Single(e => e.Key == "A").Value);
        Assert.Equal("0700", pod.Volumes[1].Mode);
        Assert.True(pod.Volumes[0].IsHost);
        Assert.Equal(Id, web.Image.Id);
    }

    [Fact]
    public void NullListsReadAsEmpty()
    {
        var pod = Parse("""{"acKind":"PodManifest","acVersion":"1.30.0","apps":null,"volumes":null,"isolators":null,"annotations":null}""");
        Assert.Empty(pod.Apps);
        Assert.False(pod.Mutable);
    }

    [Theory]
    [InlineData("not json", "not valid JSON")]
    [InlineData("[]", "not a JSON object")]
    [InlineData("""{"acKind":"ImageManifest","acVersion":"1"}""", "acKind")]
    [InlineData("""{"acKind":"PodManifest"}""", "acVersion")]
    [InlineData("""{"acKind":"PodManifest","acVersion":"1","apps":{}}""", "expected an array")]
    public void RefusesMalformedManifests(string json, string expected)
    {
        var e = Assert.Throws<Stage1Exception>(() => Parse(json));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void RefusesDuplicateAndInvalidNamesAndBadPaths()
    {
        Assert.Contains("duplicate app name \"a\"", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("a") + "," + App("a")))).Message);
        Assert.Contains("valid app name", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("../etc")))).Message);
        Assert.Contains("valid app name", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("Upper")))).Message);
        Assert.Contains("no pod volume", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("a", ""","mounts":[{"volume":"nope","path":"/x"}]""")))).Message);
        Assert.Contains("absolute path", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("a", "", ""","workingDirectory":"relative" """)))).Message);
        Assert.Contains("absolute path", Assert.Throws<Stage1Exception>(() => Parse(Pod(volumes: """[{"name":"v","kind":"host","source":"/a/../b"}]"""))).Message);
        Assert.Contains("host or empty", Assert.Throws<Stage1Exception>(() => Parse(Pod(volumes: """[{"name":"v","kind":"nfs"}]"""))).Message);
        Assert.Contains("duplicate volume", Assert.Throws<Stage1Exception>(() => Parse(Pod(volumes: """[{"name":"v","kind":"empty"},{"name":"v","kind":"empty"}]"""))).Message);
        Assert.Contains("octal", Assert.Throws<Stage1Exception>(() => Parse(Pod(volumes: """[{"name":"v","kind":"empty","mode":"0789"}]"""))).Message);
        Assert.Contains(".user: is required", Assert.Throws<Stage1Exception>(() => Parse(Pod("""{"name":"a","image":{"id":"x"},"app":{"exec":["/x"],"group":"0"}}"""))).Message);
    }

    [Fact]
    public void IsolatorsLastOneWins_AndTypedValuesAreChecked()
    {
        var pod = Parse(Pod(App("a", "", """
            ,"isolators":[{"name":"resource/memory","value":{"limit":"1G"}},{"name":"resource/memory","value":{"request":"1M","limit":"256Mi"}},
            {"name":"resource/cpu","value":{"limit":"500m"}},{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_NET_BIND_SERVICE"]}},
            {"name":"os/linux/no-new-privileges","value":true},{"name":"vendor/unknown","value":{"x":1}}]
            """)));
        var isolators = pod.App("a")!.App!.Isolators;
        Assert.Equal(256L << 20, isolators.MemoryLimitBytes);
        Assert.Equal(0.5m, isolators.CpuLimit);
        Assert.Equal(["CAP_NET_BIND_SERVICE"], isolators.RetainCapabilities);
        Assert.Null(isolators.RemoveCapabilities);
        Assert.True(isolators.NoNewPrivileges);
        Assert.Equal(6, isolators.All.Count); // unknown ones are kept

        Assert.Contains("resource quantity", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("a", "", ""","isolators":[{"name":"resource/memory","value":{"limit":"lots"}}]""")))).Message);
        Assert.Contains("positive", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("a", "", ""","isolators":[{"name":"resource/cpu","value":{"limit":"0"}}]""")))).Message);
        Assert.Contains("capability name", Assert.Throws<Stage1Exception>(() => Parse(Pod(App("a", "", ""","isolators":[{"name":"os/linux/capabilities-remove-set","value":{"set":["NET_ADMIN"]}}]""")))).Message);
    }

    [Theory]
    [InlineData("500m", 0.5)]
    [InlineData("2", 2)]
    [InlineData("1.5", 1.5)]
    [InlineData("256M", 256e6)]
    [InlineData("1Gi", 1073741824)]
    [InlineData("128Mi", 134217728)]
    [InlineData("1e3", 1000)]
    [InlineData("1k", 1000)]
    public void Quantities(string text, double expected)
    {
        Assert.True(Quantity.TryParse(text, out var value));
        Assert.Equal((decimal)expected, value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("1 Gi")]
    [InlineData("1gi")]
    [InlineData("Gi")]
    [InlineData("1e99")]
    [InlineData("99999999999999999999Ei")]
    public void BadQuantities(string text) => Assert.False(Quantity.TryParse(text, out _));
}

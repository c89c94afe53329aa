using System.Text;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;
using Rkt.Kvm.Stage1.Sizing;

namespace Rkt.Kvm.Stage1.Tests;

public sealed class PodFilesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rkt-kvm-pod-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void StatusFilesHaveTheFormatsStage0Reads()
    {
        var pod = new PodDirectory(_dir);
        pod.WritePid(4242);
        Assert.Equal("4242\n", File.ReadAllText(Path.Join(_dir, "pid")));
        Assert.Equal(4242, pod.ReadPid());
        pod.WriteExitStatus("web", 3);
        Assert.Equal("3", File.ReadAllText(Path.Join(_dir, "stage1/rootfs/rkt/status/web")));
        Assert.Equal(3, pod.ReadExitStatus("web"));
        Assert.Null(pod.ReadExitStatus("other"));
        Assert.False(pod.SupervisorReady);
        pod.MarkSupervisorReady();
        Assert.Equal("ready", new FileInfo(Path.Join(_dir, "stage1/rootfs/rkt/supervisor-status")).LinkTarget);
        pod.MarkSupervisorReady(); // idempotent
        Assert.True(pod.SupervisorReady);
        pod.WriteEnvironment("web", [new("PATH", "/bin"), new("GREETING", "a=b c")]);
        Assert.Equal("PATH=/bin\nGREETING=a=b c\n", File.ReadAllText(Path.Join(_dir, "stage1/rootfs/rkt/env/web")));
        Assert.Equal("a=b c", pod.ReadEnvironment("web")[1].Value);
        Assert.Throws<Stage1Exception>(() => pod.WriteEnvironment("web", [new("BAD", "line\nbreak")]));
        Assert.Throws<Stage1Exception>(() => pod.AppRootfs("../escape"));
        Assert.Equal(Path.Join(_dir, "stage1/rootfs/opt/stage2/web/rootfs"), pod.AppRootfs("web"));
    }

    private static PodManifest Pod(params (string? Memory, string? Cpu)[] apps)
    {
        static string Isolator(string name, string? limit) => limit is null ? "" : "{\"name\":\"" + name + "\",\"value\":{\"limit\":\"" + limit + "\"}}";
        var appJson = apps.Select((a, i) =>
            "{\"name\":\"a" + i + "\",\"image\":{\"id\":\"sha512-x\"},\"app\":{\"exec\":[\"/x\"],\"user\":\"0\",\"group\":\"0\",\"isolators\":[" +
            string.Join(',', new[] { Isolator("resource/memory", a.Memory), Isolator("resource/cpu", a.Cpu) }.Where(x => x.Length > 0)) + "]}}");
        return PodManifest.Parse(Encoding.UTF8.GetBytes("{\"acKind\":\"PodManifest\",\"acVersion\":\"1.30.0\",\"apps\":[" + string.Join(',', appJson) + "]}"));
    }

    [Fact]
    public void VmSizeFollowsTheDocumentedPolicy()
    {
        Assert.Equal(new VmSize(256, 1), VmSize.For(Pod((null, null)), hostCpus: 2));          // 128 + 128 -> min 256
        Assert.Equal(new VmSize(384, 1), VmSize.For(Pod((null, null), (null, null)), 2));       // 128 + 2 x 128
        Assert.Equal(new VmSize(1152, 2), VmSize.For(Pod(("1Gi", "1500m")), 4));                // 128 + 1024; ceil(1.5)
        Assert.Equal(new VmSize(256, 2), VmSize.For(Pod(("64Mi", "3"), ("1M", "2")), 2));        // capped at host CPUs
        Assert.Equal(new VmSize(256, 1), VmSize.For(Pod(("10M", "100m")), 16));
    }
}

using System.Diagnostics;
using Rkt.Kvm.Stage1.Runtime;

namespace Rkt.Kvm.Stage1.Tests;

public sealed class PodCgroupTests
{
    private const string Hybrid = """
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """;

    [Fact]
    public void A_hybrid_host_gives_v1_memory_and_pids_and_the_unified_hierarchy_at_this_process_own_cgroups()
    {
        var found = CgroupHierarchies.Find(Hybrid, "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/e11\n1:cpu:/\n0::/\n");
        Assert.Equal(
            [new(CgroupKind.Memory, "/sys/fs/cgroup/memory/process_api/e11"), new(CgroupKind.Pids, "/sys/fs/cgroup/pids"), new CgroupHierarchy(CgroupKind.Unified, "/sys/fs/cgroup/unified")],
            found);
    }

    [Fact]
    public void A_unified_only_host_and_a_container_view_of_its_subtree()
    {
        var found = CgroupHierarchies.Find("30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n", "0::/system.slice/rkt.service\n");
        Assert.Equal([new CgroupHierarchy(CgroupKind.Unified, "/sys/fs/cgroup/system.slice/rkt.service")], found);
        // A container whose mount shows only its own subtree (ROOT is that subtree).
        var inside = CgroupHierarchies.Find("30 23 0:27 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/kubepods/pod1/c\n");
        Assert.Equal([new CgroupHierarchy(CgroupKind.Unified, "/sys/fs/cgroup/c")], inside);
        Assert.Empty(CgroupHierarchies.Find("21 1 0:1 / / rw - ext4 /dev/vda rw\n", "0::/\n"));
    }

    [Fact]
    public void A_process_is_in_a_pods_cgroup_when_any_hierarchy_puts_it_there_or_below()
    {
        const string uuid = "6f1c5f7e-2c53-4d2b-9e0e-0d5a3b1c2f10";
        Assert.True(PodCgroup.Contains($"4:memory:/process_api/e11/rkt-kvm-{uuid}\n0::/\n", uuid));
        Assert.True(PodCgroup.Contains($"0::/rkt-kvm-{uuid}/child\n", uuid));
        Assert.False(PodCgroup.Contains($"0::/rkt-kvm-{uuid}x\n4:memory:/rkt-kvm-{uuid}-other\n", uuid));
        Assert.False(PodCgroup.Contains($"0::/\n1:name=rkt-kvm-{uuid}\n", uuid)); // a name, not a path
        Assert.False(PodCgroup.Contains("", uuid));
    }

    [SkippableFact]
    public void Gc_of_an_unreachable_process_kills_its_whole_pod_cgroup_found_from_the_host()
    {
        Skip.IfNot(Environment.UserName == "root" && Directory.Exists("/sys/fs/cgroup"), "needs root and a cgroup file system");
        string uuid = Guid.NewGuid().ToString();
        string record = Path.Join(Path.GetTempPath(), $"rkt-kvm-cgroups-{uuid}");
        var cgroup = PodCgroup.Create(uuid, 64, record);
        using var vmm = Process.Start("sleep", "600");
        using var plugin = Process.Start("sleep", "601");
        try
        {
            cgroup.Join(vmm.Id);
            cgroup.Join(plugin.Id);
            Assert.False(PodCgroup.KillAndRemoveOf(Environment.ProcessId, TimeSpan.FromSeconds(1)), "this test process is in no pod cgroup");
            Assert.True(PodCgroup.KillAndRemoveOf(vmm.Id, TimeSpan.FromSeconds(10)));
            Assert.True(vmm.WaitForExit(10_000) && plugin.WaitForExit(10_000), "a process of the pod cgroup was left running");
            foreach (var (_, dir) in cgroup.Directories) Assert.False(Directory.Exists(dir));
            Assert.False(PodCgroup.KillAndRemoveOf(vmm.Id, TimeSpan.FromSeconds(1)), "a process that is gone");
        }
        finally
        {
            foreach (var p in new[] { vmm, plugin }) if (!p.HasExited) { p.Kill(); p.WaitForExit(); }
            foreach (var (_, dir) in cgroup.Directories) if (Directory.Exists(dir)) try { Directory.Delete(dir); } catch (IOException) { }
            File.Delete(record);
        }
    }

    [SkippableFact]
    public void Run_joins_a_limited_cgroup_and_gc_kills_what_is_left_in_it_and_removes_it()
    {
        Skip.IfNot(Environment.UserName == "root" && Directory.Exists("/sys/fs/cgroup"), "needs root and a cgroup file system");
        string uuid = Guid.NewGuid().ToString();
        string record = Path.Join(Path.GetTempPath(), $"rkt-kvm-cgroups-{uuid}");
        var cgroup = PodCgroup.Create(uuid, 256, record);
        using var sleeper = Process.Start("sleep", "600");
        try
        {
            cgroup.Join(sleeper.Id);
            Assert.NotEmpty(cgroup.Directories);
            foreach (var (kind, dir) in cgroup.Directories)
            {
                Assert.Equal(PodCgroup.Prefix + uuid, Path.GetFileName(dir));
                Assert.Contains(sleeper.Id.ToString(), File.ReadAllLines(Path.Join(dir, "cgroup.procs")));
                if (kind == CgroupKind.Memory) Assert.Equal((256UL + PodCgroup.OverheadMiB) << 20, ulong.Parse(File.ReadAllText(Path.Join(dir, "memory.limit_in_bytes"))));
                if (kind == CgroupKind.Pids) Assert.Equal(PodCgroup.MaxTasks.ToString(), File.ReadAllText(Path.Join(dir, "pids.max")).Trim());
            }
            Assert.Contains(PodCgroup.Prefix + uuid, File.ReadAllText($"/proc/{sleeper.Id}/cgroup"));
            // A record that names anything but this pod's cgroups is not acted on.
            File.AppendAllText(record, $"memory /sys/fs/cgroup/memory\nunified /tmp/{PodCgroup.Prefix}{uuid}\nmemory {cgroup.Directories[0].Directory}/../../{PodCgroup.Prefix}other\n");
            PodCgroup.KillAndRemove(record, uuid, TimeSpan.FromSeconds(10));
            Assert.True(sleeper.WaitForExit(10_000), "gc left the pod's process running");
            foreach (var (_, dir) in cgroup.Directories) Assert.False(Directory.Exists(dir));
            Assert.False(File.Exists(record));
            PodCgroup.KillAndRemove(record, uuid, TimeSpan.FromSeconds(1)); // idempotent
        }
        finally
        {
            if (!sleeper.HasExited) sleeper.Kill();
            foreach (var (_, dir) in cgroup.Directories)
                if (Directory.Exists(dir)) { sleeper.WaitForExit(); try { Directory.Delete(dir); } catch (IOException) { } }
            File.Delete(record);
        }
    }
}

public sealed class PodVmmUserTests
{
    [Fact]
    public void Each_pod_gets_a_fixed_unprivileged_id_in_the_unused_range()
    {
        var a = PodVmmUser.For("6f1c5f7e-2c53-4d2b-9e0e-0d5a3b1c2f10");
        Assert.Equal(a, PodVmmUser.For("6F1C5F7E-2C53-4D2B-9E0E-0D5A3B1C2F10")); // the same pod, however it is spelled
        Assert.Equal(a.Uid, a.Gid);
        var ids = Enumerable.Range(0, 200).Select(_ => PodVmmUser.For(Guid.NewGuid().ToString()).Uid).ToList();
        Assert.All(ids.Append(a.Uid), id => Assert.InRange(id, PodVmmUser.First, PodVmmUser.First + PodVmmUser.Count - 1));
        Assert.True(ids.Distinct().Count() > 190, "pod ids barely differ");
    }
}


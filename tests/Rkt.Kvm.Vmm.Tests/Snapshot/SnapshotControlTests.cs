using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Rkt.Kvm.Vmm.Client.Control;
using Rkt.Kvm.Vmm.Control;
using Rkt.Kvm.Vmm.Snapshot;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>The control socket's snapshot op: checks the path, calls the VM's snapshot and answers with what was written, or one sentence why not.</summary>
public sealed class SnapshotControlTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly List<string> _calls = [];

    public void Dispose() => _dir.Dispose();

    private static ControlReply Ask(ControlCommands commands, string path) =>
        commands.Handle(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new Dictionary<string, string> { ["op"] = "snapshot", ["path"] = path })));

    private ControlCommands Commands(Func<string, SnapshotHeader> snapshot) =>
        new(null, Stopwatch.StartNew(), () => { }, (path, into) => { _calls.Add(into is null ? path : $"{path} (into a passed file)"); return snapshot(path); });

    private static SnapshotHeader Written(long memoryBytes) => new()
    {
        FormatVersion = SnapshotFile.FormatVersion,
        VmmBuild = "b",
        CreatedUtc = DateTime.UtcNow,
        Kernel = new SnapshotInput("/k", 1, "00"),
        MemoryMiB = 256,
        Cpus = 1,
        Cmdline = "",
        Vsock = true,
        GuestCid = 3,
        P9 = false,
        Nics = 0,
        StateLength = 100,
        Regions = [],
        MemoryBytesWritten = memoryBytes,
    };

    [Fact]
    public void A_vm_that_cannot_be_snapshotted_says_so()
    {
        var reply = Ask(new ControlCommands(null, Stopwatch.StartNew(), () => { }), _dir.File("vm.snap"));
        Assert.False(reply.Ok);
        Assert.Equal("This VM cannot be snapshotted.", reply.Error);
        Assert.Null(reply.Snapshot);
    }

    [Fact]
    public void A_snapshot_reports_its_path_and_the_ram_written()
    {
        string path = _dir.File("vm.snap");
        var reply = Ask(Commands(_ => Written(12_345_678)), path);
        Assert.True(reply.Ok, reply.Error);
        Assert.Null(reply.Error);
        Assert.Equal(path, reply.Snapshot!.Path);
        Assert.Equal(12_345_678, reply.Snapshot.MemoryBytes);
        Assert.True(reply.Snapshot.Milliseconds >= 0);
        Assert.Equal([path], _calls);
    }

    [Theory]
    [InlineData("vm.snap")]
    [InlineData("relative/vm.snap")]
    [InlineData("/")]
    public void A_path_that_is_not_absolute_in_a_directory_is_refused(string path)
    {
        var reply = Ask(Commands(_ => Written(0)), path);
        Assert.False(reply.Ok);
        Assert.Contains($"The snapshot path {path} is not an absolute path in an existing directory", reply.Error);
        Assert.Empty(_calls);
    }

    [Fact]
    public void A_path_in_a_missing_directory_is_refused()
    {
        string path = _dir.File("missing/vm.snap");
        var reply = Ask(Commands(_ => Written(0)), path);
        Assert.False(reply.Ok);
        Assert.Contains(path, reply.Error);
        Assert.Empty(_calls);
    }

    /// <summary>A descriptor as the control socket hands one over (the request owns it).</summary>
    private static Rkt.Kvm.Posix.FileDescriptor Descriptor(string path, FileMode mode)
    {
        var handle = File.OpenHandle(path, mode, FileAccess.ReadWrite);
        int fd = (int)handle.DangerousGetHandle();
        handle.SetHandleAsInvalid();
        return new Rkt.Kvm.Posix.FileDescriptor(fd);
    }

    [Fact]
    public void A_passed_file_is_written_into_whatever_its_path_and_must_be_empty()
    {
        string file = _dir.File("passed");
        using (var empty = Descriptor(file, FileMode.Create))
        {
            var reply = Commands(_ => Written(7)).Handle("{\"op\":\"snapshot\",\"path\":\"/not/there/vm.snap\",\"fd\":true}"u8, () => empty);
            Assert.True(reply.Ok, reply.Error);
            Assert.Equal(["/not/there/vm.snap (into a passed file)"], _calls);
        }
        File.WriteAllText(file, "old");
        using var full = Descriptor(file, FileMode.Open);
        var refused = Commands(_ => Written(7)).Handle("{\"op\":\"snapshot\",\"path\":\"/x/vm.snap\",\"fd\":true}"u8, () => full);
        Assert.Equal("The file passed for the snapshot is not empty.", refused.Error);
        Assert.Single(_calls);
    }

    [Fact]
    public void A_request_without_a_path_is_refused()
    {
        var reply = Commands(_ => Written(0)).Handle("{\"op\":\"snapshot\"}"u8);
        Assert.False(reply.Ok);
        Assert.Contains("path", reply.Error);
        Assert.Empty(_calls);
    }

    [Fact]
    public void A_snapshot_failure_is_answered_with_its_sentence()
    {
        var reply = Ask(Commands(_ => throw new SnapshotException("The VM cannot be snapshotted now: virtio slot 2: 9p requests are in flight.")), _dir.File("vm.snap"));
        Assert.False(reply.Ok);
        Assert.Equal("The VM cannot be snapshotted now: virtio slot 2: 9p requests are in flight.", reply.Error);
        Assert.Null(reply.Snapshot);
    }

    [Fact]
    public void A_write_failure_is_answered_with_its_sentence()
    {
        var reply = Ask(Commands(_ => throw new IOException("No space left on device")), _dir.File("vm.snap"));
        Assert.False(reply.Ok);
        Assert.Equal("No space left on device", reply.Error);
    }

    [Fact]
    public void The_reply_goes_over_the_wire_as_documented()
    {
        var reply = Ask(Commands(_ => Written(4096)), _dir.File("vm.snap"));
        var json = JsonSerializer.Serialize(reply, ControlJsonContext.Wire.ControlReply);
        Assert.StartsWith($"{{\"ok\":true,\"snapshot\":{{\"path\":\"{_dir.File("vm.snap")}\",\"memoryBytes\":4096,\"milliseconds\":", json);
        var back = JsonSerializer.Deserialize(json, ControlJsonContext.Wire.ControlReply)!;
        Assert.Equal((reply.Snapshot!.Path, reply.Snapshot.MemoryBytes), (back.Snapshot!.Path, back.Snapshot.MemoryBytes));
    }

    [Fact]
    public void Unknown_ops_list_snapshot()
    {
        var reply = Commands(_ => Written(0)).Handle("{\"op\":\"freeze\"}"u8);
        Assert.Contains("snapshot", reply.Error);
    }
}

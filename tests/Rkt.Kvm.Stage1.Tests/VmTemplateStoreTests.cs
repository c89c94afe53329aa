using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Rkt.Kvm.Stage1.Runtime;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>
/// The warm-pod template store of a data directory: what identifies a template (its spec and key),
/// where it lives, when it counts as finished, its lock, and what gc removes. No VM here: a
/// "snapshot" is a file with a few bytes in it.
/// </summary>
public sealed partial class VmTemplateStoreTests : IDisposable
{
    private const UnixFileMode Mode0700 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode Mode0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    private readonly string _tmp = Directory.CreateTempSubdirectory("rkt-kvm-templates-").FullName;
    private readonly string _data;
    private readonly VmTemplateStore _store;

    public VmTemplateStoreTests()
    {
        _data = Path.Join(_tmp, "data");
        _store = VmTemplateStore.ForPodsRoot(Path.Join(_data, "pods"));
    }

    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    [GeneratedRegex("^[0-9a-f]{16}$")]
    private static partial Regex KeyFormat();

    [GeneratedRegex("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")]
    private static partial Regex MacFormat();

    private const string TreeA = "sha512-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    private const string TreeB = "sha512-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    private static VmTemplateSpec Spec(string tree = TreeA, int memoryMiB = 512, int vcpus = 2, int nics = 1) => new(tree, memoryMiB, vcpus, nics);

    /// <summary>A template as a pod makes it: prepared, snapshot written, committed.</summary>
    private string Make(VmTemplateSpec spec)
    {
        _store.Prepare(spec);
        File.WriteAllText(_store.SnapshotOf(spec), "guest memory");
        _store.Commit(spec);
        return _store.DirectoryOf(spec);
    }

    /// <summary>A template directory named <paramref name="key"/> whose template.json is <paramref name="json"/>, with a snapshot.</summary>
    private string Garbage(string key, string json)
    {
        var dir = Directory.CreateDirectory(Path.Join(_store.Root, key)).FullName;
        File.WriteAllText(Path.Join(dir, "template.json"), json);
        File.WriteAllText(Path.Join(dir, "vm.snapshot"), "x");
        return dir;
    }

    /// <summary>The predicate gc passes: these tree IDs are in the tree store. Records what it was asked.</summary>
    private static Func<string, bool> Trees(List<string> asked, params string[] existing) => id => { asked.Add(id); return existing.Contains(id); };

    private static Func<string, bool> Trees(params string[] existing) => existing.Contains;

    // ---- VmTemplateSpec ----

    [Fact]
    public void Spec_Key_Is16LowercaseHex_AndStableForEqualSpecs()
    {
        var spec = Spec();
        Assert.Matches(KeyFormat(), spec.Key);
        Assert.Equal(spec.Key, new VmTemplateSpec(new string(TreeA.ToCharArray()), 512, 2, 1).Key);
        Assert.Equal(spec.Key, spec.Key);
        Assert.Equal(spec.Key, VmTemplateSpec.FromJson(JsonNode.Parse(spec.ToJson().ToJsonString()))!.Key);
    }

    [Fact]
    public void Spec_Key_DiffersWhenAnythingDiffers()
    {
        var spec = Spec();
        string[] keys =
        [
            spec.Key,
            (spec with { Stage1TreeId = TreeB }).Key,
            (spec with { Stage1TreeId = TreeA + "0" }).Key,
            (spec with { Stage1TreeId = TreeA[..^1] }).Key,
            (spec with { Stage1TreeId = TreeA.ToUpperInvariant() }).Key,
            (spec with { MemoryMiB = 1024 }).Key,
            (spec with { Vcpus = 3 }).Key,
            (spec with { Nics = 2 }).Key,
            (spec with { Nics = 0 }).Key,
            // Fields do not run into each other.
            new VmTemplateSpec("x", 12, 3, 4).Key,
            new VmTemplateSpec("x1", 2, 3, 4).Key,
            new VmTemplateSpec("x", 1, 23, 4).Key,
        ];
        Assert.All(keys, k => Assert.Matches(KeyFormat(), k));
        Assert.Equal(keys.Length, keys.Distinct().Count());
    }

    [Fact]
    public void Spec_ToJson_IsTheFourFields()
    {
        var json = Spec(memoryMiB: 2048, vcpus: 4, nics: 3).ToJson();
        Assert.Equal(["memoryMiB", "nics", "stage1TreeId", "vcpus"], json.Select(p => p.Key).Order(StringComparer.Ordinal));
        Assert.Equal(TreeA, (string?)json["stage1TreeId"]);
        Assert.Equal(2048, (int?)json["memoryMiB"]);
        Assert.Equal(4, (int?)json["vcpus"]);
        Assert.Equal(3, (int?)json["nics"]);
    }

    [Theory]
    [InlineData(TreeA)]
    [InlineData("deps-sha512-0123")]
    [InlineData("with \"quotes\", a \\ and ünïcödé\n")]
    public void Spec_ToJson_FromJson_RoundTrips(string tree)
    {
        var spec = Spec(tree, memoryMiB: 2048, vcpus: 4, nics: 3);
        var text = spec.ToJson().ToJsonString();
        var back = VmTemplateSpec.FromJson(JsonNode.Parse(text));
        Assert.NotNull(back);
        Assert.Equal(spec, back);
        Assert.Equal(spec.Key, back.Key);
        Assert.Equal(text, back.ToJson().ToJsonString());
    }

    [Theory]
    [InlineData("null")]
    [InlineData("[]")]
    [InlineData("42")]
    [InlineData("\"text\"")]
    [InlineData("{}")]
    [InlineData("""{"memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":null,"memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"","memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":7,"memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":true,"memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":{},"memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":["a"],"memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1treeid":"a","memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"vcpus":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":"512","vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512.5,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":99999999999,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"vcpus":null,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"vcpus":1,"nics":[]}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"vcpus":1,"nics":{}}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"vcpus":false,"nics":1}""")]
    public void Spec_FromJson_IsNullForGarbage(string json) => Assert.Null(VmTemplateSpec.FromJson(JsonNode.Parse(json)));

    [Fact]
    public void Spec_FromJson_IsNullForNullAndAValue()
    {
        Assert.Null(VmTemplateSpec.FromJson(null));
        Assert.Null(VmTemplateSpec.FromJson(JsonValue.Create(3)));
        Assert.Null(VmTemplateSpec.FromJson(JsonValue.Create(TreeA)));
    }

    /// <summary>A hand-edited or corrupted template.json with a duplicate member: System.Text.Json's
    /// JsonObject throws on it when first read, which FromJson must turn into null like other garbage.</summary>
    [Theory]
    [InlineData("""{"stage1TreeId":"a","stage1TreeId":"b","memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","stage1TreeId":"a","memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"memoryMiB":512,"vcpus":1,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"a","memoryMiB":512,"vcpus":1,"nics":1,"nics":2}""")]
    public void Spec_FromJson_IsNullForDuplicateMembers(string json) => Assert.Null(VmTemplateSpec.FromJson(JsonNode.Parse(json)));

    // ---- VmTemplateStore ----

    [Theory]
    [InlineData("pods")]
    [InlineData("pods/")]
    public void Store_ForPodsRoot_IsUnderTheDataDirectory(string pods)
    {
        var store = VmTemplateStore.ForPodsRoot(_data + "/" + pods);
        Assert.Equal(Path.Join(_data, "stage1-kvm", "templates"), store.Root);
        var spec = Spec();
        Assert.Equal(Path.Join(store.Root, spec.Key), store.DirectoryOf(spec));
        Assert.Equal(Path.Join(store.Root, spec.Key, "vm.snapshot"), store.SnapshotOf(spec));
    }

    [Fact]
    public void Store_Prepare_CreatesRootOnlyDirectories()
    {
        var spec = Spec();
        var dir = _store.Prepare(spec);
        Assert.Equal(_store.DirectoryOf(spec), dir);
        Assert.True(Directory.Exists(dir));
        Assert.Equal(Mode0700, File.GetUnixFileMode(dir));
        Assert.Equal(Mode0700, File.GetUnixFileMode(_store.Root));
        // Twice is fine (a pod retrying after a failed template).
        Assert.Equal(dir, _store.Prepare(spec));
    }

    [Fact]
    public void Store_Prepare_TightensAnExistingRoot()
    {
        Directory.CreateDirectory(_store.Root);
        File.SetUnixFileMode(_store.Root, (UnixFileMode)Convert.ToInt32("755", 8));
        _store.Prepare(Spec());
        Assert.Equal(Mode0700, File.GetUnixFileMode(_store.Root));
    }

    [Fact]
    public void Store_Find_IsNullUntilCommit()
    {
        var spec = Spec();
        Assert.Null(_store.Find(spec));
        _store.Prepare(spec);
        Assert.Null(_store.Find(spec));
        File.WriteAllText(_store.SnapshotOf(spec), "guest memory");
        Assert.Null(_store.Find(spec)); // only vm.snapshot: unfinished
        _store.Commit(spec);
        Assert.Equal(_store.SnapshotOf(spec), _store.Find(spec));
        Assert.Null(_store.Find(spec with { Vcpus = spec.Vcpus + 1 })); // another spec's template
    }

    [Fact]
    public void Store_Find_IsNullWithoutTheSnapshot()
    {
        var spec = Spec();
        _store.Prepare(spec);
        _store.Commit(spec);
        Assert.Null(_store.Find(spec));
    }

    [Fact]
    public void Store_Commit_WritesTheSpecRootOnly()
    {
        var spec = Spec(nics: 2);
        Make(spec);
        var json = Path.Join(_store.DirectoryOf(spec), "template.json");
        Assert.Equal(Mode0600, File.GetUnixFileMode(json));
        var back = VmTemplateSpec.FromJson(JsonNode.Parse(File.ReadAllText(json)));
        Assert.NotNull(back);
        Assert.Equal(spec.Key, back.Key);
        Assert.Equal(spec, back);
        Assert.Equal(["template.json", "vm.snapshot"], Directory.GetFileSystemEntries(_store.DirectoryOf(spec)).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Store_TemplateMac_IsLocallyAdministeredUnicast_DistinctPerNic()
    {
        var macs = Enumerable.Range(0, 16).Select(VmTemplateStore.TemplateMac).ToList();
        Assert.Equal("02:72:6b:74:00:00", macs[0]);
        Assert.Equal("02:72:6b:74:00:0a", macs[10]);
        foreach (var mac in macs)
        {
            Assert.Matches(MacFormat(), mac);
            var first = Convert.ToByte(mac[..2], 16);
            Assert.True((first & 0x02) != 0, $"{mac} is not locally administered");
            Assert.True((first & 0x01) == 0, $"{mac} is multicast");
        }
        Assert.Equal(macs.Count, macs.Distinct().Count());
    }

    [Fact]
    public void Store_TemplateMac_CoversNics0To255()
    {
        Assert.Equal("02:72:6b:74:00:ff", VmTemplateStore.TemplateMac(255));
        var macs = Enumerable.Range(0, 256).Select(VmTemplateStore.TemplateMac).ToList();
        Assert.All(macs, m => Assert.Matches(MacFormat(), m));
        Assert.Equal(256, macs.Distinct().Count());
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(256)]
    [InlineData(4096)]
    [InlineData(int.MinValue)]
    [InlineData(int.MaxValue)]
    public void Store_TemplateMac_ThrowsOutside0To255(int nic) =>
        Assert.Equal("nic", Assert.Throws<ArgumentOutOfRangeException>(() => VmTemplateStore.TemplateMac(nic)).ParamName);

    // ---- Lock ----

    [Fact]
    public void Lock_IsExclusive_InOneProcessToo()
    {
        using (var first = _store.Lock(TimeSpan.Zero))
        {
            Assert.NotNull(first);
            Assert.True(File.Exists(Path.Join(_store.Root, ".lock")));
            var started = Environment.TickCount64;
            Assert.Null(_store.Lock(TimeSpan.FromMilliseconds(600)));
            Assert.True(Environment.TickCount64 - started >= 500, "Lock gave up before its timeout");
            Assert.Null(_store.Lock(TimeSpan.Zero));
            // Another store object on the same directory: the same lock.
            Assert.Null(new VmTemplateStore(_store.Root).Lock(TimeSpan.Zero));
        }
        using var second = _store.Lock(TimeSpan.Zero);
        Assert.NotNull(second);
    }

    [Fact]
    public async Task Lock_WaitsForTheHolder()
    {
        var first = _store.Lock(TimeSpan.Zero);
        Assert.NotNull(first);
        var release = Task.Run(async () => { await Task.Delay(400); first.Dispose(); });
        using var second = _store.Lock(TimeSpan.FromSeconds(10));
        Assert.NotNull(second);
        await release;
    }

    [Fact]
    public void Lock_CreatesTheRootDirectoryRootOnly()
    {
        using var held = _store.Lock(TimeSpan.Zero);
        Assert.NotNull(held);
        Assert.Equal(Mode0700, File.GetUnixFileMode(_store.Root));
    }

    // ---- RemoveStale ----

    [Fact]
    public void RemoveStale_WithoutAStore_IsEmpty_AndCreatesNothing()
    {
        var asked = new List<string>();
        Assert.Empty(_store.RemoveStale(Trees(asked)));
        Assert.Empty(asked);
        Assert.False(Directory.Exists(_store.Root));
        Assert.False(Directory.Exists(Path.Join(_data, "stage1-kvm")));
    }

    [Fact]
    public void RemoveStale_OnAnEmptyStore_IsEmpty()
    {
        Directory.CreateDirectory(_store.Root);
        Assert.Empty(_store.RemoveStale(Trees(TreeA)));
        Assert.True(Directory.Exists(_store.Root));
    }

    [Fact]
    public void RemoveStale_KeepsTemplatesOfTreesThatExist_AndAsksAboutTheirTreeIds()
    {
        var a = Spec();
        var b = a with { MemoryMiB = 4096 };
        var c = Spec(TreeB, nics: 3);
        Make(a);
        Make(b);
        Make(c);
        var asked = new List<string>();
        Assert.Empty(_store.RemoveStale(Trees(asked, TreeA, TreeB)));
        Assert.Equal([TreeA, TreeA, TreeB], asked.Order(StringComparer.Ordinal));
        Assert.Equal(_store.SnapshotOf(a), _store.Find(a));
        Assert.Equal(_store.SnapshotOf(b), _store.Find(b));
        Assert.Equal(_store.SnapshotOf(c), _store.Find(c));
    }

    [Fact]
    public void RemoveStale_RemovesTemplatesOfTreesThatNoLongerExist()
    {
        var kept = Spec(TreeA);
        var gone = Spec(TreeB);
        var goneToo = Spec(TreeB, memoryMiB: 1024);
        Make(kept);
        Make(gone);
        Make(goneToo);
        Assert.Equal(new[] { gone.Key, goneToo.Key }.Order(StringComparer.Ordinal), _store.RemoveStale(Trees(TreeA)).Order(StringComparer.Ordinal));
        Assert.Equal(_store.SnapshotOf(kept), _store.Find(kept));
        Assert.False(Directory.Exists(_store.DirectoryOf(gone)));
        Assert.False(Directory.Exists(_store.DirectoryOf(goneToo)));
        // Its tree gone too: nothing left.
        Assert.Equal([kept.Key], _store.RemoveStale(Trees()));
        Assert.Empty(Directory.GetDirectories(_store.Root));
    }

    [Fact]
    public void RemoveStale_RemovesWhatNoPodCanUse_AndNothingElse()
    {
        var current = Spec();
        Make(current);
        // A pod died while making one: only the snapshot, or nothing at all.
        var unfinished = current with { Vcpus = 8 };
        _store.Prepare(unfinished);
        File.WriteAllText(_store.SnapshotOf(unfinished), "partial");
        var empty = current with { Vcpus = 9 };
        _store.Prepare(empty);
        // Its stage1 image is gone from the tree store.
        var orphan = Spec(TreeB);
        Make(orphan);
        // template.json that does not parse, is not a spec, or is not a file.
        Garbage("0123456789abcdef", "{ not json");
        Garbage("fedcba9876543210", "[1, 2]");
        Garbage("00000000000000ee", "");
        Garbage("00000000000000bb", "\u00ff\u00fe binary");
        Garbage("00000000000000de", new string('[', 1000) + new string(']', 1000)); // deeper than the reader allows
        var jsonDir = Directory.CreateDirectory(Path.Join(_store.Root, "00000000000000d1", "template.json")).FullName;
        // A spec without a tree ID, or with an empty or null one (whatever its directory is called).
        Garbage("00000000000000a1", """{"memoryMiB":512,"vcpus":2,"nics":1}""");
        Garbage("00000000000000a2", """{"stage1TreeId":"","memoryMiB":512,"vcpus":2,"nics":1}""");
        Garbage("00000000000000a3", """{"stage1TreeId":null,"memoryMiB":512,"vcpus":2,"nics":1}""");
        Garbage(new VmTemplateSpec("", 512, 2, 1).Key, """{"stage1TreeId":"","memoryMiB":512,"vcpus":2,"nics":1}""");
        // A duplicate member.
        Garbage("00000000000000dd", $$"""{"stage1TreeId":"{{TreeA}}","stage1TreeId":"{{TreeA}}","memoryMiB":512,"vcpus":2,"nics":1}""");
        // A current spec in a directory of another name, and one whose name differs only in case.
        var misnamed = Directory.CreateDirectory(Path.Join(_store.Root, "aaaaaaaaaaaaaaaa")).FullName;
        File.Copy(Path.Join(_store.DirectoryOf(current), "template.json"), Path.Join(misnamed, "template.json"));
        File.WriteAllText(Path.Join(misnamed, "vm.snapshot"), "x");
        var other = current with { Nics = 2 };
        Garbage(other.Key.ToUpperInvariant(), other.ToJson().ToJsonString());
        // Outside the store: a sibling of templates/ (a file and a directory), a file in the root,
        // a directory elsewhere and a symlink in the root pointing to it.
        var siblingDir = Directory.CreateDirectory(Path.Join(_data, "stage1-kvm", "other")).FullName;
        File.WriteAllText(Path.Join(siblingDir, "keep"), "keep");
        var siblingFile = Path.Join(_data, "stage1-kvm", "templates.bak");
        File.WriteAllText(siblingFile, "keep");
        var fileInRoot = Path.Join(_store.Root, "README");
        File.WriteAllText(fileInRoot, "keep");
        var elsewhere = Directory.CreateDirectory(Path.Join(_tmp, "elsewhere")).FullName;
        File.WriteAllText(Path.Join(elsewhere, "keep"), "keep");
        File.WriteAllText(Path.Join(elsewhere, "template.json"), "garbage");
        var link = Path.Join(_store.Root, "00000000000000cc");
        Directory.CreateSymbolicLink(link, elsewhere);

        var asked = new List<string>();
        var removed = _store.RemoveStale(Trees(asked, TreeA));

        string[] expected =
        [
            unfinished.Key, empty.Key, orphan.Key, "0123456789abcdef", "fedcba9876543210", "00000000000000ee", "00000000000000bb",
            "00000000000000de", "00000000000000d1", "00000000000000a1", "00000000000000a2", "00000000000000a3",
            new VmTemplateSpec("", 512, 2, 1).Key, "00000000000000dd", "aaaaaaaaaaaaaaaa", other.Key.ToUpperInvariant(),
        ];
        // The link is garbage too (its template.json is): unlinked, its target left alone.
        Assert.Equal(expected.Append("00000000000000cc").Order(StringComparer.Ordinal), removed.Order(StringComparer.Ordinal));
        Assert.False(Path.Exists(link));
        foreach (var key in expected) Assert.False(Directory.Exists(Path.Join(_store.Root, key)), $"{key} was kept");
        Assert.False(Directory.Exists(jsonDir));
        Assert.Equal(_store.SnapshotOf(current), _store.Find(current));
        Assert.Equal([current.Key], Directory.GetDirectories(_store.Root).Select(Path.GetFileName));
        // Nothing outside the store is touched.
        Assert.Equal("keep", File.ReadAllText(Path.Join(siblingDir, "keep")));
        Assert.Equal("keep", File.ReadAllText(siblingFile));
        Assert.Equal("keep", File.ReadAllText(fileInRoot));
        Assert.Equal("keep", File.ReadAllText(Path.Join(elsewhere, "keep")));
        Assert.Equal("garbage", File.ReadAllText(Path.Join(elsewhere, "template.json")));
        Assert.True(File.Exists(Path.Join(_store.Root, ".lock")));
        // The predicate is gc's: asked about well-formed specs' trees only, never about garbage.
        Assert.All(asked, id => Assert.Contains(id, new[] { TreeA, TreeB }));
        // Nothing left to remove.
        Assert.Empty(_store.RemoveStale(Trees(TreeA)));
    }

    [Fact]
    public void RemoveStale_RemovesNothing_WhileATemplateIsBeingMade()
    {
        var spec = Spec();
        _store.Prepare(spec); // unfinished: stale, unless someone is making it now
        var orphan = Spec(TreeB);
        Make(orphan); // its tree is gone
        Garbage("0123456789abcdef", "{ not json");
        var asked = new List<string>();
        using (var held = _store.Lock(TimeSpan.Zero))
        {
            Assert.NotNull(held);
            Assert.Empty(_store.RemoveStale(Trees(asked, TreeA)));
            Assert.Empty(asked);
            Assert.True(Directory.Exists(_store.DirectoryOf(spec)));
            Assert.Equal(_store.SnapshotOf(orphan), _store.Find(orphan));
            Assert.True(Directory.Exists(Path.Join(_store.Root, "0123456789abcdef")));
            // Another store object on the same directory: the same lock.
            Assert.Empty(new VmTemplateStore(_store.Root).RemoveStale(Trees(TreeA)));
            Assert.Equal(3, Directory.GetDirectories(_store.Root).Length);
        }
        Assert.Equal(new[] { spec.Key, orphan.Key, "0123456789abcdef" }.Order(StringComparer.Ordinal), _store.RemoveStale(Trees(TreeA)).Order(StringComparer.Ordinal));
        Assert.Empty(Directory.GetDirectories(_store.Root));
    }

    /// <summary>A template.json FromJson chokes on (a duplicate member) is stale like any other
    /// garbage: it must not make RemoveStale, and so gc, throw.</summary>
    [Theory]
    [InlineData("""{"stage1TreeId":"T","stage1TreeId":"T","memoryMiB":512,"vcpus":2,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"T","stage1TreeId":"U","memoryMiB":512,"vcpus":2,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"T","memoryMiB":512,"memoryMiB":512,"vcpus":2,"nics":1}""")]
    [InlineData("""{"stage1TreeId":"T","memoryMiB":512,"vcpus":2,"nics":1,"nics":1}""")]
    public void RemoveStale_RemovesATemplateWithADuplicateMember(string json)
    {
        var current = Spec(vcpus: 4);
        Make(current);
        // Under the key of the spec it would be, were it not for the duplicate.
        var key = new VmTemplateSpec(TreeA, 512, 2, 1).Key;
        var dup = Path.Join(_store.Root, key);
        Directory.CreateDirectory(dup);
        File.WriteAllText(Path.Join(dup, "template.json"), json.Replace("\"T\"", $"\"{TreeA}\"").Replace("\"U\"", $"\"{TreeB}\""));
        File.WriteAllText(Path.Join(dup, "vm.snapshot"), "x");
        Assert.Equal([key], _store.RemoveStale(Trees(TreeA, TreeB)));
        Assert.False(Directory.Exists(dup));
        Assert.Equal(_store.SnapshotOf(current), _store.Find(current));
    }

    [Fact]
    public void RemoveStale_RemovesAMisnamedTemplate_EvenOfATreeThatExists()
    {
        var spec = Spec();
        var dir = Directory.CreateDirectory(Path.Join(_store.Root, "0000000000000000")).FullName;
        File.WriteAllText(Path.Join(dir, "template.json"), spec.ToJson().ToJsonString());
        File.WriteAllText(Path.Join(dir, "vm.snapshot"), "x");
        Assert.Equal(["0000000000000000"], _store.RemoveStale(Trees(TreeA)));
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void RemoveStale_ReleasesTheLock()
    {
        Make(Spec());
        Make(Spec(TreeB));
        Assert.Single(_store.RemoveStale(Trees(TreeA)));
        using var held = _store.Lock(TimeSpan.Zero);
        Assert.NotNull(held);
    }

    // ---- rkt-kvm gc ----

    [Fact]
    public void Gc_RemovesTemplatesOfTreesNoLongerInTheTreeStore_AndKeepsCurrentOnes()
    {
        Directory.CreateDirectory(Path.Join(_data, "pods"));
        var env = new Dictionary<string, string> { ["RKT_KVM_RUNTIME_DIR"] = Directory.CreateDirectory(Path.Join(_tmp, "run")).FullName };
        // The current stage1 image's tree is rendered (<data>/tree/<id>); the old one's was removed.
        Directory.CreateDirectory(Path.Join(_data, "tree", TreeA, "rootfs"));
        var current = Spec(TreeA);
        Make(current);
        var currentBig = Spec(TreeA, memoryMiB: 4096, nics: 2);
        Make(currentBig);
        var stale = Spec(TreeB);
        Make(stale);
        var unfinished = current with { Nics = 4 };
        _store.Prepare(unfinished);

        // While a pod makes a template (the lock held by another process: this one), gc leaves the store alone.
        using (var held = _store.Lock(TimeSpan.Zero))
        {
            Assert.NotNull(held);
            var busy = RktKvm.Run(_data, env, "gc", "--grace-period=0s");
            Assert.True(busy.ExitCode == 0, busy.Stderr);
            Assert.DoesNotContain("Removed the stale VM template", busy.Stdout);
            Assert.True(Directory.Exists(_store.DirectoryOf(stale)));
            Assert.True(Directory.Exists(_store.DirectoryOf(unfinished)));
        }

        var gc = RktKvm.Run(_data, env, "gc", "--grace-period=0s");
        Assert.True(gc.ExitCode == 0, gc.Stderr);
        Assert.Contains($"Removed the stale VM template {stale.Key}", gc.Stdout);
        Assert.Contains($"Removed the stale VM template {unfinished.Key}", gc.Stdout);
        Assert.DoesNotContain(current.Key, gc.Stdout);
        Assert.DoesNotContain(currentBig.Key, gc.Stdout);
        Assert.False(Directory.Exists(_store.DirectoryOf(stale)));
        Assert.False(Directory.Exists(_store.DirectoryOf(unfinished)));
        Assert.Equal(_store.SnapshotOf(current), _store.Find(current));
        Assert.Equal(_store.SnapshotOf(currentBig), _store.Find(currentBig));
        Assert.True(Directory.Exists(Path.Join(_data, "tree", TreeA, "rootfs"))); // the tree store is not gc's templates'

        var again = RktKvm.Run(_data, env, "gc", "--grace-period=0s");
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.DoesNotContain("Removed the stale VM template", again.Stdout);

        // The tree removed (rkt-kvm image gc): its templates go with the next gc.
        Directory.Delete(Path.Join(_data, "tree", TreeA), recursive: true);
        var last = RktKvm.Run(_data, env, "gc", "--grace-period=0s");
        Assert.True(last.ExitCode == 0, last.Stderr);
        Assert.Contains($"Removed the stale VM template {current.Key}", last.Stdout);
        Assert.Contains($"Removed the stale VM template {currentBig.Key}", last.Stdout);
        Assert.Empty(Directory.GetDirectories(_store.Root));
    }

    [Fact]
    public void Gc_WithoutTemplates_CreatesNoStore()
    {
        Directory.CreateDirectory(Path.Join(_data, "pods"));
        var env = new Dictionary<string, string> { ["RKT_KVM_RUNTIME_DIR"] = Directory.CreateDirectory(Path.Join(_tmp, "run")).FullName };
        var gc = RktKvm.Run(_data, env, "gc", "--grace-period=0s");
        Assert.True(gc.ExitCode == 0, gc.Stderr);
        Assert.DoesNotContain("VM template", gc.Stdout);
        Assert.False(Directory.Exists(Path.Join(_data, "stage1-kvm", "templates")));
    }
}

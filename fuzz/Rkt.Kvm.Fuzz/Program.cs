using Rkt.Kvm.Fuzz;

// rkt-kvm's fuzzing harness (fuzz/README.md).
//   Rkt.Kvm.Fuzz list                          the targets and what each covers
//   Rkt.Kvm.Fuzz seed DIR                      writes each target's seed inputs to DIR/<target>/
//   Rkt.Kvm.Fuzz run TARGET FILE|DIR...        replays inputs, printing the first finding (exit 1)
//   Rkt.Kvm.Fuzz stability TARGET FILE|DIR     which coverage-map entries vary between runs of the same inputs
//   Rkt.Kvm.Fuzz TARGET                        under afl-fuzz: the SharpFuzz loop (input on stdin);
//                                              run with `dotnet Rkt.Kvm.Fuzz.dll`, not the apphost,
//                                              since SharpFuzz restarts its worker as `dotnet <command line>`

// Instrumented code (out/fuzz/bin) records edges through SharpFuzz.Common.Trace.SharedMem, which
// only the SharpFuzz loop points at afl-fuzz's map: until then (and in every other command) it
// gets a scratch map, so the instrumented build can list, seed and replay too.
unsafe { SharpFuzz.Common.Trace.SharedMem = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(1 << 16); }

return args switch
{
    ["list"] => List(),
    ["seed", var dir] => Seed(dir),
    ["run", var name, .. var paths] when paths.Length > 0 => Replay(name, paths),
    ["stability", var name, var file] => Stability(name, file),
    [var name] when FuzzTargets.Find(name) is { } target => Fuzz(target),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: Rkt.Kvm.Fuzz list | seed DIR | run TARGET FILE|DIR... | stability TARGET FILE|DIR | TARGET (under afl-fuzz)");
    Console.Error.WriteLine($"targets: {string.Join(", ", FuzzTargets.All.Select(t => t.Name))}");
    return 2;
}

static int List()
{
    foreach (var t in FuzzTargets.All) Console.WriteLine($"{t.Name,-14} {t.Covers}");
    return 0;
}

static int Seed(string dir)
{
    foreach (var t in FuzzTargets.All)
    {
        var targetDir = Path.Join(dir, t.Name);
        Directory.CreateDirectory(targetDir);
        foreach (var (name, data) in t.Seeds())
        {
            // A seed must pass its own target: a corpus that fails is no corpus.
            t.Run(data);
            File.WriteAllBytes(Path.Join(targetDir, name), data);
        }
        Console.WriteLine($"{t.Name}: {Directory.GetFiles(targetDir).Length} files, {Directory.GetFiles(targetDir).Sum(f => new FileInfo(f).Length)} bytes");
    }
    return 0;
}

static int Replay(string name, string[] paths)
{
    var target = FuzzTargets.Find(name);
    if (target is null) return Usage();
    var files = paths.SelectMany(p => Directory.Exists(p) ? InputsIn(p) : [p]).ToList();
    foreach (var file in files)
    {
        try
        {
            target.Run(File.ReadAllBytes(file));
        }
        catch (Exception e)
        {
            Console.WriteLine($"FINDING {name} {file}");
            Console.WriteLine(e);
            return 1;
        }
    }
    Console.WriteLine($"{name}: {files.Count} inputs, no finding");
    return 0;
}

/// <summary>
/// afl-fuzz's "stability" by hand: runs the inputs (a file, or every file of a folder, in turn)
/// three times over and reports the coverage-map entries an input did not hit the same (in
/// afl-fuzz's hit-count buckets) every time. With a
/// build instrumented with SHARPFUZZ_ENABLE_ON_BRANCH_CALLBACK=1, names the blocks involved.
/// </summary>
static unsafe int Stability(string name, string path)
{
    var target = FuzzTargets.Find(name);
    if (target is null) return Usage();
    var files = Directory.Exists(path) ? InputsIn(path).ToList() : [path];
    const int Passes = 3, MapSize = 1 << 16;
    var map = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(MapSize);
    SharpFuzz.Common.Trace.SharedMem = map;
    var seen = new HashSet<string>();
    SharpFuzz.Common.Trace.OnBranch = (_, block) => { lock (seen) seen.Add(block); };
    var maps = files.Select(_ => new List<byte[]>()).ToList();
    var blocks = files.Select(_ => new List<HashSet<string>>()).ToList();
    foreach (var f in files) Run(f); // the first runs pay for static initialization
    for (int pass = 0; pass < Passes; pass++)
        for (int i = 0; i < files.Count; i++)
        {
            new Span<byte>(map, MapSize).Clear();
            lock (seen) seen.Clear();
            Run(files[i]);
            maps[i].Add(new Span<byte>(map, MapSize).ToArray());
            lock (seen) blocks[i].Add([.. seen]);
        }
    var all = new HashSet<int>();
    var variable = new HashSet<int>();
    var sometimes = new SortedSet<string>(StringComparer.Ordinal);
    for (int i = 0; i < files.Count; i++)
    {
        for (int e = 0; e < MapSize; e++)
        {
            // As afl-fuzz compares runs: hit counts in buckets (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+).
            var buckets = maps[i].Select(m => Bucket(m[e])).Distinct().ToList();
            if (buckets.Any(b => b != 0)) all.Add(e);
            if (buckets.Count > 1) variable.Add(e);
        }
        var always = blocks[i].Aggregate((a, b) => [.. a.Intersect(b)]);
        sometimes.UnionWith(blocks[i].SelectMany(b => b).Except(always));
    }
    Console.WriteLine($"{name}: {files.Count} inputs, {all.Count} edges, {variable.Count} not hit every time ({100.0 * (all.Count - variable.Count) / Math.Max(1, all.Count):F1}% stable)");
    foreach (var block in sometimes) Console.WriteLine($"  sometimes: {block}");
    return 0;

    static int Bucket(byte hits) => hits switch { 0 => 0, 1 => 1, 2 => 2, 3 => 3, < 8 => 4, < 16 => 5, < 32 => 6, < 128 => 7, _ => 8 };

    void Run(string file)
    {
        try { target.Run(File.ReadAllBytes(file)); }
        catch (Exception e) { Console.WriteLine($"FINDING {file}: {e.GetType().Name}: {e.Message}"); }
    }
}

/// <summary>The inputs in a corpus or crash folder: not dotfiles (.gitkeep) nor afl-fuzz's README.txt.</summary>
static IEnumerable<string> InputsIn(string dir) =>
    Directory.GetFiles(dir).Where(f => !Path.GetFileName(f).StartsWith('.') && Path.GetFileName(f) != "README.txt").Order(StringComparer.Ordinal);

static int Fuzz(IFuzzTarget target)
{
    // Out of process: SharpFuzz's server stays up while its worker may die of a hang or a crash
    // that cannot be caught (stack overflow); afl-fuzz kills the worker on a timeout, not the server.
    SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
    {
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        target.Run(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
    });
    return 0;
}

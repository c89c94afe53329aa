using Rkt.Kvm.Fuzz;

namespace Rkt.Kvm.Fuzz.Tests;

/// <summary>
/// Every committed fuzz input, replayed through the same target class afl-fuzz drives: the seeds
/// in fuzz/corpus/ and the inputs that once found a bug in fuzz/crashes/ (kept as regression
/// tests). A target throws only for a finding, so each input must simply run.
/// </summary>
public sealed class CorpusTests
{
    private static readonly string Fuzz = Path.Join(RepositoryRoot(), "fuzz");

    public static TheoryData<string, string> Inputs()
    {
        var data = new TheoryData<string, string>();
        foreach (var target in FuzzTargets.All)
            foreach (var folder in new[] { "corpus", "crashes" })
            {
                var dir = Path.Join(Fuzz, folder, target.Name);
                if (!Directory.Exists(dir)) continue;
                foreach (var file in Directory.GetFiles(dir).Where(f => !Path.GetFileName(f).StartsWith('.')).Order(StringComparer.Ordinal))
                    data.Add(target.Name, Path.GetRelativePath(Fuzz, file));
            }
        return data;
    }

    [Theory]
    [MemberData(nameof(Inputs))]
    public void Input_runs_without_a_finding(string target, string file)
    {
        var t = FuzzTargets.Find(target)!;
        // One target at a time: targets keep per-process state (guest memory, a device, a scratch directory).
        lock (t) t.Run(File.ReadAllBytes(Path.Join(Fuzz, file)));
    }

    [Fact]
    public void Every_target_has_a_seed_corpus()
    {
        foreach (var target in FuzzTargets.All)
        {
            var dir = Path.Join(Fuzz, "corpus", target.Name);
            Assert.True(Directory.Exists(dir) && Directory.GetFiles(dir).Length > 0, $"fuzz/corpus/{target.Name}/ is missing or empty");
            Assert.True(Directory.Exists(Path.Join(Fuzz, "crashes", target.Name)), $"fuzz/crashes/{target.Name}/ is missing (keep a .gitkeep)");
        }
    }

    /// <summary>The seeds the harness writes (`Rkt.Kvm.Fuzz seed DIR`) pass their own target.</summary>
    [Fact]
    public void Generated_seeds_run_without_a_finding()
    {
        foreach (var target in FuzzTargets.All)
            lock (target)
                foreach (var (_, data) in target.Seeds()) target.Run(data);
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Join(dir.FullName, "Rkt.Kvm.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no Rkt.Kvm.sln above {AppContext.BaseDirectory}");
    }
}

using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>A store in a temp data dir, with the state checks the hostile-archive tests need.</summary>
public sealed class StoreHarness(TempDir tmp, Confinement.ExtractionSandbox? sandbox = null, string data = "data")
{
    public ImageStore Store { get; } = new(tmp[data]) { Sandbox = sandbox };

    public ImageRecord Import(string source, ImportOptions? options = null) =>
        new ImageImporter(Store).Import(source, options ?? new ImportOptions());

    public string Render(ImageRecord image, string target, ExportMode mode = ExportMode.Hardlink)
    {
        new TreeStore(Store).Export(image, target, mode, rootfsOnly: true);
        return target;
    }

    /// <summary>Every file under the store (blobs, manifests, trees), to show one is unchanged.</summary>
    public IReadOnlyList<string> Files() =>
        Directory.Exists(Store.DataDir)
            ? Directory.EnumerateFileSystemEntries(Store.DataDir, "*", SearchOption.AllDirectories)
                .Select(p => Path.GetRelativePath(Store.DataDir, p)).Where(p => p != "cas/lock").Order(StringComparer.Ordinal).ToList()
            : [];

    /// <summary>The store holds no image and no blob, manifest, tree or scratch file.</summary>
    public void AssertEmpty()
    {
        Assert.Empty(Store.List());
        var files = Files().Where(f => File.Exists(Path.Join(Store.DataDir, f)) && !f.EndsWith("index.json", StringComparison.Ordinal)).ToList();
        Assert.True(files.Count == 0, "the store holds files: " + string.Join(", ", files));
    }
}

using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Stage1;

namespace Rkt.Kvm.Stage0.Pods;

/// <summary>Which flag chose the stage1 image (rkt's <c>--stage1-{url,path,name,hash,from-dir}</c>), and its value.</summary>
public sealed record Stage1Choice(string Flag, string Value)
{
    public static readonly IReadOnlyList<string> Flags = ["stage1-url", "stage1-path", "stage1-name", "stage1-hash", "stage1-from-dir"];

    /// <summary>Records one of the flags; rkt's errors when a second one, or the same one again, is given.</summary>
    public static Stage1Choice With(Stage1Choice? earlier, string flag, string value) => earlier switch
    {
        null => new Stage1Choice(flag, value),
        { Flag: var f } when f == flag => throw new UsageException($"--{flag} already used"),
        _ => throw new UsageException($"flags --{flag} and --{earlier.Flag} are mutually exclusive"),
    };
}

/// <summary>
/// Finds the stage1 image for a new pod the way rkt's stage0 does (rkt/stage1hash.go) and returns
/// it from the image store, importing a file when needed:
/// <list type="bullet">
/// <item>with a flag, the value is read as rkt's image finder reads any image string, whichever
/// flag carried it: a <c>sha512-</c> ID (prefix) is looked up in the store; <c>file://</c> URLs and
/// paths (absolute; an existing file relative to the working directory; containing <c>./</c>;
/// ending in <c>.aci</c>) are imported; anything else is a name[:version] looked up in the store.
/// <c>--stage1-from-dir=F</c> is <c>F</c> in the stage1 images directory.</item>
/// <item>without one, <c>$RKT_KVM_STAGE1</c>, then the image installed beside rkt-kvm
/// (<c>../stage1/stage1-kvm.aci</c>, as <c>make</c> lays out <c>out/</c>), then
/// <c>stage1-kvm.aci</c> in rkt-kvm's own directory (rkt's fallback to its binary's directory).</item>
/// </list>
/// Unlike rkt, the default is not first looked up in the store by name and version: a stage1
/// rebuilt with an unchanged version would be shadowed by the old one. Import is content-addressed,
/// so importing the same file again finds the same image.
/// </summary>
public sealed class Stage1Locator(ImageStore images)
{
    public const string EnvironmentVariable = "RKT_KVM_STAGE1";
    public const string DefaultFileName = "stage1-kvm.aci";

    /// <summary>Where <c>--stage1-from-dir</c> looks: the directory of the default stage1 image.</summary>
    public static string ImagesDirectory => Path.GetFullPath(Path.Join(AppContext.BaseDirectory, "..", "stage1"));

    public ImageRecord Locate(Stage1Choice? choice)
    {
        if (choice is null) return Import(DefaultPath());
        if (choice.Flag == "stage1-from-dir")
        {
            if (choice.Value.Contains('/')) throw new UsageException($"--stage1-from-dir={choice.Value}: give a file name in {ImagesDirectory}");
            return Import(Path.Join(ImagesDirectory, choice.Value));
        }
        var value = choice.Value;
        if (value.StartsWith("sha512-", StringComparison.Ordinal)) return FromStore(value, choice);
        if (Uri.TryCreate(value, UriKind.Absolute, out var uri) && value.Contains("://", StringComparison.Ordinal))
        {
            return uri.Scheme switch
            {
                "file" => Import(uri.LocalPath),
                "http" or "https" or "docker" => throw new Stage1Exception(
                    $"--{choice.Flag}={value}: fetching a stage1 image from a {uri.Scheme} URL is not supported yet; download it and give --stage1-path"),
                _ => FromStore(value, choice),
            };
        }
        return IsPath(value) ? Import(Path.GetFullPath(value)) : FromStore(value, choice);
    }

    /// <summary>rkt's <c>guessAppcOrPath</c>: what a string without a scheme names.</summary>
    public static bool IsPath(string value) =>
        Path.IsPathRooted(value) || File.Exists(value)
        || (!value.Contains(':') && (value.Contains("./", StringComparison.Ordinal) || value.EndsWith(".aci", StringComparison.Ordinal)));

    private static string DefaultPath()
    {
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } fromEnv)
            return File.Exists(fromEnv) ? fromEnv : throw new Stage1Exception($"stage1 image {fromEnv} (${EnvironmentVariable}) does not exist");
        var installed = Path.Join(ImagesDirectory, DefaultFileName);
        var besideBinary = Path.Join(AppContext.BaseDirectory, DefaultFileName);
        return File.Exists(installed) ? installed : File.Exists(besideBinary) ? besideBinary
            : throw new Stage1Exception($"stage1 image {installed} does not exist (build it with `make stage1`, or give --stage1-path)");
    }

    private ImageRecord FromStore(string reference, Stage1Choice choice)
    {
        try { return images.Resolve(reference); }
        catch (ImageException e)
        {
            throw new Stage1Exception($"--{choice.Flag}={choice.Value}: {e.Message} (import it first; fetching stage1 images from the network is not supported yet)", e);
        }
    }

    private ImageRecord Import(string path)
    {
        if (!File.Exists(path)) throw new Stage1Exception($"stage1 image {path} does not exist");
        try { return new ImageImporter(images).Import(path, new ImportOptions(null, null)); }
        catch (ImageException e) { throw new Stage1Exception($"stage1 image {path}: {e.Message}", e); }
    }
}

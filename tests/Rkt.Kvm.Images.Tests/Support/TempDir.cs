namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>A scratch directory per test, removed afterwards; the image store lives in it too
/// (never /var/lib/rkt-kvm).</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = Directory.CreateTempSubdirectory("rkt-kvm-images-test-").FullName;
    }

    public string Path { get; }

    public string this[string rel] => System.IO.Path.Join(Path, rel);

    public string Dir(string rel) => Directory.CreateDirectory(this[rel]).FullName;

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>Base of the tests that need a scratch directory with an image store in it; both go
/// when the test ends.</summary>
public abstract class StoreTest : IDisposable
{
    protected readonly TempDir _tmp = new();
    protected readonly StoreHarness _store;

    protected StoreTest() => _store = new StoreHarness(_tmp);

    public void Dispose() => _tmp.Dispose();
}

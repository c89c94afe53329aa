using System.Reflection;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>
/// The project references are the layering (docs/ARCHITECTURE.md, "Projects, and who may reference
/// whom"); these tests catch a reference added against it and then used.
/// </summary>
public class LayeringTests
{
    private static string?[] References(Assembly assembly) =>
        assembly.GetReferencedAssemblies().Select(a => a.Name).Where(n => n?.StartsWith("Rkt.Kvm", StringComparison.Ordinal) == true).ToArray();

    [Fact]
    public void DevicesReachNeitherTheKvmLayerNorBootNorMachine()
    {
        var refs = References(typeof(Rkt.Kvm.Vmm.Devices.Bus).Assembly);
        Assert.Equal("Rkt.Kvm.Vmm.Devices", typeof(Rkt.Kvm.Vmm.Devices.Bus).Assembly.GetName().Name);
        Assert.All(refs, r => Assert.True(r is "Rkt.Kvm.Posix" or "Rkt.Kvm.Vmm.Client", $"the devices reference {r}"));
    }

    [Fact]
    public void ThePosixLayerReferencesNoneOfOurs() =>
        Assert.Empty(References(typeof(Rkt.Kvm.Posix.CString).Assembly));

    [Fact]
    public void TheVmmContractReferencesOnlyThePosixLayer() =>
        Assert.All(References(typeof(Rkt.Kvm.Vmm.Client.VmmCommandLine).Assembly), r => Assert.Equal("Rkt.Kvm.Posix", r));
}

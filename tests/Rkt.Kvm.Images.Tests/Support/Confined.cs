using Rkt.Kvm.Images.Confinement;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>The confined extraction as rkt-kvm runs it: the build's rkt-kvm.dll re-executed under the dotnet host
/// (a test host is not rkt-kvm, so <see cref="ExtractionSandbox.ForThisProcess"/> gives it none).</summary>
public static class Confined
{
    public static string DotnetHost =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host
        : (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Join(d, "dotnet")).FirstOrDefault(File.Exists)
          ?? throw new InvalidOperationException("dotnet is not on PATH");

    public static ExtractionSandbox Sandbox(ExtractionContract.TestHook hook = ExtractionContract.TestHook.None, Action<string, int>? onHook = null) =>
        new(DotnetHost, [CliProcess.Dll]) { TestHook = hook, OnHook = onHook };
}

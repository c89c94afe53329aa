// Host-side Linux only: modes, owners, device nodes and flock have no Windows meaning.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// The targets drive Linux-only code (guest memory mappings, Unix sockets, tar modes and owners).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

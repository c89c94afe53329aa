// stage1 drives /dev/kvm, flock and Unix sockets: Linux only.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

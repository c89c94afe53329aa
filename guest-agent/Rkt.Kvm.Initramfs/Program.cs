namespace Rkt.Kvm.Initramfs;

/// <summary>`rkt-kvm-mkinitramfs --spec FILE -o OUT [--gzip]`: builds an initramfs from a gen_init_cpio-style spec.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        string? spec = null, output = null;
        bool gzip = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--spec" when i + 1 < args.Length: spec = args[++i]; break;
                case "-o" or "--output" when i + 1 < args.Length: output = args[++i]; break;
                case "--gzip": gzip = true; break;
                default:
                    Console.Error.WriteLine($"rkt-kvm-mkinitramfs: unexpected argument '{args[i]}'. Usage: rkt-kvm-mkinitramfs --spec FILE -o OUT [--gzip]");
                    return 2;
            }
        }
        if (spec is null || output is null)
        {
            Console.Error.WriteLine("rkt-kvm-mkinitramfs: usage: rkt-kvm-mkinitramfs --spec FILE -o OUT [--gzip]");
            return 2;
        }
        string temp = output + ".tmp";
        try
        {
            var entries = InitramfsSpec.Parse(File.ReadAllText(spec), Path.GetDirectoryName(Path.GetFullPath(spec))!);
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write))
                InitramfsBuilder.Write(entries, stream, gzip);
            File.Move(temp, output, overwrite: true);
            return 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or ArgumentException)
        {
            File.Delete(temp);
            Console.Error.WriteLine($"rkt-kvm-mkinitramfs: {e.Message}");
            return 1;
        }
    }
}

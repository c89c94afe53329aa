using System.Text;

namespace Rkt.Kvm.Vmm.Boot;

/// <summary>
/// The kernel command line the VMM owns: its own options first (console, reboot, host-specific
/// ones), the user's extra text last, so a user option overrides an earlier one of ours.
/// </summary>
public sealed class KernelCommandLine
{
    private readonly List<string> _parts = [];

    public KernelCommandLine Add(string? options)
    {
        if (string.IsNullOrWhiteSpace(options)) return this;
        if (options.Contains('\0') || options.Contains('\n'))
            throw new BootException("The kernel command line may not contain NUL or newline characters.");
        _parts.Add(options.Trim());
        return this;
    }

    public override string ToString() => string.Join(' ', _parts);

    /// <summary>The NUL-terminated ASCII bytes, checked against the kernel's limit (<paramref name="maxLength"/> excludes the NUL).</summary>
    public byte[] ToBytes(uint maxLength)
    {
        string text = ToString();
        if (text.Any(c => c > 0x7E || c < 0x20))
            throw new BootException("The kernel command line must be printable ASCII.");
        if ((uint)text.Length > maxLength)
            throw new BootException($"The kernel command line is {text.Length} bytes long; this kernel accepts at most {maxLength}.");
        return Encoding.ASCII.GetBytes(text + "\0");
    }
}

namespace Rkt.Kvm.Vmm.Client;

/// <summary><c>--pvm</c>: whether the VMM adds the guest options a PVM host needs.</summary>
public enum PvmMode
{
    /// <summary>Detect a PVM host and add its guest options only there.</summary>
    Auto,
    On,
    Off,
}

/// <summary><c>--console</c>: where the guest console goes besides <c>--console-log</c>.</summary>
public enum VmmConsole
{
    Stdout,
    None,
}

/// <summary><c>--kvm-eventfds</c>: which KVM eventfds carry virtio signalling where the VMM offers them.</summary>
public enum KvmEventFds
{
    /// <summary>ioeventfd for queue notifies and irqfd for interrupts.</summary>
    On,
    /// <summary>Neither: notifies exit to a vCPU thread, interrupts go by KVM_IRQ_LINE (for measuring).</summary>
    Off,
    Ioeventfd,
    Irqfd,
}

/// <summary>A host directory the guest can mount over virtio-9p (aname = <see cref="Name"/>); <c>--9p-export NAME=PATH[,ro]</c>.</summary>
public sealed record P9ExportSpec(string Name, string Path, bool ReadOnly)
{
    /// <summary>"NAME=PATH" or "NAME=PATH,ro" (a path may itself contain commas; only a trailing ",ro" or ",rw" is an option).</summary>
    public static P9ExportSpec Parse(string text)
    {
        int eq = text.IndexOf('=');
        if (eq <= 0 || eq == text.Length - 1) throw new ArgumentException($"--9p-export must be NAME=PATH[,ro], not '{text}'.");
        string name = text[..eq], path = text[(eq + 1)..];
        bool readOnly = false;
        if (path.EndsWith(",ro", StringComparison.Ordinal)) { readOnly = true; path = path[..^3]; }
        else if (path.EndsWith(",rw", StringComparison.Ordinal)) path = path[..^3];
        return new P9ExportSpec(name, path, readOnly);
    }

    /// <summary>The text <see cref="Parse"/> reads back: a writable path that itself ends in ",ro" or ",rw" gets an explicit ",rw".</summary>
    public string ToArgument() =>
        ReadOnly ? $"{Name}={Path},ro"
        : Path.EndsWith(",ro", StringComparison.Ordinal) || Path.EndsWith(",rw", StringComparison.Ordinal) ? $"{Name}={Path},rw"
        : $"{Name}={Path}";
}

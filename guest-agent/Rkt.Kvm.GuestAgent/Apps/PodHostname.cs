using System.Text;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// Sets the hostname of the pod's UTS namespace (pod-init's) after pod-init exists. pod-init is made
/// before the agent reports ready (so a template already holds it, and a pod does not pay for a
/// helper's spawn and its namespaces at its first app), while the hostname only arrives with
/// ConfigurePod. setns(CLONE_NEWUTS) changes only the calling thread, so a throwaway thread joins
/// the namespace, sets the name and ends: no other thread of the agent leaves the VM's namespace, and
/// it costs a few syscalls instead of another helper process.
/// </summary>
internal static class PodHostname
{
    public static unsafe void Set(int podInitPid, string hostname)
    {
        string? error = null;
        var thread = new Thread(() =>
        {
            int fd = Libc.open($"/proc/{podInitPid}/ns/uts", Libc.O_RDONLY | Libc.O_CLOEXEC);
            if (fd < 0) { error = $"open the pod's UTS namespace: {Libc.LastError()}"; return; }
            try
            {
                if (Libc.setns(fd, Libc.CLONE_NEWUTS) != 0) { error = $"setns: {Libc.LastError()}"; return; }
                byte[] name = Encoding.ASCII.GetBytes(hostname);
                fixed (byte* p = name)
                    if (Libc.sethostname(p, name.Length) != 0) error = $"sethostname: {Libc.LastError()}";
            }
            finally { Libc.close(fd); }
        }, maxStackSize: 64 * 1024) { Name = "pod-hostname", IsBackground = true };
        thread.Start();
        thread.Join();
        if (error is not null) throw new IOException($"Setting the pod's hostname failed: {error}.");
    }
}

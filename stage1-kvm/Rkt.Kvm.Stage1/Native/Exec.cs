using System.Runtime.InteropServices;

namespace Rkt.Kvm.Stage1.Native;

/// <summary>execve(2): how rkt's stage0 enters stage1 run (the run entrypoint replaces the
/// stage0 process, so its exit status is the command's). The other runtime threads vanish with
/// the old image; nothing after a successful call runs.</summary>
public static class Exec
{
    public static void Execve(string program, string[] argv, string?[] environment)
    {
        string?[] terminatedArgv = [.. argv, null];
        Libc.execve(program, terminatedArgv, environment);
        int errno = Marshal.GetLastPInvokeError();
        throw new Stage1Exception($"cannot execute {program}: {Marshal.GetPInvokeErrorMessage(errno)}");
    }
}

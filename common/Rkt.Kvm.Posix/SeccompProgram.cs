using System.Runtime.InteropServices;

namespace Rkt.Kvm.Posix;

/// <summary>One classic-BPF instruction (<c>struct sock_filter</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct BpfInstruction(ushort Code, byte JumpTrue, byte JumpFalse, uint K);

/// <summary>A system call allowed only when one argument's low 32 bits are one of <see cref="Values"/>
/// (ioctl requests and socket families are ints to the kernel: the high bits do not count).</summary>
public sealed record ArgumentRule(int Syscall, int Argument, IReadOnlyList<uint> Values);

/// <summary>
/// A system call that gets <see cref="Action"/> before any other test of the filter: always, or
/// (with <see cref="Argument"/>) only when that argument has any of <see cref="AnyOfBits"/> set
/// (clone with a namespace flag). How an allow-list refuses some uses of a call it allows, and how
/// a call fails with an errno of its own (clone3's ENOSYS) in a filter whose other refusals differ.
/// </summary>
public sealed record CallRefusal(int Syscall, uint Action, int Argument = -1, uint AnyOfBits = 0);

/// <summary>
/// Assembles seccomp filters (the VMM's allow-lists, the image extraction's deny-list) and installs
/// them. An allow-list filter: anything not from x86-64 (or from the x32 ABI) is killed;
/// a syscall in the list is allowed, one with an <see cref="ArgumentRule"/> only with those argument
/// values; everything else gets the default action. Each test jumps at most a block's length, so
/// the program has no long jumps (cBPF jumps reach 255 instructions). The kernel's per-syscall
/// action cache makes the unconditionally allowed syscalls cost nothing after the first call.
/// </summary>
public static unsafe partial class SeccompProgram
{
    public const uint AuditArchX86_64 = 0xC000003E;
    public const uint X32SyscallBit = 0x40000000;
    public const uint RetKillProcess = 0x80000000, RetLog = 0x7ffc0000, RetAllow = 0x7fff0000;
    /// <summary>SECCOMP_RET_ERRNO: the call fails with the errno in the low 16 bits (OR it in).</summary>
    public const uint RetErrno = 0x00050000;
    // BPF opcodes: ld word at absolute offset, jump if equal / greater or equal (immediate), return.
    private const ushort LdAbsW = 0x20, JeqK = 0x15, JgeK = 0x35, JsetK = 0x45, RetK = 0x06;
    // struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
    private const uint NrOffset = 0, ArchOffset = 4, ArgsOffset = 16;
    public const int MaxInstructions = 4096; // BPF_MAXINSNS

    public static BpfInstruction[] Build(IEnumerable<int> allowed, IEnumerable<ArgumentRule> rules, uint defaultAction, IEnumerable<CallRefusal>? refusals = null)
    {
        var program = Prologue();
        AddRefusals(program, refusals ?? []);
        var ruled = AddRules(program, rules, defaultAction);
        foreach (int nr in allowed.Where(n => ruled.All(r => r.Syscall != n)).Distinct())
        {
            program.Add(new(JeqK, 0, 1, (uint)nr));
            program.Add(new(RetK, 0, 0, RetAllow));
        }
        program.Add(new(RetK, 0, 0, defaultAction));
        return Finish(program);
    }

    /// <summary>Each rule's block: its syscall with one of the argument values is allowed, with any other gets <paramref name="otherwise"/>.</summary>
    private static List<ArgumentRule> AddRules(List<BpfInstruction> program, IEnumerable<ArgumentRule> rules, uint otherwise)
    {
        var ruled = rules.ToList();
        if (ruled.GroupBy(r => r.Syscall).Any(g => g.Count() > 1)) throw new ArgumentException("One argument rule per system call.");
        foreach (var rule in ruled)
            AddArgumentBlock(program, rule.Syscall, rule.Argument, [.. rule.Values.Select(v => (JeqK, v, RetAllow))], otherwise);
        return ruled;
    }

    /// <summary>
    /// The one shape every argument test has: when the call is <paramref name="syscall"/>, its
    /// argument's low 32 bits (little-endian: the low half first; ints to the kernel) go through
    /// <paramref name="matches"/> in order, each a jeq (one value) or jset (any of some bits) whose
    /// match returns its action; no match returns <paramref name="otherwise"/>, or, without one,
    /// goes on to the rest of the filter with the call's number reloaded. Any other call skips the block.
    /// </summary>
    private static void AddArgumentBlock(List<BpfInstruction> program, int syscall, int argument,
        IReadOnlyList<(ushort Test, uint Value, uint Action)> matches, uint? otherwise)
    {
        if (argument is < 0 or > 5) throw new ArgumentOutOfRangeException(nameof(argument), "A system call has arguments 0 to 5.");
        // [jeq nr, else past the block] [ld arg] ([test v] [ret action])* [ret otherwise]? [ld nr]
        int block = 1 + 2 * matches.Count + (otherwise is null ? 0 : 1) + 1;
        if (block > 255) throw new ArgumentException($"Too many values for system call {syscall}.");
        program.Add(new(JeqK, 0, (byte)block, (uint)syscall));
        program.Add(new(LdAbsW, 0, 0, ArgsOffset + 8 * (uint)argument));
        foreach (var (test, value, action) in matches)
        {
            program.Add(new(test, 0, 1, value));
            program.Add(new(RetK, 0, 0, action));
        }
        if (otherwise is { } other) program.Add(new(RetK, 0, 0, other));
        program.Add(new(LdAbsW, 0, 0, NrOffset));
    }

    /// <summary>
    /// A deny-list filter: anything not from x86-64 (or from the x32 ABI), every call in
    /// <paramref name="denied"/>, a call with an <see cref="ArgumentRule"/> (<paramref name="rules"/>)
    /// with any other argument value, and a call with one of the values in <paramref name="deniedValues"/>
    /// get <paramref name="denyAction"/>; everything else is allowed.
    /// </summary>
    public static BpfInstruction[] BuildDenyList(IEnumerable<int> denied, uint denyAction, IEnumerable<ArgumentRule>? rules = null,
        IEnumerable<ArgumentRule>? deniedValues = null, IEnumerable<CallRefusal>? refusals = null)
    {
        var program = Prologue();
        AddRefusals(program, refusals ?? []);
        AddRules(program, rules ?? [], denyAction);
        // Calls that are allowed but for a few argument values (an ioctl request): those values get the deny action.
        foreach (var rule in deniedValues ?? [])
            AddArgumentBlock(program, rule.Syscall, rule.Argument, [.. rule.Values.Select(v => (JeqK, v, denyAction))], otherwise: null);
        foreach (int nr in denied.Distinct().Order())
        {
            program.Add(new(JeqK, 0, 1, (uint)nr));
            program.Add(new(RetK, 0, 0, denyAction));
        }
        program.Add(new(RetK, 0, 0, RetAllow));
        return Finish(program);
    }

    /// <summary>Each refusal's block, first after the prologue: its call (with one of the bits set in the argument) gets its action.</summary>
    private static void AddRefusals(List<BpfInstruction> program, IEnumerable<CallRefusal> refusals)
    {
        foreach (var r in refusals)
        {
            if (r.Argument < 0)
            {
                program.Add(new(JeqK, 0, 1, (uint)r.Syscall));
                program.Add(new(RetK, 0, 0, r.Action));
            }
            else if (r.AnyOfBits == 0) throw new ArgumentException($"A refusal of system call {r.Syscall} by argument needs some bits to test.");
            else AddArgumentBlock(program, r.Syscall, r.Argument, [(JsetK, r.AnyOfBits, r.Action)], otherwise: null); // clone's flags are an int
        }
    }

    /// <summary>Every filter starts so: anything not from x86-64, or from the x32 ABI, is killed; the syscall number is loaded.</summary>
    private static List<BpfInstruction> Prologue() =>
    [
        new(LdAbsW, 0, 0, ArchOffset),
        new(JeqK, 1, 0, AuditArchX86_64),
        new(RetK, 0, 0, RetKillProcess),
        new(LdAbsW, 0, 0, NrOffset),
        new(JgeK, 0, 1, X32SyscallBit),
        new(RetK, 0, 0, RetKillProcess),
    ];

    private static BpfInstruction[] Finish(List<BpfInstruction> program) =>
        program.Count <= MaxInstructions ? [.. program]
        : throw new ArgumentException($"The filter has {program.Count} instructions; the kernel takes at most {MaxInstructions}.");

    public const uint SetModeFilter = 1, FilterFlagTsync = 1;
    private const long SYS_seccomp = 317;

    [StructLayout(LayoutKind.Sequential)]
    private struct SockFprog
    {
        public ushort Length;
        public BpfInstruction* Filter;
    }

    [LibraryImport("libc", SetLastError = true)] private static partial long syscall(long number, nuint arg1, nuint arg2, void* arg3);

    /// <summary>
    /// seccomp(SECCOMP_SET_MODE_FILTER, <paramref name="flags"/>): the kernel's answer (with TSYNC a
    /// positive result is the id of a thread that could not take the filter); a negative one leaves
    /// its errno as the P/Invoke last error.
    /// </summary>
    public static long Install(BpfInstruction[] program, uint flags)
    {
        fixed (BpfInstruction* filter = program)
        {
            var fprog = new SockFprog { Length = (ushort)program.Length, Filter = filter };
            return syscall(SYS_seccomp, SetModeFilter, flags, &fprog);
        }
    }

    /// <summary>Runs <paramref name="program"/> the way the kernel does, for one call (tests).</summary>
    public static uint Evaluate(IReadOnlyList<BpfInstruction> program, int nr, ulong[] args, uint arch = AuditArchX86_64)
    {
        uint a = 0;
        for (int pc = 0; pc < program.Count; pc++)
        {
            var i = program[pc];
            switch (i.Code)
            {
                case LdAbsW:
                    a = i.K switch
                    {
                        NrOffset => (uint)nr,
                        ArchOffset => arch,
                        >= ArgsOffset and < ArgsOffset + 48 when (i.K - ArgsOffset) % 8 == 0 => (uint)args[(i.K - ArgsOffset) / 8],
                        _ => throw new InvalidOperationException($"load from offset {i.K}"),
                    };
                    break;
                case JeqK: pc += a == i.K ? i.JumpTrue : i.JumpFalse; break;
                case JgeK: pc += a >= i.K ? i.JumpTrue : i.JumpFalse; break;
                case JsetK: pc += (a & i.K) != 0 ? i.JumpTrue : i.JumpFalse; break;
                case RetK: return i.K;
                default: throw new InvalidOperationException($"opcode {i.Code:x}");
            }
        }
        throw new InvalidOperationException("The program ran off its end.");
    }
}

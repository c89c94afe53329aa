using System.Reflection;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Tmds.Linux;

namespace Rkt.Kvm.Vmm.Tests.NineP;

/// <summary>HostFs keeps its x86-64 values as constants (the server matches on them); they must equal Tmds.LibC's.</summary>
public sealed class HostFsConstantsTests
{
    /// <summary>Names Tmds.LibC does not have (each is explained where HostFs declares it).</summary>
    private static readonly HashSet<string> NotInLibC = ["S_IRWXUGO", "PathMax"];

    [Fact]
    public void Every_HostFs_constant_equals_Tmds_LibC()
    {
        var checkedNames = new List<string>();
        foreach (var field in typeof(HostFs).GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static).Where(f => f.IsLiteral))
        {
            if (NotInLibC.Contains(field.Name)) continue;
            var libc = typeof(LibC).GetProperty(field.Name, BindingFlags.Public | BindingFlags.Static);
            Assert.True(libc is not null, $"Tmds.LibC has no {field.Name}: name it in NotInLibC and say why at its declaration");
            Assert.True(AsLong(field.GetValue(null)!) == AsLong(libc.GetValue(null)!), $"HostFs.{field.Name} = {field.GetValue(null)}, Tmds.LibC's is {libc.GetValue(null)}");
            checkedNames.Add(field.Name);
        }
        Assert.Contains("O_PATH", checkedNames);
        Assert.Contains("S_ISGID", checkedNames);
        Assert.Contains("F_OFD_SETLK", checkedNames);
        Assert.Contains("ENODATA", checkedNames);
    }

    [Fact]
    public void Safe_modes_drop_setuid_everywhere_and_setgid_on_files()
    {
        Assert.Equal(0x3FFu /* 01777 */, P9Checks.SafeMode(0xFFF /* 07777 */, directory: false));
        Assert.Equal(0x7FFu /* 03777 */, P9Checks.SafeMode(0xFFF, directory: true));
        Assert.Equal(0x1EDu /* 0755 */, P9Checks.SafeMode(HostFs.S_IFREG | 0x9ED /* 04755 */, directory: false));
    }

    /// <summary>Tmds.LibC's values are ints, longs or its own wrapper structs (explicitly convertible).</summary>
    private static long AsLong(object value)
    {
        if (value is IConvertible) return Convert.ToInt64(value);
        var op = value.GetType().GetMethods(BindingFlags.Public | BindingFlags.Static)
            .FirstOrDefault(m => m.Name is "op_Explicit" or "op_Implicit" && m.ReturnType.IsPrimitive && m.GetParameters() is [var p] && p.ParameterType == value.GetType());
        if (op is not null) return Convert.ToInt64(op.Invoke(null, [value]));
        throw new InvalidOperationException($"cannot compare a {value.GetType()}");
    }
}

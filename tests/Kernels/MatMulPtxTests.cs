using System.Reflection;
using BitDeltaNative.Kernels;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// What the decode GEMV needs to get near memory bandwidth, checked on the PTX that ILGPU emits for
/// SM_90 (compiled offline, no GPU): 16-byte loads of W and x, several W loads issued before the first
/// is used, and no local memory (the per-row accumulators must stay in registers).
/// </summary>
public class MatMulPtxTests
{
    static string PtxOf(string kernel) =>
        Ptx.Compile(typeof(MatMul).GetMethod(kernel, BindingFlags.Static | BindingFlags.NonPublic)!);

    [Fact]
    public void GemvKernel_fast_path_emits_16_byte_loads()
    {
        var ptx = PtxOf("GemvKernel");
        Assert.Contains("ld.global.v4.b32", ptx);
    }

    [Fact]
    public void GemvKernel_keeps_several_loads_in_flight()
    {
        // The f16/bf16 loop is the first vector code in the kernel: its unrolled body must issue the
        // 4 W loads before the first conversion uses one.
        var lines = PtxOf("GemvKernel").Split('\n');
        int firstUse = Array.FindIndex(lines, l => l.Contains("cvt.f32.f16", StringComparison.Ordinal));
        Assert.True(firstUse > 0, "no cvt.f32.f16 in the GEMV");
        int loads = lines.Take(firstUse).Count(l => l.Contains("ld.global.v4", StringComparison.Ordinal));
        Assert.True(loads >= 4, $"{loads} 16-byte loads before the first use");
    }

    [Theory]
    [InlineData("GemvKernel")]
    [InlineData("GemmKernel")]
    public void MatMulKernel_uses_no_local_memory(string kernel)
    {
        var ptx = PtxOf(kernel);
        Assert.DoesNotContain("ld.local", ptx);
        Assert.DoesNotContain("st.local", ptx);
        Assert.DoesNotContain(".local", ptx);
    }
}

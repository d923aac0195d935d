using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The half-operand GEMM (GemmHalf.cs) beyond its audit case "gemm half": the PTX it must hold (cp.async staging,
/// ldmatrix fragments, one kind of mma a kernel), fixed shapes that cross every edge at once (rows and outputs one past a
/// 128 tile, more K steps than ring stages with a partial last step), and its refusals.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class GemmHalfTests
{
    static string PtxOf(string name) =>
        Ptx.Compile(typeof(GemmHalf).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!);

    [Theory]
    [InlineData("F16Kernel", "f16.f16", "bf16.bf16")]
    [InlineData("Bf16Kernel", "bf16.bf16", ".f16.f16")]
    [InlineData("F16WideKernel", "f16.f16", "bf16.bf16")]
    [InlineData("Bf16WideKernel", "bf16.bf16", ".f16.f16")]
    [InlineData("F16DeepKernel", "f16.f16", "bf16.bf16")]
    public void Ptx_stages_with_cp_async_and_feeds_fragments_to_one_kind_of_mma(string kernel, string has, string hasNot)
    {
        var ptx = PtxOf(kernel);
        Assert.Contains("cp.async.cg.shared.global", ptx);
        Assert.Contains(kernel.Contains("Deep") ? "cp.async.wait_group 2" : "cp.async.wait_group 1", ptx);
        // no shuffles anywhere: their presence left ptxas keeping every inline-PTX operand in local memory (bench/NOTES.md)
        Assert.DoesNotContain("shfl", ptx);
        Assert.Contains($"mma.sync.aligned.m16n8k16.row.col.f32.{has}.f32", ptx);
        Assert.DoesNotContain($"f32{hasNot}.f32", ptx);
        // 4 row tiles × 8 (or 4) output tiles a 16-wide step; fragments: 16 words of x, 16 (or 8) of W
        bool wide = kernel.Contains("Wide") || kernel.Contains("Deep");
        Assert.True(ptx.Split("mma.sync").Length - 1 >= (wide ? 32 : 16), "fewer products in the step than the warp's tiles");
        Assert.True(ptx.Split("ld.shared").Length - 1 >= (wide ? 32 : 24), "fewer fragment loads in the step than the warp's tiles");
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Ragged_tiles_and_more_steps_than_stages_match_the_twin(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(31);
        int rows = 129, inDim = 104, outDim = 130;   // 4 steps of 32 (the last one 8 wide) through a ring of 3
        foreach (var (wide, deep) in new[] { (true, false), (false, false), (true, true) })
        foreach (var dt in new[] { DType.F16, DType.BF16 })
            foreach (bool accumulate in new[] { false, true })
            {
                GemmHalf.Wide = wide;
                GemmHalf.Deep = deep;
                var x = Check.Rounded(Check.Values(rng, rows * inDim, 2f), dt);
                var w = Check.Rounded(Check.Values(rng, outDim * inDim), dt);
                var want = Check.Values(rng, rows * outDim, 3f);
                using var tx = Tensor.From(x, [rows, inDim], dev, dt);
                using var tw = Tensor.From(w, [outDim, inDim], dev, dt);
                using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
                if (!accumulate) Array.Clear(want);
                try { GemmHalf.Run(tx, tw, ty, accumulate); }
                finally { GemmHalf.Wide = true; GemmHalf.Deep = false; }
                MatMul.Twin(x, w, want, rows, inDim, outDim, accumulate);
                double err = Check.RelativeError(ty.ToFloatArray(), want);
                Assert.True(err <= Check.F32Bound, $"{dt}{(accumulate ? " +=" : "")}{(wide ? "" : " narrow")}{(deep ? " deep" : "")}: relative error {err:E2}");
            }
    }

    [Fact]
    public void Refuses_mixed_types_and_rows_that_are_not_16_byte_multiples()
    {
        var dev = Device.IlgpuCpu();
        using var x16 = Tensor.From(new float[2 * 8], [2, 8], dev, DType.F16);
        using var wb = Tensor.From(new float[3 * 8], [3, 8], dev, DType.BF16);
        using var y = Tensor.Empty([2, 3], DType.F32, dev);
        Assert.Contains("BF16", Assert.Throws<ArgumentException>(() => GemmHalf.Run(x16, wb, y)).Message);
        using var x12 = Tensor.From(new float[2 * 12], [2, 12], dev, DType.F16);
        using var w12 = Tensor.From(new float[3 * 12], [3, 12], dev, DType.F16);
        Assert.Contains("multiple of 8", Assert.Throws<ArgumentException>(() => GemmHalf.Run(x12, w12, y)).Message);
        using var xf = Tensor.From(new float[2 * 8], [2, 8], dev);
        Assert.Contains("F16 or BF16", Assert.Throws<ArgumentException>(() => GemmHalf.Run(xf, wb, y)).Message);
    }
}

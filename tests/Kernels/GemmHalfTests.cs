using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The half-operand GEMM (GemmHalf.cs) beyond its audit case "gemm half": the PTX it must hold (staging through
/// registers not cp.async, ldmatrix fragments, one kind of mma a kernel), fixed shapes that cross every edge at once (rows and outputs one past a
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
    public void Ptx_stages_through_registers_and_feeds_ldmatrix_fragments_to_one_kind_of_mma(string kernel, string has, string hasNot)
    {
        var ptx = PtxOf(kernel);
        // staged through registers: with cp.async in a kernel ptxas keeps every inline-PTX operand in local memory
        // (bench/NOTES.md), so it must not creep back in
        Assert.DoesNotContain("cp.async", ptx);
        Assert.Contains("ld.global.v4", ptx);
        Assert.Contains("st.shared.v4", ptx);
        Assert.Contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16", ptx);
        Assert.Contains($"mma.sync.aligned.m16n8k16.row.col.f32.{has}.f32", ptx);
        Assert.DoesNotContain($"f32{hasNot}.f32", ptx);
        // 4 row tiles × 8 (or 4) output tiles a 16-wide step; fragments: 4 of x, 4 (or 2) of W
        bool wide = kernel.Contains("Wide");
        Assert.True(ptx.Split("mma.sync").Length - 1 >= (wide ? 32 : 16), "fewer products in the step than the warp's tiles");
        Assert.True(ptx.Split("ldmatrix").Length - 1 >= (wide ? 8 : 6), "fewer fragment loads in the step than the warp's tiles");
    }

    /// <summary>The cp.async form (GemmHalf.Async): as ILGPU makes it, every inline-PTX operand goes through a local
    /// depot (what ptxas then keeps in memory); after <see cref="PtxPasses"/> none is left, and the kernel still holds its
    /// copies, their groups, the fragment loads and every product.</summary>
    [Theory]
    [InlineData("F16AsyncKernel", "f16.f16", "bf16.bf16")]
    [InlineData("Bf16AsyncKernel", "bf16.bf16", ".f16.f16")]
    [InlineData("F16AsyncWideKernel", "f16.f16", "bf16.bf16")]
    public void Async_ptx_has_its_copies_and_no_local_memory_after_the_pass(string kernel, string has, string hasNot)
    {
        var m = typeof(GemmHalf).GetMethod(kernel, BindingFlags.Static | BindingFlags.NonPublic)!;
        string raw = Ptx.CompileKernel(m, passes: false).PTXAssembly, ptx = Ptx.CompileKernel(m).PTXAssembly;
        Assert.Contains("st.local", raw);
        Assert.DoesNotContain("st.local", ptx);
        Assert.DoesNotContain("ld.local", ptx);
        Assert.DoesNotContain("__local_depot", ptx);
        Assert.Contains("cp.async.cg.shared.global", ptx);
        Assert.Contains("cp.async.commit_group", ptx);
        Assert.Contains("cp.async.wait_group 1", ptx);
        Assert.Contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16", ptx);
        Assert.Contains($"mma.sync.aligned.m16n8k16.row.col.f32.{has}.f32", ptx);
        Assert.DoesNotContain($"f32{hasNot}.f32", ptx);
        int Count(string text, string what) => text.Split(what).Length - 1;
        Assert.Equal(Count(raw, "mma.sync"), Count(ptx, "mma.sync"));
        Assert.Equal(Count(raw, "cp.async"), Count(ptx, "cp.async"));
        Assert.True(Count(ptx, "mma.sync") >= 16, "fewer products in the step than the warp's tiles");
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Ragged_tiles_and_several_steps_match_the_twin(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(31);
        int rows = 129, inDim = 104, outDim = 130;   // 4 steps of 32 (the last one 8 wide) through 2 (or 3) stages
        foreach (var (wide, async) in new[] { (true, false), (false, false), (false, true), (true, true) })
        foreach (var dt in new[] { DType.F16, DType.BF16 })
            foreach (bool accumulate in new[] { false, true })
            {
                double err = AgainstTwin(dev, rng, rows, inDim, outDim, dt, accumulate, (x, w, y) => GemmHalf.Run(x, w, y, accumulate, async, wide));
                Assert.True(err <= Check.F32Bound, $"{dt}{(accumulate ? " +=" : "")}{(wide ? " wide" : "")}{(async ? " cp.async" : " staged")}: relative error {err:E2}");
            }
    }

    /// <summary>A half GEMM <paramref name="run"/> (x, W, y) over random operands the half type holds, y from a poisoned start
    /// or random values to add to, against the f64 twin: the relative error. Shared with GemmWgmmaTests.</summary>
    internal static double AgainstTwin(Device dev, Random rng, int rows, int inDim, int outDim, DType dt, bool accumulate, Action<Tensor, Tensor, Tensor> run)
    {
        var x = Check.Rounded(Check.Values(rng, rows * inDim, 2f), dt);
        var w = Check.Rounded(Check.Values(rng, outDim * inDim), dt);
        var want = Check.Values(rng, rows * outDim, 3f);
        using var tx = Tensor.From(x, [rows, inDim], dev, dt);
        using var tw = Tensor.From(w, [outDim, inDim], dev, dt);
        using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
        if (!accumulate) Array.Clear(want);
        run(tx, tw, ty);
        MatMul.Twin(x, w, want, rows, inDim, outDim, accumulate);
        return Check.RelativeError(ty.ToFloatArray(), want);
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

using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The GEMM on warpgroup products (GemmWgmma.cs) beyond its audit case "gemm wgmma": the PTX the driver gets (sm_90a,
/// m64n64k16 products with A from registers, one wait a step, cp.async copies, no local memory after the passes), fixed
/// shapes that cross every edge at once in both forms, and its refusals.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class GemmWgmmaTests
{
    [Theory]
    [InlineData("F16Kernel", ".f16.f16", ".bf16.bf16")]
    [InlineData("Bf16Kernel", ".bf16.bf16", "f32.f16.f16")]
    [InlineData("F16CoreKernel", ".f16.f16", ".bf16.bf16")]
    public void Ptx_holds_warpgroup_products_that_each_statement_waits_for(string kernel, string has, string hasNot)
    {
        var m = typeof(GemmWgmma).GetMethod(kernel, BindingFlags.Static | BindingFlags.NonPublic)!;
        string raw = Ptx.CompileKernel(m, passes: false).PTXAssembly, ptx = Ptx.CompileKernel(m).PTXAssembly;
        Assert.Contains("\n.target sm_90a\n", ptx);
        Assert.Contains("st.local", raw);
        Assert.DoesNotContain("st.local", ptx);
        Assert.DoesNotContain("ld.local", ptx);
        Assert.Contains($"wgmma.mma_async.sync.aligned.m64n64k16.f32{has}", ptx);
        Assert.DoesNotContain($"m64n64k16{hasNot}", ptx);
        Assert.Contains("cp.async.cg.shared.global", ptx);
        Assert.Contains("fence.proxy.async.shared::cta", ptx);
        Assert.Contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16", ptx);
        int Count(string what) => ptx.Split(what).Length - 1;
        // two statements a step (outputs 0–63 and 64–127), two products each, and each waits for its own: ILGPU copies
        // the accumulators between statements, which an unfinished product must not meet
        // statements of two products each (outputs 0–63 and 64–127; the swizzled form's inputs 0–31 and 32–63, its last
        // statement waiting or not), and one wait for all of a step's: ptxas keeps the accumulators in place between them
        bool swizzled = !kernel.Contains("Core");
        Assert.Equal(swizzled ? 6 : 4, Count("wgmma.mma_async"));
        Assert.Equal(swizzled ? 3 : 2, Count("wgmma.fence.sync.aligned"));
        Assert.Equal(1, Count("wgmma.wait_group.sync.aligned 0"));
        // the second 16 inputs of a statement: 32 bytes on along a swizzled row, 256 bytes on in core matrices
        Assert.Contains(swizzled ? ", 2; wgmma.fence" : ", 16; wgmma.fence", ptx);
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Ragged_tiles_and_several_steps_match_the_twin(string device)
    {
        var dev = Device.Parse(device);
        if (!GemmWgmma.Runs(dev)) Assert.Skip($"wgmma needs a Hopper GPU or ILGPU's CPU accelerator, not {dev}");
        var rng = new Random(37);
        // rows and outputs one past a 128 tile (the second warpgroup's rows and the high 64 outputs ragged); 2 steps of 64
        // (the last 40 wide) in the swizzled form, 4 of 32 (the last 8 wide) in the core-matrix one
        int rows = 129, inDim = 104, outDim = 197;
        foreach (bool swizzled in new[] { true, false })
        foreach (var dt in new[] { DType.F16, DType.BF16 })
            foreach (bool accumulate in new[] { false, true })
            {
                double err = GemmHalfTests.AgainstTwin(dev, rng, rows, inDim, outDim, dt, accumulate, (x, w, y) => GemmWgmma.Run(x, w, y, accumulate, swizzled));
                Assert.True(err <= Check.F32Bound, $"{dt}{(accumulate ? " +=" : "")}{(swizzled ? " swizzled" : " core matrices")}: relative error {err:E2}");
            }
    }

    /// <summary>K cut into ranges whose partial sums are added in range order: uneven ranges, an empty last range (4 ranges
    /// of 6 steps: 2, 2, 2, 0), more ranges asked than steps, both forms, accumulate on and off.</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void K_in_ranges_matches_the_twin(string device)
    {
        var dev = Device.Parse(device);
        if (!GemmWgmma.Runs(dev)) Assert.Skip($"wgmma needs a Hopper GPU or ILGPU's CPU accelerator, not {dev}");
        var rng = new Random(41);
        // 6 steps of 64 (the last 8 wide) in the swizzled form, 11 of 32 in the core-matrix one; rows and outputs ragged
        int rows = 72, inDim = 328, outDim = 136, run = 0;
        foreach (int split in new[] { 2, 3, 4, 8 })
            foreach (bool swizzled in new[] { true, false })
            {
                var dt = run % 2 == 0 ? DType.F16 : DType.BF16;
                bool accumulate = run++ % 3 != 0;
                double err = GemmHalfTests.AgainstTwin(dev, rng, rows, inDim, outDim, dt, accumulate, (x, w, y) => GemmWgmma.Run(x, w, y, accumulate, swizzled, split));
                Assert.True(err <= Check.F32Bound, $"{dt}{(accumulate ? " +=" : "")}{(swizzled ? " swizzled" : " core matrices")}, {split} ranges: relative error {err:E2}");
            }
    }

    [Fact]
    public void K_is_split_only_while_the_grid_fits_two_blocks_a_multiprocessor()
    {
        Assert.Equal(2, GemmWgmma.SplitFor(132, 128, 64));    // 512 rows × 4096 outputs, in 4096: one block an SM → two
        Assert.Equal(1, GemmWgmma.SplitFor(132, 344, 64));    // 512 rows × 11008 outputs: already past one wave
        Assert.Equal(1, GemmWgmma.SplitFor(132, 512, 172));   // 2048 rows
        Assert.Equal(8, GemmWgmma.SplitFor(132, 32, 64));     // 128 rows: up to the most ranges
        Assert.Equal(2, GemmWgmma.SplitFor(132, 32, 24));     // … while a range keeps 8 steps
        Assert.Equal(1, GemmWgmma.SplitFor(132, 128, 15));
    }

    [Fact]
    public void Runs_on_the_cpu_accelerator_and_refuses_what_GemmHalf_refuses()
    {
        var dev = Device.IlgpuCpu();
        Assert.True(GemmWgmma.Runs(dev));
        Assert.False(GemmWgmma.Runs(Device.Cpu));
        using var x16 = Tensor.From(new float[2 * 8], [2, 8], dev, DType.F16);
        using var wb = Tensor.From(new float[3 * 8], [3, 8], dev, DType.BF16);
        using var y = Tensor.Empty([2, 3], DType.F32, dev);
        Assert.Contains("BF16", Assert.Throws<ArgumentException>(() => GemmWgmma.Run(x16, wb, y)).Message);
        using var x12 = Tensor.From(new float[2 * 12], [2, 12], dev, DType.F16);
        using var w12 = Tensor.From(new float[3 * 12], [3, 12], dev, DType.F16);
        Assert.Contains("multiple of 8", Assert.Throws<ArgumentException>(() => GemmWgmma.Run(x12, w12, y)).Message);
    }
}

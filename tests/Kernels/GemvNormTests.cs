using BitDeltaNative.Kernels;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// GemvNorm (one row's RMSNorm inside the linears that read it) beyond its audit case "gemv norm" (KernelTests) and the
/// model's route (GemvNormRouteTests): what it takes and leaves, and what its PTX must hold to keep GemvOne's speed (each
/// batch's loads of W, x and g in one basic block, no barrier, no local memory).
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class GemvNormTests
{
    [Fact]
    public void Takes_one_row_of_half_weights_of_one_type_with_f32_norm_weights_on_an_ilgpu_device()
    {
        var dev = Device.IlgpuCpu();
        using var x = Tensor.From(Check.Values(new Random(1), 64), [1, 64], dev);
        using var x2 = Tensor.From(Check.Values(new Random(2), 128), [2, 64], dev);
        using var g = Tensor.From(Check.Values(new Random(3), 64), [64], dev);
        using var g16 = g.Cast(DType.F16);
        using var gShort = Tensor.From(Check.Values(new Random(4), 56), [56], dev);
        using var q = Tensor.Empty([16, 64], DType.F16, dev);
        using var k = Tensor.Empty([8, 64], DType.F16, dev);
        using var kb = Tensor.Empty([8, 64], DType.BF16, dev);
        using var f32 = Tensor.Empty([8, 64], DType.F32, dev);
        using var other = Tensor.Empty([8, 56], DType.F16, dev);
        Assert.True(GemvNorm.Takes(x, g, q));
        Assert.True(GemvNorm.Takes(x, g, q, k, k));
        Assert.True(GemvNorm.Takes(x, null, q, k, k));     // x already normed (a tenant's row: TenantPlainKernel)
        Assert.False(GemvNorm.Takes(x2, null, q));         // two rows, normed or not
        Assert.False(GemvNorm.Takes(x, g));                // no linear
        Assert.False(GemvNorm.Takes(x, g, q, k, k, k));    // more than three
        Assert.False(GemvNorm.Takes(x2, g, q));            // two rows: the norm, then the linears
        Assert.False(GemvNorm.Takes(x, g16, q));           // norm weights not in f32 (the model casts them once)
        Assert.False(GemvNorm.Takes(x, gShort, q));        // norm weights of another length
        Assert.False(GemvNorm.Takes(x, g, q, kb));         // two weight types in one launch
        Assert.False(GemvNorm.Takes(x, g, f32));           // f32 weights
        Assert.False(GemvNorm.Takes(x, g, q, other));      // another input width
        using var xc = Tensor.From(Check.Values(new Random(1), 64), [1, 64], Device.Cpu);
        using var gc = Tensor.From(Check.Values(new Random(3), 64), [64], Device.Cpu);
        using var qc = Tensor.Empty([16, 64], DType.F16, Device.Cpu);
        Assert.False(GemvNorm.Takes(xc, gc, qc));          // the host device: RmsNorm's and MatMul's own loops
        try
        {
            GemvNorm.Use = false;
            Assert.False(GemvNorm.Takes(x, g, q));
        }
        finally
        {
            GemvNorm.Use = true;
        }
    }

    [Fact]
    public void A_tenant_call_without_signs_and_mismatched_outputs_are_refused()
    {
        var dev = Device.IlgpuCpu();
        using var x = Tensor.From(Check.Values(new Random(1), 64), [1, 64], dev);
        using var g = Tensor.From(Check.Values(new Random(3), 64), [64], dev);
        using var w = Tensor.From(Check.Values(new Random(5), 16 * 64), [16, 64], dev, DType.F16);
        using var u = Tensor.From(Check.Values(new Random(6), 8 * 64), [8, 64], dev, DType.F16);
        using var y = Tensor.Empty([16], DType.F32, dev);
        Assert.Contains("signs and scales", Assert.Throws<ArgumentException>(() => GemvNorm.Run(x, g, 1e-5f, [new(w, null, null)], 0, [y])).Message);
        Assert.Contains("differ in outputs", Assert.Throws<ArgumentException>(() => GemvNorm.RunSwiGlu(x, g, 1e-5f, new(w, null, null), new(u, null, null), -1, y)).Message);
        Assert.Throws<ArgumentException>(() => GemvNorm.Run(x, g, 1e-5f, [new(w, null, null)], -1, [y, y]));
        // without norm weights only a tenant's call: a base row takes its norm inside
        Assert.Contains("only a tenant's call", Assert.Throws<ArgumentException>(() => GemvNorm.Run(x, null, 1e-5f, [new(w, null, null)], -1, [y])).Message);
    }

    [Fact]
    public void Ptx_keeps_each_batch_in_one_basic_block_and_has_no_barrier()
    {
        // each kernel (base rows, a tenant's row, a tenant's row already normed) four loops: q/k/v and the gate/up pair, each f16/bf16; a q/k/v batch is
        // 8 loads of W and 32 of x and g, a pair's 8 of W and 16 of x and g, with no branch among them
        foreach (var kernel in new[] { "Kernel", "TenantKernel", "TenantPlainKernel" })
        {
            var blocks = GemvOneTests.LoadBlocks(kernel, typeof(GemvNorm));
            Assert.Equal(4, blocks.Count);
            // without the norm (x is h) the x·g loads go: a q/k/v batch 8 of W and 16 of x, a pair's 8 and 8
            bool norm = kernel != "TenantPlainKernel";
            Assert.Equal(2, blocks.Count(n => n >= (norm ? 40 : 24)));
            Assert.All(blocks, n => Assert.True(n >= (norm ? 24 : 16), $"{kernel}: a basic block of {n} 16-byte loads"));
            // a dependent launch: one wait on each path (q/k/v's, the pair's) before the loops, none inside them
            var ptx = Ptx.Compile(typeof(GemvNorm).GetMethod(kernel, System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic)!);
            Assert.Equal(2, ptx.Split('\n').Count(l => l.Trim().StartsWith("griddepcontrol.wait", StringComparison.Ordinal)));
            Assert.All(GemvOneTests.LoadRuns(kernel, typeof(GemvNorm)), r => Assert.True(r.BeforeWait < 0, $"{kernel}: a wait inside a loop"));
        }
    }
}

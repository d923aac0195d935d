using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// GemvOne (the one-row decode linear) beyond its audit case "gemv one" (KernelTests): that MatMul and the tenant linear
/// send one row to it and get the twin's result, that it leaves alone what it cannot take, and what its PTX must hold to
/// keep its loads together (bench/NOTES.md: one branch between them cost a third of its speed with a tenant).
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class GemvOneTests
{
    /// <summary>In 8·k with k around one batch of 8 × 32 chunks (256, 257) and odd outputs; f16 and bf16; the base alone
    /// through MatMul.Run, and rows of slot −1 and of slots 0–2 of a pool through TenantLinear.Run.</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void One_row_linears_take_it_and_match_the_twin(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(5);
        foreach (var (outDim, inDim, wt) in new[] { (37, 8 * 256, DType.F16), (5, 8 * 257, DType.BF16), (64, 8 * 3, DType.F16), (9, 4096, DType.BF16) })
        {
            int cap = 3, words = DTypes.SignWordsPerRow(inDim);
            var x = Check.Values(rng, inDim, 2f);
            var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
            var signs = Check.Signs(rng, cap * outDim, inDim);
            var scales = new[] { 0.03f, 0.07f, 0.11f };
            using var tx = Tensor.From(x, [1, inDim], dev);
            using var tw = Tensor.From(w, [outDim, inDim], dev, wt);
            using var ts = Tensor.From(signs, [cap, outDim, inDim], dev);
            using var ta = Tensor.From(scales, [cap], dev);
            Assert.True(GemvOne.Takes(tx, tw));
            for (int slot = -2; slot < cap; slot++)   // −2: MatMul.Run, −1: a base row of the pool
            {
                using var ty = Check.Poisoned([1, outDim], DType.F32, dev);
                if (slot == -2) MatMul.Run(tx, tw, ty);
                else
                {
                    using var rows = TenantRows.All(1, slot, dev);
                    TenantLinear.Run(tx, tw, ts, ta, rows, ty);
                }
                var want = new float[outDim];
                var own = slot >= 0 ? signs.AsSpan(slot * outDim * words, outDim * words) : [];
                GemvOne.Twin(x, w, own, slot >= 0 ? scales[slot] : 0f, want, inDim, outDim, accumulate: false);
                double err = Check.RelativeError(ty.ToFloatArray(), want);
                Assert.True(err < Check.F32Bound, $"[{outDim}, {inDim}] {wt} slot {slot} on {device}: relative error {err:E2}");
            }
        }
    }

    [Fact]
    public void It_takes_only_one_aligned_row_of_half_weights()
    {
        var dev = TestDevices.All[0];
        using var x1 = Tensor.Empty([1, 64], DType.F32, dev);
        using var x2 = Tensor.Empty([2, 64], DType.F32, dev);
        using var x60 = Tensor.Empty([1, 60], DType.F32, dev);
        using var wHalf = Tensor.Empty([16, 64], DType.F16, dev);
        using var wF32 = Tensor.Empty([16, 64], DType.F32, dev);
        using var w60 = Tensor.Empty([16, 60], DType.F16, dev);
        Assert.True(GemvOne.Takes(x1, wHalf));
        Assert.False(GemvOne.Takes(x2, wHalf));    // two rows: the tenant linear's forms
        Assert.False(GemvOne.Takes(x1, wF32));     // f32 weights: the GEMV
        Assert.False(GemvOne.Takes(x60, w60));     // rows of W not whole 16-byte chunks
        using var xCpu = Tensor.Empty([1, 64], DType.F32, Device.Cpu);
        using var wCpu = Tensor.Empty([16, 64], DType.F16, Device.Cpu);
        Assert.False(GemvOne.Takes(xCpu, wCpu));   // the host device: MatMul's own loops
        GemvOne.Use = false;
        try { Assert.False(GemvOne.Takes(x1, wHalf)); }
        finally { GemvOne.Use = true; }
    }

    [Fact]
    public void Ptx_keeps_each_batch_in_one_basic_block_and_has_no_barrier()
    {
        var ptx = Ptx.Compile(typeof(GemvOne).GetMethod("GemvOneKernel", BindingFlags.Static | BindingFlags.NonPublic)!);
        Assert.DoesNotContain("bar.sync", ptx);
        Assert.DoesNotContain(".local", ptx);
        // Each of the four loops (f16/bf16, with/without a tenant) is one basic block: a batch's 8 loads of W and 16 of x
        // with no branch among them (ptxas then issues them early; it does not move loads across a branch).
        var lines = ptx.Split('\n');
        int loops = 0;
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].Contains("ld.global.v4.b32", StringComparison.Ordinal)) continue;
            int j = i, loads = 0;
            for (; j < lines.Length && !lines[j].Contains("bra", StringComparison.Ordinal); j++)
                if (lines[j].Contains("ld.global.v4.b32", StringComparison.Ordinal)) loads++;
            Assert.True(loads >= 24, $"{loads} 16-byte loads in the basic block at PTX line {i} (a branch at line {j})");
            loops++;
            i = j;
        }
        Assert.Equal(4, loops);
    }
}

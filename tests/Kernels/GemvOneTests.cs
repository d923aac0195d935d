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
    /// <summary>In 8·k with k around a batch of chunks (128, 256, 257) and odd outputs; f16 and bf16; 1 and 2 rows, the base
    /// alone through MatMul.Run, and rows of slot −1 and of slots 0–2 of a pool, mixed, through TenantLinear.Run.</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Linears_of_one_and_two_rows_take_it_and_match_the_twin(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(5);
        foreach (var (outDim, inDim, wt) in new[] { (37, 8 * 256, DType.F16), (5, 8 * 257, DType.BF16), (64, 8 * 3, DType.F16), (9, 8 * 128 + 8, DType.BF16) })
        {
            int cap = 3, words = DTypes.SignWordsPerRow(inDim);
            var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
            var signs = Check.Signs(rng, cap * outDim, inDim);
            var scales = new[] { 0.03f, 0.07f, 0.11f };
            using var tw = Tensor.From(w, [outDim, inDim], dev, wt);
            using var ts = Tensor.From(signs, [cap, outDim, inDim], dev);
            using var ta = Tensor.From(scales, [cap], dev);
            foreach (int[] slots in new int[][] { [-2], [-1], [0], [2], [-2, -2], [1, -1], [-1, -1], [2, 2], [0, 1] })
            {
                int rows = slots.Length;
                var x = Check.Values(rng, (long)rows * inDim, 2f);
                using var tx = Tensor.From(x, [rows, inDim], dev);
                Assert.True(rows == 1 ? GemvOne.Takes(tx, tw) : GemvOne.TakesFew(tx, tw, rows));
                using var ty = Check.Poisoned([rows, outDim], DType.F32, dev);
                if (slots[0] == -2) MatMul.Run(tx, tw, ty);   // −2: no pool at all
                else if (rows == 2 && slots.Any(t => t >= 0))
                {
                    // two rows with tenants: the tenant linear takes the streamed form, so the kernel is called directly
                    using var ds = Tensor.From(slots, [rows], dev);
                    GemvOne.RunFew(tx, tw, ts, ta, ds, ty, accumulate: false);
                }
                else
                {
                    using var tenants = new TenantRows(slots, dev);
                    TenantLinear.Run(tx, tw, ts, ta, tenants, ty);
                }
                var want = new float[rows * outDim];
                for (int r = 0; r < rows; r++)
                {
                    int t = slots[r];
                    var own = t >= 0 ? signs.AsSpan(t * outDim * words, outDim * words) : [];
                    GemvOne.Twin(x.AsSpan(r * inDim, inDim), w, own, t >= 0 ? scales[t] : 0f, want.AsSpan(r * outDim, outDim), inDim, outDim, accumulate: false);
                }
                double err = Check.RelativeError(ty.ToFloatArray(), want);
                Assert.True(err < Check.F32Bound, $"[{outDim}, {inDim}] {wt} slots {string.Join(",", slots)} on {device}: relative error {err:E2}");
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
        Assert.False(GemvOne.Takes(x2, wHalf));    // two rows: the few-row form
        Assert.True(GemvOne.TakesFew(x2, wHalf, 2));
        using var x3 = Tensor.Empty([3, 64], DType.F32, dev);
        Assert.False(GemvOne.TakesFew(x3, wHalf, 3));   // past FewRows: the tensor-core forms
        Assert.False(GemvOne.Takes(x1, wF32));     // f32 weights: the GEMV
        Assert.False(GemvOne.Takes(x60, w60));     // rows of W not whole 16-byte chunks
        using var xCpu = Tensor.Empty([1, 64], DType.F32, Device.Cpu);
        using var wCpu = Tensor.Empty([16, 64], DType.F16, Device.Cpu);
        Assert.False(GemvOne.Takes(xCpu, wCpu));   // the host device: MatMul's own loops
        GemvOne.Use = false;
        try { Assert.False(GemvOne.Takes(x1, wHalf) || GemvOne.TakesFew(x2, wHalf, 2)); }
        finally { GemvOne.Use = true; }
    }

    /// <summary>The basic blocks that hold 16-byte loads, and the loads in each: a batch of a loop is one block, so ptxas
    /// can issue its loads together (it does not move loads across a branch).</summary>
    internal static List<int> LoadBlocks(string kernel, Type? of = null)
    {
        var ptx = Ptx.Compile((of ?? typeof(GemvOne)).GetMethod(kernel, BindingFlags.Static | BindingFlags.NonPublic)!);
        Assert.DoesNotContain("bar.sync", ptx);
        Assert.DoesNotContain(".local", ptx);
        var lines = ptx.Split('\n');
        var blocks = new List<int>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].Contains("ld.global.v4.b32", StringComparison.Ordinal)) continue;
            int j = i, loads = 0;
            for (; j < lines.Length && !lines[j].Contains("bra", StringComparison.Ordinal); j++)
                if (lines[j].Contains("ld.global.v4.b32", StringComparison.Ordinal)) loads++;
            blocks.Add(loads);
            i = j;
        }
        return blocks;
    }

    [Fact]
    public void Ptx_keeps_each_batch_in_one_basic_block_and_has_no_barrier()
    {
        // four loops (f16/bf16, with/without a tenant), each batch 8 loads of W and 16 of x with no branch among them
        var blocks = LoadBlocks("GemvOneKernel");
        Assert.Equal(4, blocks.Count);
        Assert.All(blocks, n => Assert.True(n >= 24, $"a basic block of {n} 16-byte loads"));
    }

    [Fact]
    public void Two_row_ptx_keeps_each_batch_in_one_basic_block()
    {
        // four loops, each batch 4 chunks: 4 loads of W and 2 of x a row and chunk, 4 + 16
        var blocks = LoadBlocks("GemvFewKernel");
        Assert.Equal(4, blocks.Count);
        Assert.All(blocks, n => Assert.True(n >= 20, $"a basic block of {n} 16-byte loads"));
    }
}

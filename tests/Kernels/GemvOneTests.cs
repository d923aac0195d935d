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
    /// <summary>For each run of 16-byte loads in <paramref name="kernel"/>'s PTX: how many 16-byte loads it reaches before
    /// a conditional branch, following jumps that cannot fail and passing those never taken (ILGPU writes
    /// <c>if (CudaAsm.IsSupported)</c> as a branch on a predicate set to 1 or 0, which ptxas folds), and how many of them come before a <c>griddepcontrol.wait</c> on the way
    /// (−1 if none).</summary>
    internal static List<(int Loads, int BeforeWait)> LoadRuns(string kernel, Type? of = null)
    {
        var (lines, labels) = Lines(kernel, of);
        var runs = new List<(int, int)>();
        var seen = new HashSet<int>();
        for (int i = 0; i < lines.Length; i++)
            if (!seen.Contains(i) && lines[i].StartsWith("ld.global.v4.b32", StringComparison.Ordinal))
                runs.Add(Walk(lines, labels, i, seen));
        return runs;
    }

    static (string[] Lines, Dictionary<string, int> Labels) Lines(string kernel, Type? of)
    {
        var ptx = Ptx.Compile((of ?? typeof(GemvOne)).GetMethod(kernel, BindingFlags.Static | BindingFlags.NonPublic)!);
        Assert.DoesNotContain("bar.sync", ptx);
        Assert.DoesNotContain(".local", ptx);
        var lines = ptx.Split('\n').Select(l => l.Trim()).ToArray();
        var labels = new Dictionary<string, int>();
        for (int i = 0; i < lines.Length; i++)
            if (lines[i].EndsWith(':')) labels[lines[i][..^1]] = i;
        return (lines, labels);
    }

    static (int Loads, int BeforeWait) Walk(string[] lines, Dictionary<string, int> labels, int from, HashSet<int> seen)
    {
        int loads = 0, beforeWait = -1;
        for (int j = from, steps = 0; j < lines.Length && steps < 100000 && seen.Add(j); j++, steps++)
        {
            var l = lines[j];
            if (l.StartsWith("ld.global.v4.b32", StringComparison.Ordinal)) loads++;
            if (l.StartsWith("griddepcontrol.wait", StringComparison.Ordinal) && beforeWait < 0) beforeWait = loads;
            if (!l.Contains("bra", StringComparison.Ordinal)) continue;
            var target = l.Split(' ', '\t').Last().TrimEnd(';');
            string set = l.StartsWith('@') && j > 0 ? $"mov.pred\t{l[1..l.IndexOfAny([' ', '\t'])]}, " : "";
            if (set.Length > 0 && lines[j - 1] == set + "0;") continue;   // a branch on a predicate set to 0: never taken
            bool always = l.StartsWith("bra", StringComparison.Ordinal) || (set.Length > 0 && lines[j - 1] == set + "1;");
            if (!always || !labels.TryGetValue(target, out int to)) break;
            j = to;   // the loop's j++ steps over the label
        }
        return (loads, beforeWait);
    }

    /// <summary>The runs' load counts (<see cref="LoadRuns"/>).</summary>
    internal static List<int> LoadBlocks(string kernel, Type? of = null) => LoadRuns(kernel, of).Select(r => r.Loads).ToList();

    [Fact]
    public void Ptx_keeps_each_batch_in_one_basic_block_and_has_no_barrier()
    {
        // four loops (f16/bf16, with/without a tenant), each batch 8 loads of W and 16 of x with no branch among them
        var blocks = LoadBlocks("GemvOneKernel");
        Assert.Equal(4, blocks.Count);
        Assert.All(blocks, n => Assert.True(n >= 24, $"a basic block of {n} 16-byte loads"));
    }

    [Fact]
    public void Ptx_waits_once_for_the_kernel_ahead_and_never_inside_a_loop()
    {
        // a dependent launch (DependentLaunch.cs): one griddepcontrol.wait before the loops, none in them (in every
        // batch it cost ~10% of a 7B step, bench/NOTES.md), and the release for the kernel after
        foreach (var kernel in new[] { "GemvOneKernel", "GemvFewKernel" })
        {
            var ptx = Ptx.Compile(typeof(GemvOne).GetMethod(kernel, BindingFlags.Static | BindingFlags.NonPublic)!);
            Assert.Equal(1, ptx.Split('\n').Count(l => l.Trim().StartsWith("griddepcontrol.wait", StringComparison.Ordinal)));
            Assert.Contains("griddepcontrol.launch_dependents", ptx);
            Assert.All(LoadRuns(kernel), r => Assert.True(r.BeforeWait < 0, $"{kernel}: a wait inside a loop"));
        }
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

using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The streamed form (TenantLinearStream.cs), beyond the audit case "tenant linear bits" that also takes it: which
/// batches go there, what its PTX must hold (both products, the fence and the column counter; the preparation's
/// published epoch and its polling), and random batches against the twin on shapes where blocks and splits come out ragged: outputs not a
/// multiple of a block's 64, more than 32 rows (two passes over the base), the base alone, K cut into uneven splits.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class TenantLinearStreamTests
{
    [Fact]
    public void Batches_whose_tenants_all_have_few_rows_are_streamed_whole()
    {
        using var few = new TenantRows([1, -1, 2, 2, 3, -1], Device.Cpu);
        Assert.True(few.DecodeAllFew);
        Assert.Equal(3, few.FewTenants);
        Assert.Equal([0, 1, 2, 2, 3, 2, 4, 3], few.FewList!.Host<int>().ToArray());

        using var two = new TenantRows([4, -1, 5], Device.Cpu);   // under BitsMinTenants, still streamed
        Assert.True(two.DecodeAllFew);
        Assert.Equal(2, two.FewTenants);
        Assert.Equal(0, two.BitsCount);

        using var many = new TenantRows([0, 0, 0, 1], Device.Cpu);   // slot 0 has 3 rows: the fused form
        Assert.False(many.DecodeAllFew);
        Assert.Equal(0, many.FewCount);
        Assert.Null(many.FewList);

        using var baseOnly = new TenantRows([-1, -1, -1], Device.Cpu);
        Assert.True(baseOnly.DecodeAllFew);
        Assert.Equal(0, baseOnly.FewTenants);
        Assert.Null(baseOnly.FewList);
    }

    [Fact]
    public void Ptx_has_both_products_a_device_fence_and_the_column_counter()
    {
        var main = Ptx.Compile(Kernel("StreamKernel"));
        Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", main);
        Assert.True(main.Split("m16n8k256").Length - 1 >= 16, "fewer than 4 tiles × 4 binary products a chunk");
        Assert.Contains("ld.global.v4.b32", main);   // W, planes and signs in 16-byte loads
        Assert.Contains("membar.gl", main);
        Assert.Contains("atom.add.global.u32", main);
        // the kernel for one row group: the same products; its base blocks split their own K range of x into shared
        // memory (16-byte stores, then 16-byte loads a step)
        var one = Ptx.Compile(Kernel("StreamOneKernel"));
        Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", one);
        Assert.Contains("st.shared.v4.b32", one);
        Assert.Contains("ld.shared.v4.b32", one);
        Assert.True(one.Split("ld.global.v4.b32").Length - 1 >= 16, "W's chunks (4 in flight × 4 loads) not in 16-byte loads");
        Assert.Contains("atom.add.global.u32", one);
        // the preparation in the same grid: its last block publishes the epoch, the others poll it at L2, resting between polls
        foreach (var ptx in new[] { main, one })
        {
            Assert.Contains("atom.exch.global.b32", ptx);
            Assert.Contains("atom.or.global.b32", ptx);
            Assert.Contains("nanosleep.u32", ptx);
            Assert.Contains("fence.acq_rel.gpu", ptx);   // the handoffs' release / acquire fences (membar.gl when asked)
        }
    }

    /// <summary>The device words the streamed form keeps between calls (preparation counts, published epochs, arrival
    /// counters) must come back as they were: a batch run again after batches of other shapes, one and two row groups
    /// and the base alone, gives the same result bit for bit.</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void A_batch_run_again_after_other_shapes_gives_the_same_bits(string device)
    {
        var dev = Device.Parse(device);
        float[] Once(int[] slots, int outDim, int inDim, int seed)
        {
            using var b = new Batch(dev, new Random(seed), slots, outDim, inDim, 4);
            Assert.True(b.Tenants.DecodeAllFew);
            return b.Run();
        }
        int[] batch = [2, -1, 0, 3];
        var first = Once(batch, 96, 512, 1);
        Once([1, 0, -1, 2, 3, -1, -1, -1, -1, -1, 0, -1], 160, 256, 2);   // two row groups
        Once([-1, -1, -1], 48, 768, 3);                                    // the base alone
        Once([3], 32, 256, 4);
        var again = Once(batch, 96, 512, 1);
        Assert.Equal(first, again);
        Assert.All(first, v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>A one-group batch whose base blocks split their own K range of x into shared memory gives the bits of the
    /// same batch with x split by the preparation blocks: same conversions, same products in the same order. Shapes
    /// with K cut unevenly and outputs not a multiple of 64; the base alone, base rows with tenants, 8 rows.</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void The_base_blocks_own_split_of_x_gives_the_split_blocks_bits(string device)
    {
        var dev = Device.Parse(device);
        var r = new Random(11);
        foreach (var (slots, outDim, inDim) in new (int[], int, int)[]
                 { ([0], 96, 768), ([-1], 48, 1280), ([1, -1, 0], 160, 512), ([0, 1, 2, 3, -1, -1, 4, 5], 32, 1792), ([-1, -1], 112, 4864) })
        {
            using var batch = new Batch(dev, r, slots, outDim, inDim, 6);
            Assert.True(batch.Tenants.DecodeAllFew && batch.Tenants.MmaGroupCount == 1);
            float[] Run(int vecs)
            {
                // blocks enough that the grid never cuts the K split to fit one wave: both ways then split K alike
                // (without the split blocks the fit can come out different, and so would the partial sums' rounding)
                int was = TenantLinear.StreamOwnSplitVecs, perSm = TenantLinear.BaseBlocksPerSm, maxRows = TenantLinear.StreamOwnSplitMaxRows;
                TenantLinear.StreamOwnSplitVecs = vecs;
                TenantLinear.StreamOwnSplitMaxRows = 8;   // the 8-row batch too
                TenantLinear.BaseBlocksPerSm = 64;
                try { return batch.Run(); }
                finally
                {
                    TenantLinear.StreamOwnSplitVecs = was;
                    TenantLinear.StreamOwnSplitMaxRows = maxRows;
                    TenantLinear.BaseBlocksPerSm = perSm;
                }
            }
            var own = Run(1 << 20);
            var blocks = Run(0);
            Assert.Equal(blocks, own);
            Assert.All(own, v => Assert.True(float.IsFinite(v)));
        }
    }

    /// <summary>The trace of a streamed call (the bench's --timeline) records each block's kind in grid order, and its
    /// finishing count shows the handoff's invariant: every column's row group is added up exactly once, by one block,
    /// however the arrivals fall. One and two row groups, the base alone and with tenants, columns ragged.</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void A_traced_call_finishes_every_column_once_and_lists_its_blocks_in_grid_order(string device)
    {
        var dev = Device.Parse(device);
        var r = new Random(5);
        foreach (var (slots, outDim, inDim) in new (int[], int, int)[]
                 { ([0, -1, 1], 96, 512), ([-1, -1], 80, 768), ([0, 1, 2, 3, 4, 5, -1, -1, -1, 6, 7, -1], 160, 256) })
        {
            int rows = slots.Length;
            using var batch = new Batch(dev, r, slots, outDim, inDim, 8);
            TenantLinear.LastStreamTrace = null;
            TenantLinear.TraceStream = true;
            float[] y;
            try { y = batch.Run(); }
            finally { TenantLinear.TraceStream = false; }
            var (blocks, prepSplit, prepBits, baseBlocks, tenantBlocks) = TenantLinear.LastStreamTrace!.Value;
            int n = prepSplit + prepBits + baseBlocks + tenantBlocks, L = TenantLinear.TraceLongs;
            Assert.Equal(n * L, blocks.Length);
            int[] kinds = [.. Enumerable.Range(0, n).Select(b => (int)(blocks[b * L + 6] % 4))];
            int[] want = [.. Enumerable.Repeat(0, prepSplit), .. Enumerable.Repeat(1, prepBits), .. Enumerable.Repeat(2, baseBlocks), .. Enumerable.Repeat(3, tenantBlocks)];
            Assert.Equal(want, kinds);
            int columns = (outDim / 16 + 3) / 4, groups = (rows + 7) / 8;
            long finished = Enumerable.Range(0, n).Sum(b => blocks[b * L + 6] / 4);
            Assert.Equal(columns * groups, finished);
            Assert.All(y, v => Assert.True(float.IsFinite(v)));
        }
    }

    /// <summary>A decode batch on the device: x in ±2, W exact in f16, <paramref name="cap"/> tenants of random signs and
    /// scales 0.01·(t + 1), drawn from <paramref name="r"/> in that order; <see cref="Run"/> gives y from a poisoned
    /// start.</summary>
    sealed class Batch : IDisposable
    {
        public readonly TenantRows Tenants;
        readonly Tensor x, w, signs, scales;
        readonly int rows, outDim;

        public Batch(Device dev, Random r, int[] slots, int outDim, int inDim, int cap)
        {
            rows = slots.Length;
            this.outDim = outDim;
            Tenants = new TenantRows(slots, dev);
            x = Tensor.From(Check.Values(r, (long)rows * inDim, 2f), [rows, inDim], dev);
            w = Tensor.From(Check.Rounded(Check.Values(r, (long)outDim * inDim), DType.F16), [outDim, inDim], dev, DType.F16);
            var bits = new uint[cap * outDim * (inDim / 32)];
            for (int i = 0; i < bits.Length; i++) bits[i] = (uint)r.NextInt64(1L << 32);
            signs = Tensor.From(bits, [cap, outDim, inDim], dev);
            scales = Tensor.From(Enumerable.Range(1, cap).Select(i => 0.01f * i).ToArray(), [cap], dev);
        }

        public float[] Run()
        {
            using var y = Check.Poisoned([rows, outDim], DType.F32, x.Device);
            GemvOne.Use = false;   // one-row batches here test the streamed form
            int max = TenantLinear.StreamMaxRows;
            TenantLinear.StreamMaxRows = int.MaxValue;   // and batches past the engine's limit (two row groups) too
            try { TenantLinear.Run(x, w, signs, scales, Tenants, y); }
            finally
            {
                GemvOne.Use = true;
                TenantLinear.StreamMaxRows = max;
            }
            return y.ToFloatArray();
        }

        public void Dispose()
        {
            Tenants.Dispose();
            x.Dispose();
            w.Dispose();
            signs.Dispose();
            scales.Dispose();
        }
    }

    static MethodInfo Kernel(string name) => typeof(TenantLinear).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!;

    /// <summary>Seeds pick: outputs 16·k (k = 1 … 9, so blocks of 64 come out ragged), inputs 256·k (or 64·k for the base
    /// alone), 0–6 tenants of one or two rows, 0–40 base rows, rows shuffled, accumulate on or off; odd seeds take the
    /// tenant-row blocks with K in four pieces.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Random_batches_match_the_twin(string device, int seed)
    {
        var dev = Device.Parse(device);
        var rng = new Random(seed);
        int nTenants = seed % 4 == 0 ? 0 : 1 + rng.Next(6);
        int inDim = nTenants == 0 ? 64 * (1 + rng.Next(12)) : 256 * (1 + rng.Next(3)), outDim = 16 * (1 + rng.Next(9));
        var list = new List<int>();
        for (int u = 0; u < nTenants; u++) list.AddRange(Enumerable.Repeat(u, 1 + rng.Next(2)));
        list.AddRange(Enumerable.Repeat(-1, seed % 3 == 0 ? 33 + rng.Next(8) : rng.Next(4)));
        if (list.Count == 0) list.Add(-1);
        int[] slots = [.. list.OrderBy(_ => rng.Next())];
        int rows = slots.Length, cap = Math.Max(1, nTenants), words = inDim / 32;
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), DType.F16);
        var signs = new uint[cap * outDim * words];
        for (int i = 0; i < signs.Length; i++) signs[i] = (uint)rng.NextInt64(1L << 32);
        var scales = Enumerable.Range(0, cap).Select(_ => Check.Value(rng, 0.05f)).ToArray();
        bool accumulate = rng.Next(2) == 0;
        var want = accumulate ? Check.Values(rng, (long)rows * outDim, 3f) : new float[rows * outDim];
        using var tenants = new TenantRows(slots, dev);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, DType.F16);
        using var ts = Tensor.From(signs, [cap, outDim, inDim], dev);
        using var ta = Tensor.From(scales, [cap], dev);
        using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
        Assert.True(tenants.DecodeAllFew);
        int max = TenantLinear.StreamMaxRows, bitsSplit = TenantLinear.StreamBitsSplit;
        TenantLinear.StreamMaxRows = int.MaxValue;   // the streamed form whatever the engine's threshold
        TenantLinear.StreamBitsSplit = seed % 2 == 1 ? 4 : 0;   // both layouts of the tenant-row blocks (the CPU's few slots pick 1)
        GemvOne.Use = false;   // one row too: GemvOne has its own audit case
        try { TenantLinear.Run(tx, tw, ts, ta, tenants, ty, accumulate); }
        finally
        {
            TenantLinear.StreamMaxRows = max;
            TenantLinear.StreamBitsSplit = bitsSplit;
            GemvOne.Use = true;
        }
        TenantLinear.Twin(x, w, signs, scales, slots, want, rows, inDim, outDim, accumulate);
        double err = Check.RelativeError(ty.ToFloatArray(), want);
        Assert.True(err <= Check.F32Bound, $"{device} seed {seed}: {rows} rows, {nTenants} tenants, [{outDim}, {inDim}]: relative error {err:E2}");
    }

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var d in TestDevices.Names.Select(n => n.Data))
            for (int seed = 1; seed <= (d == "cuda" ? 40 : 6); seed++) data.Add(d, seed);
        return data;
    }
}

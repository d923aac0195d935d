using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// Two or three linears that read the same x in one streamed launch (TenantLinear.RunParts: q/k/v, gate/up): every
/// part's outputs against that linear's own twin, with its own signs pool, scales and place in y, on parts of 32·k
/// outputs (so a block's 64 or 128 outputs cross parts) and the refusals.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class TenantLinearPartsTests
{
    /// <summary>Seeds pick: 2 or 3 parts of 32·k outputs (k = 1 … 5), inputs 256·k, 1–6 tenants of one or two rows
    /// (seed % 4 == 0: none), 0–3 base rows, rows shuffled, a pool with a free slot, accumulate on or off; odd seeds
    /// take the tenant-row blocks with K in four pieces.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Random_parts_match_each_linears_twin(string device, int seed) => Parts(device, seed, past: false);

    /// <summary>The same past the streamed form's rows (its limit set to 0): the base form's products into split partials
    /// (K split: at least 512 inputs, many blocks a multiprocessor), then the bit-serial products adding them, and the
    /// base rows' sums; 3–6 tenants of one or two rows, as the bit-serial form takes them, or (seed % 3 == 0) 3–6 rows
    /// of the base alone, whose split sums go to each part's place.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Past_the_streamed_rows_parts_match_each_linears_twin(string device, int seed) => Parts(device, seed, past: true);

    static void Parts(string device, int seed, bool past)
    {
        var dev = Device.Parse(device);
        var rng = new Random(seed);
        int nTenants = past ? (seed % 3 == 0 ? 0 : 3 + rng.Next(4)) : seed % 4 == 0 ? 0 : 1 + rng.Next(6), cap = nTenants + 1;
        int inDim = 256 * ((past ? 2 : 1) + rng.Next(3)), words = inDim / 32;
        int[] sizes = [.. Enumerable.Range(0, 2 + rng.Next(2)).Select(_ => 32 * (1 + rng.Next(5)))];
        int[] ends = [.. sizes.Select((n, j) => sizes.Take(j + 1).Sum())];
        int outDim = ends[^1];
        var list = new List<int>();
        for (int u = 0; u < nTenants; u++) list.AddRange(Enumerable.Repeat(u + 1, 1 + rng.Next(2)));   // slot 0 left free
        list.AddRange(Enumerable.Repeat(-1, nTenants == 0 && past ? 3 + rng.Next(4) : rng.Next(4)));   // the base alone: past GemvOne's rows
        if (list.Count == 0) list.Add(-1);
        int[] slots = [.. list.OrderBy(_ => rng.Next())];
        int rows = slots.Length;
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), DType.F16);
        var signs = new uint[(long)cap * outDim * words];   // part j's pool [cap, n_j, words] at cap·start_j rows
        for (int i = 0; i < signs.Length; i++) signs[i] = (uint)rng.NextInt64(1L << 32);
        var scales = Enumerable.Range(0, sizes.Length * cap).Select(_ => Check.Value(rng, 0.05f)).ToArray();
        bool accumulate = rng.Next(2) == 0;
        var before = accumulate ? Check.Values(rng, (long)rows * outDim, 3f) : new float[rows * outDim];
        using var tenants = new TenantRows(slots, dev);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, DType.F16);
        using var ts = Tensor.From(signs, [cap * outDim, inDim], dev);
        using var ta = Tensor.From(scales, [sizes.Length * cap], dev);
        using var ty = accumulate ? Tensor.From(before, [rows * outDim], dev) : Check.Poisoned([rows * outDim], DType.F32, dev);
        int bitsSplit = TenantLinear.StreamBitsSplit, maxRows = TenantLinear.StreamMaxRows, perSm = TenantLinear.BaseBlocksPerSm;
        TenantLinear.StreamBitsSplit = seed % 2 == 1 ? 4 : 0;
        GemvOne.Use = false;   // one or two rows too: where GemvOne takes them RunParts leaves them to each part's Run
        TenantLinear.StreamMaxRows = past ? 0 : int.MaxValue;   // the streamed form for every batch, or for none
        if (past) TenantLinear.BaseBlocksPerSm = 64;
        try { Assert.True(TenantLinear.RunParts(tx, tw, ts, ta, ends, tenants, ty, accumulate), $"{device} seed {seed}: not taken"); }
        finally
        {
            TenantLinear.StreamBitsSplit = bitsSplit;
            TenantLinear.StreamMaxRows = maxRows;
            TenantLinear.BaseBlocksPerSm = perSm;
            GemvOne.Use = true;
        }
        var got = ty.ToFloatArray();
        for (int j = 0, start = 0; j < sizes.Length; start = ends[j], j++)
        {
            int n = sizes[j];
            var want = before.AsSpan(rows * start, rows * n).ToArray();
            TenantLinear.Twin(x, w.AsSpan(start * inDim, n * inDim), signs.AsSpan(cap * start * words, cap * n * words), scales.AsSpan(j * cap, cap),
                              slots, want, rows, inDim, n, accumulate);
            double err = Check.RelativeError(got.AsSpan(rows * start, rows * n).ToArray(), want);
            Assert.True(err <= Check.F32Bound, $"{device} seed {seed}{(past ? ", past the streamed rows" : "")}: part {j} of [{string.Join(", ", ends)}], {rows} rows, {nTenants} tenants, in {inDim}: relative error {err:E2}");
        }
    }

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var d in TestDevices.Names.Select(n => n.Data))
            for (int seed = 1; seed <= (d == "cuda" ? 40 : 6); seed++) data.Add(d, seed);
        return data;
    }

    /// <summary>Parts the tenant-row blocks cannot keep apart (not a multiple of 32 outputs) are not run in one launch:
    /// false, and y is as it was; malformed parts are refused in one line naming what was expected.</summary>
    [Fact]
    public void Parts_it_cannot_take_are_left_to_the_caller_and_bad_ones_refused()
    {
        var dev = Device.Parse("ilgpu-cpu");
        var rng = new Random(3);
        int inDim = 256, outDim = 96, cap = 2;
        using var tenants = new TenantRows([0, 1], dev);
        using var x = Tensor.From(Check.Values(rng, 2L * inDim), [2, inDim], dev);
        using var w = Tensor.From(Check.Values(rng, (long)outDim * inDim), [outDim, inDim], dev, DType.F16);
        using var s = Tensor.Empty([cap * outDim, inDim], DType.Sign1, dev);
        s.Fill(0x5A);
        using var a2 = Tensor.From(new float[2 * cap], [2 * cap], dev);
        using var y = Check.Poisoned([2 * outDim], DType.F32, dev);
        var poison = y.ToArray<uint>();
        Assert.False(TenantLinear.RunParts(x, w, s, a2, [48, 96], tenants, y));
        Assert.Equal(poison, y.ToArray<uint>());
        // a prefill segment beside the decode rows: those forms would leave its rows unwritten
        using var mixed = new TenantRows([.. Enumerable.Repeat(0, TenantLinear.PrefillMinRows), 1], dev);
        using var xm = Tensor.From(Check.Values(rng, (TenantLinear.PrefillMinRows + 1L) * inDim), [TenantLinear.PrefillMinRows + 1, inDim], dev);
        using var ym = Check.Poisoned([(TenantLinear.PrefillMinRows + 1) * outDim], DType.F32, dev);
        Assert.False(TenantLinear.RunParts(xm, w, s, a2, [32, 96], mixed, ym));
        // one row, which GemvOne takes in each part's Run
        using var one = new TenantRows([1], dev);
        using var x1 = x.Slice(0, 1);
        using var y1 = Check.Poisoned([outDim], DType.F32, dev);
        Assert.False(TenantLinear.RunParts(x1, w, s, a2, [32, 96], one, y1));
        var e = Assert.Throws<ArgumentException>(() => TenantLinear.RunParts(x, w, s, a2, [64, 80], tenants, y));
        Assert.Contains("ending at 96", e.Message);
        Assert.Throws<ArgumentException>(() => TenantLinear.RunParts(x, w, s, a2, [96], tenants, y));
        using var s3 = Tensor.Empty([cap, outDim, inDim], DType.Sign1, dev);
        Assert.Contains("Sign1 [capacity·96, 256]", Assert.Throws<ArgumentException>(() => TenantLinear.RunParts(x, w, s3, a2, [32, 96], tenants, y)).Message);
        using var a3 = Tensor.From(new float[3 * cap], [3 * cap], dev);
        Assert.Throws<ArgumentException>(() => TenantLinear.RunParts(x, w, s, a3, [32, 96], tenants, y));
    }
}

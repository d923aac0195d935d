using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The streamed form (TenantLinearStream.cs), beyond the audit case "tenant linear bits" that also takes it: which
/// batches go there, what its PTX must hold (both products, the fence and the column counter; no atomics in the
/// preparation), and random batches against the twin on shapes where blocks and splits come out ragged: outputs not a
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
        // the kernel for one row group: the same products, x read as f32 and split in the kernel (no split launch)
        var one = Ptx.Compile(Kernel("StreamOneKernel"));
        Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", one);
        Assert.True(one.Split("ld.global.v4.b32").Length - 1 >= 16, "W's chunks (4 in flight × 4 loads) not in 16-byte loads");
        Assert.Contains("atom.add.global.u32", one);
        var prep = Ptx.Compile(Kernel("StreamPrepKernel"));
        Assert.DoesNotMatch(@"\b(atom|red)\.", prep);
    }

    static MethodInfo Kernel(string name) => typeof(TenantLinear).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!;

    /// <summary>Seeds pick: outputs 16·k (k = 1 … 9, so blocks of 64 come out ragged), inputs 256·k (or 64·k for the base
    /// alone), 0–6 tenants of one or two rows, 0–40 base rows, rows shuffled, accumulate on or off.</summary>
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
        int max = TenantLinear.StreamMaxRows;
        TenantLinear.StreamMaxRows = int.MaxValue;   // the streamed form whatever the engine's threshold
        try { TenantLinear.Run(tx, tw, ts, ta, tenants, ty, accumulate); }
        finally { TenantLinear.StreamMaxRows = max; }
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

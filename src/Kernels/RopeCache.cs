using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// A decode step's attention input in one launch: RoPE on q and on k (<see cref="Rope"/>), then k and v into the cache
/// (<see cref="KvCache.Write"/>). Three launches did this before, each a few µs of launch and ramp for kilobytes of work
/// (speed issue: "RoPE and KV-cache write fused"; bench/NOTES.md has the step profile that counted them). Same results
/// as the three ops in that order: q and k rotated in place, the cache holding the rotated k and the given v, padding
/// tokens (slot or position outside the cache) not written, a position outside the table giving NaN.
/// </summary>
public static class RopeCache
{
    /// <summary>The spec: the three twins in order.</summary>
    public static void Twin(Span<float> q, Span<float> k, ReadOnlySpan<float> v, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions,
                            ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, int heads, int kvHeads, int headDim,
                            Span<byte> kCache, Span<byte> vCache, DType cacheType, int nSlots, int maxSeq)
    {
        Rope.Twin(q, positions, cos, sin, heads, headDim);
        Rope.Twin(k, positions, cos, sin, kvHeads, headDim);
        KvCache.Twin(k, v, kCache, vCache, cacheType, slots, positions, nSlots, kvHeads, maxSeq, headDim);
    }

    /// <summary>Sizes of a launch (one struct keeps the parameter list short; public for ILGPU's CPU accelerator).</summary>
    public struct Dims
    {
        public int Heads, KvHeads, Half, MaxPositions, Slots, MaxSeq, CacheCode, Count;
    }

    const int Threads = 256;

    /// <summary>One thread per rotated pair (i, i + d/2) of q's and k's heads, token by token: threads below
    /// heads·half of a token rotate q, the rest rotate k and store the pair's k and v elements in the cache row. Grouped
    /// explicitly so that it is launched dependent (DependentLaunch.cs): it starts while the q/k/v linear ahead finishes
    /// and lets decode attention after it do the same.</summary>
    static void Kernel(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<int> slots, ArrayView<int> positions,
                       ArrayView<float> cos, ArrayView<float> sin, ArrayView<ushort> kCache, ArrayView<ushort> vCache, Dims s)
    {
        GridDependency.Release();
        GridDependency.Wait();   // q, k, v are the linear's ahead
        int idx = Grid.GlobalIndex.X;
        if (idx >= s.Count) return;
        int perToken = (s.Heads + s.KvHeads) * s.Half;
        int t = idx / perToken, r = idx % perToken;
        bool isQ = r < s.Heads * s.Half;
        if (!isQ) r -= s.Heads * s.Half;
        int h = r / s.Half, i = r % s.Half;
        var x = isQ ? q : k;
        long b = ((long)t * (isQ ? s.Heads : s.KvHeads) + h) * 2 * s.Half + i;
        int p = positions[t];
        float y0, y1;
        if ((uint)p >= (uint)s.MaxPositions)
        {
            y0 = float.NaN;
            y1 = float.NaN;
        }
        else
        {
            long e = (long)p * s.Half + i;
            float c = cos[e], sn = sin[e];
            float x0 = x[b], x1 = x[b + s.Half];
            y0 = x0 * c - x1 * sn;
            y1 = x1 * c + x0 * sn;
        }
        x[b] = y0;
        x[b + s.Half] = y1;
        int slot = slots[t];
        if (isQ || slot < 0 || slot >= s.Slots || p < 0 || p >= s.MaxSeq) return;
        long dst = (((long)slot * s.KvHeads + h) * s.MaxSeq + p) * 2 * s.Half + i;
        Elem.Store(kCache, dst, s.CacheCode, y0);
        Elem.Store(kCache, dst + s.Half, s.CacheCode, y1);
        Elem.Store(vCache, dst, s.CacheCode, v[b]);
        Elem.Store(vCache, dst + s.Half, s.CacheCode, v[b + s.Half]);
    }

    /// <summary>q f32 [T, heads, d], k and v f32 [T, kvHeads, d], slots and positions I32 [T], the caches as
    /// <see cref="KvCache"/> takes them.</summary>
    public static void Run(Tensor q, Tensor k, Tensor v, Tensor slots, Tensor positions, RopeTable table, Tensor kCache, Tensor vCache)
    {
        int heads = Rope.Heads("rope q", q, positions, table), kvHeads = Rope.Heads("rope k", k, positions, table);
        var (nSlots, nKv, maxSeq, headDim) = KvCache.CheckCache(kCache, vCache);
        if (nKv != kvHeads || headDim != table.HeadDim)
            throw new ArgumentException($"rope + kv write: k {k} does not fit the cache {kCache}");
        Need.F32("kv write v", v);
        Need.SameDevice(q, k, v, slots, kCache, vCache);
        int tokens = positions.Dim(0);
        Need.Shape("kv write v", v, tokens, kvHeads, headDim);
        KvCache.CheckTokens(slots, positions, tokens);
        if (tokens == 0) return;
        if (!q.Device.IsIlgpu)
        {
            Rope.Run(q, positions, table);
            Rope.Run(k, positions, table);
            KvCache.Write(k, v, kCache, vCache, slots, positions);
            return;
        }
        var s = new Dims
        {
            Heads = heads, KvHeads = kvHeads, Half = headDim / 2, MaxPositions = table.MaxPositions, Slots = nSlots, MaxSeq = maxSeq,
            CacheCode = Elem.Code(kCache.DType), Count = tokens * (heads + kvHeads) * (headDim / 2),
        };
        q.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>,
                               ArrayView<ushort>, ArrayView<ushort>, Dims>>(Kernel)(
            new KernelConfig((s.Count + Threads - 1) / Threads, Threads), q.View<float>(), k.View<float>(), v.View<float>(), slots.View<int>(), positions.View<int>(),
            table.Cos.View<float>(), table.Sin.View<float>(), Elem.View(kCache), Elem.View(vCache), s);
    }

    /// <summary>Random tokens at distinct (slot, position) pairs, some padding, some GQA; q, k and both caches against the
    /// twins. Bound: rope's f32 rounding (the cache stores are exact roundings of the same values).</summary>
    public static AuditCase Case => new("rope + kv cache write", Check.F32Bound, (dev, rng) =>
    {
        int kvHeads = Check.Size(rng, 4), heads = kvHeads * Check.Size(rng, 4), d = 2 * Check.Size(rng, 64);
        int nSlots = Check.Size(rng, 4), maxSeq = Check.Size(rng, 60);
        var ct = Check.FloatType(rng);
        using var table = RopeTable.Create(d, 10_000.0, null, maxSeq + 5, dev);
        var (slots, positions) = KvCache.DrawTokens(rng, Math.Min(Check.Size(rng, 12), nSlots * maxSeq), nSlots, maxSeq, padOneIn: 6);
        int tokens = slots.Length;
        int[] cacheShape = [nSlots, kvHeads, maxSeq, d];
        long cacheCount = (long)nSlots * kvHeads * maxSeq * d;
        var q = Check.Values(rng, (long)tokens * heads * d, 2f);
        var k = Check.Values(rng, (long)tokens * kvHeads * d, 2f);
        var v = Check.Values(rng, (long)tokens * kvHeads * d);
        var kOld = Check.Rounded(Check.Values(rng, cacheCount), ct);
        var vOld = Check.Rounded(Check.Values(rng, cacheCount), ct);
        using var tq = Tensor.From(q, [tokens, heads, d], dev);
        using var tk = Tensor.From(k, [tokens, kvHeads, d], dev);
        using var tv = Tensor.From(v, [tokens, kvHeads, d], dev);
        using var tkc = Tensor.From(kOld, cacheShape, dev, ct);
        using var tvc = Tensor.From(vOld, cacheShape, dev, ct);
        using var ts = Tensor.From(slots, [tokens], dev);
        using var tp = Tensor.From(positions, [tokens], dev);
        Run(tq, tk, tv, ts, tp, table, tkc, tvc);

        // q and k against rope's twin (f32 rounding); the caches exactly against the cache write's twin of the k the kernel
        // rotated, so that a last-bit difference in a rotation cannot flip a rounding to the cache's dtype.
        var kGot = tk.ToFloatArray();
        var qWant = (float[])q.Clone();
        var kWantRot = (float[])k.Clone();
        var cos = table.Cos.ToFloatArray();
        var sin = table.Sin.ToFloatArray();
        Rope.Twin(qWant, positions, cos, sin, heads, d);
        Rope.Twin(kWantRot, positions, cos, sin, kvHeads, d);
        var kWant = HostElem.Bytes(kOld, ct);
        var vWant = HostElem.Bytes(vOld, ct);
        KvCache.Twin(kGot, v, kWant, vWant, ct, slots, positions, nSlots, kvHeads, maxSeq, d);
        var cacheGot = tkc.ToFloatArray().Concat(tvc.ToFloatArray()).ToArray();
        var cacheWant = HostElem.Floats(kWant, ct, cacheCount).Concat(HostElem.Floats(vWant, ct, cacheCount)).ToArray();
        if (Check.RelativeError(cacheGot, cacheWant) > 0) return (double.PositiveInfinity, $"T {tokens}: the cache differs from the write of the rotated k");
        var got = tq.ToFloatArray().Concat(kGot).ToArray();
        var want = qWant.Concat(kWantRot).ToArray();
        return (Check.RelativeError(got, want), $"T {tokens}, heads {heads}/{kvHeads}, d {d}, cache [{nSlots}, {kvHeads}, {maxSeq}, {d}] {ct}");
    });
}

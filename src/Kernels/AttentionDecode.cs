using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Decode attention, split over the keys (flash-decoding: Dao et al. 2023, "Flash-Decoding for long-context inference").
/// A decode step has one query row per (token, head): 32 heads of one token are 32 rows, too few to fill 132
/// multiprocessors if each walks all its keys, and a 4k-token context is thousands of dependent steps for one group. So
/// the keys a query sees are cut into ranges of <see cref="Dims.SplitKeys"/>; each (token, head, range) is a group that
/// keeps its own online softmax (Milakov and Gimelshein 2018, arXiv 1805.02867), and a second launch merges the ranges.
/// One range (short contexts) writes the output itself.
/// </summary>
public static partial class Attention
{
    const int DecodeWarps = 4;
    const int DecodeThreads = DecodeWarps * 32;
    /// <summary>Keys a warp scores per step: their rows are loaded together, so 8 loads a lane are in flight.</summary>
    const int DecodeKeysPerWarp = 8;
    /// <summary>Keys a group takes in one step (all its warps).</summary>
    public const int DecodeKeysPerStep = DecodeWarps * DecodeKeysPerWarp;

    /// <summary>Keys per range of the decode kernel: 8 steps of a group. A multiple of <see cref="DecodeKeysPerStep"/>. The
    /// audit passes smaller ranges (<see cref="Decode"/>'s splitKeys) so that short caches also take several.</summary>
    public static int DecodeSplitKeys { get; set; } = 256;

    /// <summary>Up to 4 consecutive elements of a row (a lane's share of a head of ≤ 128).</summary>
    struct Four
    {
        public float A, B, C, D;
        public readonly float Dot(Four o) => A * o.A + B * o.B + C * o.C + D * o.D;
    }

    /// <summary>
    /// Elements d0 … d0+3 of the row starting at element <paramref name="row"/>, times <paramref name="mask"/> (1 for an
    /// element of the lane's share, 0 past it). Without branches: an index past the head reads the row's last element
    /// and the mask zeroes it, so the loads of one step sit in one basic block and ptxas can issue them all before the
    /// first is used. With a branch per load (the first version) every key was its own memory round trip. Inlined with
    /// <paramref name="code"/> and <paramref name="vec"/> constant (<see cref="Keys"/>), so no branch on them is left:
    /// with the type a kernel parameter, each half element's load sat behind one, and an f16 cache ran a 7B decode step
    /// at 2400 positions slower than an f32 one (7.4 against 5.9 ms, bench/NOTES.md).
    /// <paramref name="vec"/> (a lane's share is 4 elements and D a multiple of 4): the share is one 8-byte load (f16,
    /// bf16) or one 16-byte load (f32); a lane past the head reads the row's last 4 and is masked.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Four Row(ArrayView<ushort> cache, long row, int d0, int D, int code, Four mask, bool vec)
    {
        var r = new Four();
        if (vec)
        {
            long g = row + Math.Min(d0, D - 4);   // a multiple of 4: row is a multiple of D
            if (code == Elem.F32)
            {
                var v = cache.Cast<Vec16>()[g / 4];
                r.A = Interop.IntAsFloat(v.X); r.B = Interop.IntAsFloat(v.Y); r.C = Interop.IntAsFloat(v.Z); r.D = Interop.IntAsFloat(v.W);
            }
            else
            {
                ulong u = cache.Cast<ulong>()[g / 4];
                r.A = Elem.Widen((ushort)u, code); r.B = Elem.Widen((ushort)(u >> 16), code);
                r.C = Elem.Widen((ushort)(u >> 32), code); r.D = Elem.Widen((ushort)(u >> 48), code);   // little-endian
            }
        }
        else
        {
            int last = D - 1;
            long i0 = row + Math.Min(d0, last), i1 = row + Math.Min(d0 + 1, last), i2 = row + Math.Min(d0 + 2, last), i3 = row + Math.Min(d0 + 3, last);
            if (code == Elem.F32)
            {
                var f = cache.Cast<float>();
                r.A = f[i0]; r.B = f[i1]; r.C = f[i2]; r.D = f[i3];
            }
            else
            {
                r.A = Elem.Load(cache, i0, code); r.B = Elem.Load(cache, i1, code); r.C = Elem.Load(cache, i2, code); r.D = Elem.Load(cache, i3, code);
            }
        }
        r.A *= mask.A; r.B *= mask.B; r.C *= mask.C; r.D *= mask.D;
        return r;
    }

    static float Unit(bool b) => b ? 1f : 0f;

    static bool Has(int i, int d0, int e, int D) => i < e && d0 + i < D;

    static void AddRow(ref Four acc, float p, Four v)
    {
        acc.A += p * v.A;
        acc.B += p * v.B;
        acc.C += p * v.C;
        acc.D += p * v.D;
    }

    /// <summary>A warp's online-softmax state over its keys: running max, sum and the unnormalised V accumulator.</summary>
    struct State
    {
        public float M, L;
        public Four Acc;
    }

    /// <summary>
    /// A warp's walk over its keys of [start, end) (every fourth run of 8 from its own), as <see cref="DecodeKernel"/>
    /// describes; inlined at each call with <paramref name="code"/> and <paramref name="vec"/> constant.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static State Keys(ArrayView<ushort> kCache, ArrayView<ushort> vCache, int code, bool vec, Four qv, Four mask, long head,
                      int start, int end, int warp, int d0, int D)
    {
        float m = float.NegativeInfinity, l = 0f;
        var acc = new Four();
        for (int j = start + warp * DecodeKeysPerWarp; j < end; j += DecodeKeysPerStep)
        {
            // Keys past the end read the last key's rows (any real row) and are masked below: every K and V row of the
            // step is loaded before the first is used, 16 loads of 4 elements in flight a lane.
            int last = end - 1;
            long r0 = (head + j) * D, r1 = (head + Math.Min(j + 1, last)) * D, r2 = (head + Math.Min(j + 2, last)) * D, r3 = (head + Math.Min(j + 3, last)) * D;
            long r4 = (head + Math.Min(j + 4, last)) * D, r5 = (head + Math.Min(j + 5, last)) * D, r6 = (head + Math.Min(j + 6, last)) * D, r7 = (head + Math.Min(j + 7, last)) * D;
            var k0 = Row(kCache, r0, d0, D, code, mask, vec); var k1 = Row(kCache, r1, d0, D, code, mask, vec);
            var k2 = Row(kCache, r2, d0, D, code, mask, vec); var k3 = Row(kCache, r3, d0, D, code, mask, vec);
            var k4 = Row(kCache, r4, d0, D, code, mask, vec); var k5 = Row(kCache, r5, d0, D, code, mask, vec);
            var k6 = Row(kCache, r6, d0, D, code, mask, vec); var k7 = Row(kCache, r7, d0, D, code, mask, vec);
            var v0 = Row(vCache, r0, d0, D, code, mask, vec); var v1 = Row(vCache, r1, d0, D, code, mask, vec);
            var v2 = Row(vCache, r2, d0, D, code, mask, vec); var v3 = Row(vCache, r3, d0, D, code, mask, vec);
            var v4 = Row(vCache, r4, d0, D, code, mask, vec); var v5 = Row(vCache, r5, d0, D, code, mask, vec);
            var v6 = Row(vCache, r6, d0, D, code, mask, vec); var v7 = Row(vCache, r7, d0, D, code, mask, vec);
            float s0 = qv.Dot(k0), s1 = qv.Dot(k1), s2 = qv.Dot(k2), s3 = qv.Dot(k3);
            float s4 = qv.Dot(k4), s5 = qv.Dot(k5), s6 = qv.Dot(k6), s7 = qv.Dot(k7);
            // Eight butterflies side by side: every lane ends with the eight sums.
            for (int o = 16; o > 0; o /= 2)
            {
                s0 += Warp.ShuffleXor(s0, o); s1 += Warp.ShuffleXor(s1, o); s2 += Warp.ShuffleXor(s2, o); s3 += Warp.ShuffleXor(s3, o);
                s4 += Warp.ShuffleXor(s4, o); s5 += Warp.ShuffleXor(s5, o); s6 += Warp.ShuffleXor(s6, o); s7 += Warp.ShuffleXor(s7, o);
            }
            float inf = float.NegativeInfinity;
            s1 = j + 1 < end ? s1 : inf; s2 = j + 2 < end ? s2 : inf; s3 = j + 3 < end ? s3 : inf;
            s4 = j + 4 < end ? s4 : inf; s5 = j + 5 < end ? s5 : inf; s6 = j + 6 < end ? s6 : inf; s7 = j + 7 < end ? s7 : inf;
            // Key j < end, so s0 and the new max are finite.
            float mNew = MathF.Max(MathF.Max(MathF.Max(m, s0), MathF.Max(s1, s2)), MathF.Max(MathF.Max(s3, s4), MathF.Max(MathF.Max(s5, s6), s7)));
            float corr = MathF.Exp(m - mNew);   // 0 on the first step (m = −∞)
            l *= corr;
            acc.A *= corr; acc.B *= corr; acc.C *= corr; acc.D *= corr;
            // Masked keys: p = e^−∞ = 0, so their (real, finite) rows add nothing.
            float p0 = MathF.Exp(s0 - mNew), p1 = MathF.Exp(s1 - mNew), p2 = MathF.Exp(s2 - mNew), p3 = MathF.Exp(s3 - mNew);
            float p4 = MathF.Exp(s4 - mNew), p5 = MathF.Exp(s5 - mNew), p6 = MathF.Exp(s6 - mNew), p7 = MathF.Exp(s7 - mNew);
            l += ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7));
            AddRow(ref acc, p0, v0); AddRow(ref acc, p1, v1); AddRow(ref acc, p2, v2); AddRow(ref acc, p3, v3);
            AddRow(ref acc, p4, v4); AddRow(ref acc, p5, v5); AddRow(ref acc, p6, v6); AddRow(ref acc, p7, v7);
            m = mNew;
        }

        return new State { M = m, L = l, Acc = acc };
    }

    /// <summary>
    /// One group of 4 warps per (token, query head, key range). Lane ℓ holds elements ℓ·e … ℓ·e+e−1 of q (scaled), of
    /// the V accumulator and of every K and V row it reads (e = ⌈headDim/32⌉ ≤ 4), so a row is one coalesced read by the
    /// warp. Per step a warp scores 8 consecutive keys: their K rows are loaded together, each dot is summed over the
    /// warp by a butterfly (every lane gets it), the running max and sum are updated once for the 8, and their V rows,
    /// again loaded together, are added. Warps take every fourth run of 8 keys; at the end the warps' states merge
    /// through shared memory: o = Σ_w acc_w·e^(m_w−M) / Σ_w l_w·e^(m_w−M). With one range that is the output; with
    /// several, the group writes M, L = Σ_w l_w·e^(m_w−M) and the unnormalised Σ_w acc_w·e^(m_w−M) for
    /// <see cref="CombineKernel"/>. An empty range (past the token's position) writes M = −∞, L = 0.
    /// </summary>
    static void DecodeKernel(ArrayView<float> q, ArrayView<ushort> kCache, ArrayView<ushort> vCache, int code,
                             ArrayView<int> slots, ArrayView<int> positions, ArrayView<float> output,
                             ArrayView<float> partM, ArrayView<float> partL, ArrayView<float> partAcc, Dims s)
    {
        GridDependency.Release();   // a dependent launch after it may start its blocks as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // launched dependent itself: q and the cache are the kernels' ahead
        var accS = SharedMemory.Allocate<float>(DecodeWarps * MaxHeadDim);
        var mS = SharedMemory.Allocate<float>(DecodeWarps);
        var lS = SharedMemory.Allocate<float>(DecodeWarps);

        int split = Grid.IdxX % s.Splits, row = Grid.IdxX / s.Splits;
        int t = row / s.Heads, h = row % s.Heads;
        int D = s.HeadDim;
        long outRow = (long)row * D;   // q and output are both [T, nHeads, D]
        long part = (long)row * s.Splits + split;
        int slot = slots[t], pos = positions[t];
        int start = (s.Window > 0 ? Math.Max(0, pos - s.Window + 1) : 0) + split * s.SplitKeys;
        if (slot < 0 || slot >= s.Slots || pos < 0 || pos >= s.MaxSeq || start > pos)
        {
            // Padding (or a range past the position): the whole group leaves together, before any barrier.
            if (s.Splits == 1)
                for (int d = Group.IdxX; d < D; d += Group.DimX) output[outRow + d] = 0f;
            else
            {
                if (Group.IdxX == 0) { partM[part] = float.NegativeInfinity; partL[part] = 0f; }
                for (int d = Group.IdxX; d < D; d += Group.DimX) partAcc[part * D + d] = 0f;
            }
            return;
        }
        int end = Math.Min(pos + 1, start + s.SplitKeys);

        int lane = Warp.LaneIdx, warp = Warp.WarpIdx;
        int e = (D + 31) / 32, d0 = lane * e;
        long head = ((long)slot * s.KvHeads + h / (s.Heads / s.KvHeads)) * s.MaxSeq;
        var mask = new Four { A = Unit(Has(0, d0, e, D)), B = Unit(Has(1, d0, e, D)), C = Unit(Has(2, d0, e, D)), D = Unit(Has(3, d0, e, D)) };
        var qv = Row(q.Cast<ushort>(), outRow, d0, D, Elem.F32, mask, false);
        qv.A *= s.Scale; qv.B *= s.Scale; qv.C *= s.Scale; qv.D *= s.Scale;

        // One copy of the key loop per cache type and load width, each with them constant (see Row).
        bool vec = e == 4 && D % 4 == 0;
        var st = code == Elem.F16 ? vec ? Keys(kCache, vCache, Elem.F16, true, qv, mask, head, start, end, warp, d0, D)
                                        : Keys(kCache, vCache, Elem.F16, false, qv, mask, head, start, end, warp, d0, D)
               : code == Elem.BF16 ? vec ? Keys(kCache, vCache, Elem.BF16, true, qv, mask, head, start, end, warp, d0, D)
                                         : Keys(kCache, vCache, Elem.BF16, false, qv, mask, head, start, end, warp, d0, D)
               : vec ? Keys(kCache, vCache, Elem.F32, true, qv, mask, head, start, end, warp, d0, D)
                     : Keys(kCache, vCache, Elem.F32, false, qv, mask, head, start, end, warp, d0, D);
        float m = st.M, l = st.L;
        var acc = st.Acc;

        if (lane == 0) { mS[warp] = m; lS[warp] = l; }
        int a = warp * MaxHeadDim + d0;
        if (Has(0, d0, e, D)) accS[a] = acc.A;
        if (Has(1, d0, e, D)) accS[a + 1] = acc.B;
        if (Has(2, d0, e, D)) accS[a + 2] = acc.C;
        if (Has(3, d0, e, D)) accS[a + 3] = acc.D;
        Group.Barrier();

        // Warp 0 always has key `start`, so M is finite; a warp with no key has m = −∞ and weighs e^−∞ = 0.
        float M = float.NegativeInfinity;
        for (int w = 0; w < DecodeWarps; w++) M = MathF.Max(M, mS[w]);
        float L = 0f;
        for (int w = 0; w < DecodeWarps; w++) L += lS[w] * MathF.Exp(mS[w] - M);
        if (s.Splits > 1 && Group.IdxX == 0) { partM[part] = M; partL[part] = L; }
        for (int d = Group.IdxX; d < D; d += Group.DimX)
        {
            float o = 0f;
            for (int w = 0; w < DecodeWarps; w++) o += accS[w * MaxHeadDim + d] * MathF.Exp(mS[w] - M);
            if (s.Splits == 1) output[outRow + d] = o / L;
            else partAcc[part * D + d] = o;
        }
    }

    /// <summary>One group per (token, head): merges its ranges' states, o = Σ_r acc_r·e^(M_r−M) / Σ_r L_r·e^(M_r−M). Range 0
    /// of a real token is never empty, so M is finite; empty ranges weigh e^−∞ = 0. Padding tokens get 0.</summary>
    static void CombineKernel(ArrayView<int> slots, ArrayView<int> positions, ArrayView<float> partM, ArrayView<float> partL,
                              ArrayView<float> partAcc, ArrayView<float> output, Dims s)
    {
        GridDependency.Release();
        GridDependency.Wait();
        int row = Grid.IdxX, t = row / s.Heads, D = s.HeadDim;
        long outRow = (long)row * D, part = (long)row * s.Splits;
        int slot = slots[t], pos = positions[t];
        if (slot < 0 || slot >= s.Slots || pos < 0 || pos >= s.MaxSeq)
        {
            for (int d = Group.IdxX; d < D; d += Group.DimX) output[outRow + d] = 0f;
            return;
        }
        float M = float.NegativeInfinity;
        for (int r = 0; r < s.Splits; r++) M = MathF.Max(M, partM[part + r]);
        float L = 0f;
        for (int r = 0; r < s.Splits; r++) L += partL[part + r] * MathF.Exp(partM[part + r] - M);
        for (int d = Group.IdxX; d < D; d += Group.DimX)
        {
            float o = 0f;
            for (int r = 0; r < s.Splits; r++) o += partAcc[(part + r) * D + d] * MathF.Exp(partM[part + r] - M);
            output[outRow + d] = o / L;
        }
    }

    /// <summary>The decode launches: ranges of <see cref="DecodeSplitKeys"/> over at most <paramref name="keys"/> keys a
    /// token sees (the caller's bound, or the cache's length or window), then the merge when there are several.</summary>
    static void LaunchDecode(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, Tensor output, Dims shape, int keys, int splitKeys)
    {
        if (splitKeys < DecodeKeysPerStep || splitKeys % DecodeKeysPerStep != 0)
            throw new ArgumentException($"attention: {splitKeys} keys a range is not a positive multiple of {DecodeKeysPerStep}");
        int bound = shape.Window > 0 ? Math.Min(shape.Window, shape.MaxSeq) : shape.MaxSeq;
        if (keys > 0) bound = Math.Min(bound, keys);
        shape.SplitKeys = splitKeys;
        shape.Splits = Math.Max(1, (bound + splitKeys - 1) / splitKeys);
        var dev = q.Device;
        int rows = shape.Tokens * shape.Heads;
        using var pm = shape.Splits > 1 ? Tensor.Empty([rows, shape.Splits], DType.F32, dev) : null;
        using var pl = shape.Splits > 1 ? Tensor.Empty([rows, shape.Splits], DType.F32, dev) : null;
        using var pa = shape.Splits > 1 ? Tensor.Empty([rows, shape.Splits, shape.HeadDim], DType.F32, dev) : null;
        // With one range the partial views are never read: output's storage stands in for them.
        var vm = pm?.View<float>() ?? output.View<float>();
        var vl = pl?.View<float>() ?? output.View<float>();
        var va = pa?.View<float>() ?? output.View<float>();
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, int, ArrayView<int>, ArrayView<int>, ArrayView<float>,
                                 ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>>(DecodeKernel)(
            new KernelConfig(rows * shape.Splits, DecodeThreads),
            q.View<float>(), Elem.View(kCache), Elem.View(vCache), Elem.Code(kCache.DType), slots.View<int>(), positions.View<int>(), output.View<float>(),
            vm, vl, va, shape);
        if (shape.Splits > 1)
            dev.GroupedKernel<Action<KernelConfig, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>>(CombineKernel)(
                new KernelConfig(rows, DecodeThreads), slots.View<int>(), positions.View<int>(), vm, vl, va, output.View<float>(), shape);
    }
}

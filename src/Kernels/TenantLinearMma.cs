using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using static BitDeltaNative.Kernels.MatMul;
using Half = ILGPU.Half;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The decode form on tensor cores (f16 base, in a multiple of 64, out a multiple of 16: every Llama linear). The
/// CUDA-core form spends per row and weight a fold and an FMA, so at 32 rows it is bound by arithmetic, not by the
/// bytes it reads (bench/NOTES.md); here <see cref="Mma.M16N8K16"/> does the products with W as the 16×16 A operand
/// (16 outputs) and 8 rows of x as B, so one fragment of W serves 8 rows at once. Per 8-row group:
/// - the base term: A = W straight from memory, B = x split into f16 hi + lo (x = hi + lo to 2⁻²² relative, so the
///   sum keeps f32 accuracy and the twin's bound), two products;
/// - each distinct tenant u of the group: A = its signs expanded to ±1 f16 (a shift and one LOP3 per pair of signs),
///   B = the same x with the rows of other tenants masked to zero, into a second accumulator. Since masks are
///   disjoint, one accumulator holds Σ s·x for every row's own tenant, and α_t(r) multiplies it once at the end, in f32.
/// Rows are grouped by tenant on the host (<see cref="TenantRows.MmaGroups"/>), so 32 rows of 4 tenants make 4
/// groups of one tenant each.
///
/// The K permutation: lane (g, t) reads 16 bytes at k = 8t and at 32 + 8t of each 64-wide chunk for W's rows g and
/// g+8 (so each row is read as two 64-byte runs) and step s of the chunk takes its weights 4s … 4s+3. The mma's
/// logical k = 2t, 2t+1, 2t+8, 2t+9 map to those four, for A and B alike, so the sum is over every k once. The sign
/// bits for those weights are byte t of the row's sign words 2c and 2c+1 (bit k % 32 of word k / 32, BitLinear.Sign).
///
/// Work split: a block per 16 outputs, its P warps take contiguous runs of chunks (split-K) and add their partials
/// through shared memory in a fixed order, so results do not depend on timing.
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Take the tensor-core form where it applies (the bench turns it off to compare).</summary>
    public static bool UseMma { get; set; } = true;

    /// <summary>0: split-K per shape (<see cref="MmaSplitFor"/>); 1 … 8 forces it (bench).</summary>
    public static int MmaSplit { get; set; }

    /// <summary>Product of the tenant term with x's low half too (f32 accuracy). Off: x rounded to f16 in the tenant
    /// term only, half its tensor-core work; for the bench to measure what it costs.</summary>
    public static bool MmaTenantLow { get; set; } = true;

    const int MmaMaxSplit = 8, MmaGroupsPerLaunch = 4, MmaTargetWarps = 2048;

    /// <summary>Whether <see cref="Run"/> sends the decode rows of <paramref name="tenants"/> to the tensor-core form.</summary>
    static bool TakesMma(TenantRows tenants, Tensor x, Tensor w) =>
        UseMma && tenants.MmaGroupCount > 0 && x.Device.IsIlgpu && w.DType == DType.F16 && w.Dim(1) % 64 == 0 && w.Dim(0) % 16 == 0
        && Aligned16(x) && Aligned16(w);

    /// <summary>Warps per block: enough blocks × warps (~2048: 16 per SM on the H100) to keep loads in flight while
    /// each warp still has several chunks.</summary>
    static int MmaSplitFor(int outDim, int inDim)
    {
        int chunks = inDim / 64, tiles = outDim / 16;
        int p = MmaSplit > 0 ? MmaSplit : (MmaTargetWarps + tiles - 1) / tiles;
        return Math.Clamp(p, 1, Math.Min(MmaMaxSplit, chunks));
    }

    static void DecodeMma(Tensor x, Tensor w, Tensor signs, Tensor scales, Tensor groups, int groupCount, Tensor y, bool accumulate)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), split = MmaSplitFor(outDim, inDim);
        int flags = (accumulate ? 1 : 0) | (MmaTenantLow ? 2 : 0);
        for (int first = 0; first < groupCount; first += MmaGroupsPerLaunch)
            y.Device.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<uint>, ArrayView<float>, ArrayView<Vec16>, ArrayView<int>,
                                          ArrayView<float>, int, int, int, int, int>>(MmaKernel)(
                new KernelConfig(outDim / 16, split * 32), w.View<Vec16>(), signs.View<uint>(), scales.View<float>(), x.View<Vec16>(),
                groups.View<int>(), y.View<float>(), first, Math.Min(MmaGroupsPerLaunch, groupCount - first), inDim, outDim, flags);
    }

    /// <summary>W's fragments for one 64-wide chunk: rows g and g+8, 16 bytes at 8t (A, A8) and at 32 + 8t (B, B8).</summary>
    struct WChunk
    {
        public Vec16 A, A8, B, B8;
    }

    /// <summary>Per 8-row group: the accumulators of the base term and of the (masked) tenant term.</summary>
    struct GroupAcc
    {
        public Mma.Float4 W, S;
    }

    /// <summary>What a lane knows of one group: the row of x it feeds to B (−1: none) and that row's slot.</summary>
    struct GroupLane
    {
        public long Row;
        public int Slot;
    }

    /// <summary>The x of one group for one chunk: the lane's 16 values (positions 0 … 15, see the class comment).</summary>
    struct XChunk
    {
        public Vec16 V0, V1, V2, V3;
    }

    /// <summary>One sign word per distinct tenant of a group (up to 8): lane L holds word 2c + L % 2 of output row L / 2
    /// of the tile, so one coalesced load per tenant brings the tile's 16 rows × 64 signs; shuffles hand each lane
    /// the words it needs.</summary>
    struct SignWords
    {
        public uint S0, S1, S2, S3, S4, S5, S6, S7;
    }

    static void MmaKernel(ArrayView<Vec16> w16, ArrayView<uint> signs, ArrayView<float> scales, ArrayView<Vec16> x16, ArrayView<int> groups,
                          ArrayView<float> y, int first, int nGroups, int inDim, int outDim, int flags)
    {
        var red = SharedMemory.Allocate<float>(MmaMaxSplit * MmaGroupsPerLaunch * 128);
        var emu = SharedMemory.Allocate<float>(MmaMaxSplit * 384);   // Mma's scratch where it is emulated
        var tab = SharedMemory.Allocate<int>(MmaGroupsPerLaunch * TenantRows.MmaGroupInts);
        var w16a = w16.AsAligned(16);
        var x16a = x16.AsAligned(16);
        int split = Group.DimX / 32, wi = Warp.WarpIdx, lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        for (int i = Group.IdxX; i < MmaGroupsPerLaunch * TenantRows.MmaGroupInts; i += Group.DimX)
            tab[i] = i < nGroups * TenantRows.MmaGroupInts ? groups[first * TenantRows.MmaGroupInts + i] : -1;
        Group.Barrier();
        var sa = emu.SubView(wi * 384, 256);
        var sb = emu.SubView(wi * 384 + 256, 128);
        int tile = Grid.IdxX, chunks = inDim / 64, per = (chunks + split - 1) / split, c0 = wi * per;
        long wStride = inDim / 8, xStride = inDim / 4, oG = (long)tile * 16 + g;
        int words = inDim / 32;
        long slotWords = (long)outDim * words, signAt = ((long)tile * 16 + (lane >> 1)) * words + (lane & 1);
        bool tenantLow = (flags & 2) != 0;

        var l0 = Lane(tab, 0, g);
        var l1 = Lane(tab, 1, g);
        var l2 = Lane(tab, 2, g);
        var l3 = Lane(tab, 3, g);
        GroupAcc a0 = default, a1 = default, a2 = default, a3 = default;

        // Every warp runs `per` iterations, the last ones past the end with zero fragments, so all warps of the block
        // call the mma equally often (its emulation synchronises the block). W of the next chunk is in flight while a
        // group's x and its tenants' sign words (one each) are loaded together before its products. Loading every
        // group's up front was tried: 206 registers, half the occupancy, slower (bench/NOTES.md).
        var next = LoadW(w16a, oG, wStride, c0, c0 < chunks, t);
        for (int i = 0; i < per; i++)
        {
            int c = c0 + i;
            bool live = c < chunks;
            var cur = next;
            next = LoadW(w16a, oG, wStride, c + 1, i + 1 < per && c + 1 < chunks, t);
            long at = signAt + 2L * c;
            a0 = GroupChunk(cur, LoadX(x16a, l0, c, live, xStride, t), LoadSigns(signs, tab, 0, live, slotWords, at), tab, 0, l0, a0, g, t, tenantLow, sa, sb, lane);
            if (nGroups > 1)
                a1 = GroupChunk(cur, LoadX(x16a, l1, c, live, xStride, t), LoadSigns(signs, tab, 1, live, slotWords, at), tab, 1, l1, a1, g, t, tenantLow, sa, sb, lane);
            if (nGroups > 2)
                a2 = GroupChunk(cur, LoadX(x16a, l2, c, live, xStride, t), LoadSigns(signs, tab, 2, live, slotWords, at), tab, 2, l2, a2, g, t, tenantLow, sa, sb, lane);
            if (nGroups > 3)
                a3 = GroupChunk(cur, LoadX(x16a, l3, c, live, xStride, t), LoadSigns(signs, tab, 3, live, slotWords, at), tab, 3, l3, a3, g, t, tenantLow, sa, sb, lane);
        }

        // α per row, once: D's columns for this lane are rows 2t and 2t+1 of each group.
        Stash(red, wi, 0, lane, a0, Scale(tab, scales, 0, 2 * t), Scale(tab, scales, 0, 2 * t + 1));
        if (nGroups > 1) Stash(red, wi, 1, lane, a1, Scale(tab, scales, 1, 2 * t), Scale(tab, scales, 1, 2 * t + 1));
        if (nGroups > 2) Stash(red, wi, 2, lane, a2, Scale(tab, scales, 2, 2 * t), Scale(tab, scales, 2, 2 * t + 1));
        if (nGroups > 3) Stash(red, wi, 3, lane, a3, Scale(tab, scales, 3, 2 * t), Scale(tab, scales, 3, 2 * t + 1));
        Group.Barrier();
        int accumulate = flags & 1;
        for (int e = Group.IdxX; e < nGroups * 128; e += Group.DimX)
        {
            float sum = 0;
            for (int k = 0; k < split; k++) sum += red[k * MmaGroupsPerLaunch * 128 + e];
            int gr = e / 128, ln = e / 4 % 32, comp = e % 4;
            long o = (long)tile * 16 + (ln >> 2) + (comp >= 2 ? 8 : 0);
            int row = tab[gr * TenantRows.MmaGroupInts + 2 * (ln & 3) + (comp & 1)];
            if (row >= 0) Put(y, row * (long)outDim + o, sum, accumulate);
        }
    }

    static GroupLane Lane(ArrayView<int> tab, int gr, int g)
    {
        GroupLane l;
        l.Row = tab[gr * TenantRows.MmaGroupInts + g];
        l.Slot = tab[gr * TenantRows.MmaGroupInts + 8 + g];
        return l;
    }

    static float Scale(ArrayView<int> tab, ArrayView<float> scales, int gr, int n)
    {
        int slot = tab[gr * TenantRows.MmaGroupInts + 8 + n];
        return slot >= 0 ? scales[slot] : 0f;
    }

    static void Stash(ArrayView<float> red, int wi, int gr, int lane, GroupAcc a, float alpha0, float alpha1)
    {
        int at = (wi * MmaGroupsPerLaunch + gr) * 128 + lane * 4;
        red[at] = a.W.X + alpha0 * a.S.X;
        red[at + 1] = a.W.Y + alpha1 * a.S.Y;
        red[at + 2] = a.W.Z + alpha0 * a.S.Z;
        red[at + 3] = a.W.W + alpha1 * a.S.W;
    }

    static WChunk LoadW(ArrayView<Vec16> w16, long oG, long wStride, int c, bool live, int t)
    {
        WChunk r = default;
        if (!live) return r;
        long at = oG * wStride + c * 8L + t, at8 = at + 8 * wStride;
        r.A = w16[at];
        r.B = w16[at + 4];
        r.A8 = w16[at8];
        r.B8 = w16[at8 + 4];
        return r;
    }

    static XChunk LoadX(ArrayView<Vec16> x16, GroupLane l, int c, bool live, long xStride, int t)
    {
        XChunk r = default;
        if (!live || l.Row < 0) return r;
        long at = l.Row * xStride + c * 16L + 2 * t;
        r.V0 = x16[at];
        r.V1 = x16[at + 1];
        r.V2 = x16[at + 8];
        r.V3 = x16[at + 9];
        return r;
    }

    static SignWords LoadSigns(ArrayView<uint> signs, ArrayView<int> tab, int gr, bool live, long slotWords, long at)
    {
        SignWords r = default;
        if (!live) return r;
        int b = gr * TenantRows.MmaGroupInts + 16;
        int u0 = tab[b], u1 = tab[b + 1], u2 = tab[b + 2], u3 = tab[b + 3], u4 = tab[b + 4], u5 = tab[b + 5], u6 = tab[b + 6], u7 = tab[b + 7];
        if (u0 >= 0) r.S0 = signs[u0 * slotWords + at];
        if (u1 >= 0) r.S1 = signs[u1 * slotWords + at];
        if (u2 >= 0) r.S2 = signs[u2 * slotWords + at];
        if (u3 >= 0) r.S3 = signs[u3 * slotWords + at];
        if (u4 >= 0) r.S4 = signs[u4 * slotWords + at];
        if (u5 >= 0) r.S5 = signs[u5 * slotWords + at];
        if (u6 >= 0) r.S6 = signs[u6 * slotWords + at];
        if (u7 >= 0) r.S7 = signs[u7 * slotWords + at];
        return r;
    }

    /// <summary>The lane's x values for step s as f16 pairs: hi = f16(x), lo = f16(x − hi).</summary>
    struct XPairs
    {
        public uint H0, H1, L0, L1;
    }

    static XPairs Split(Vec16 v)
    {
        XPairs p;
        (p.H0, p.L0) = Mma.SplitPair(Interop.IntAsFloat(v.X), Interop.IntAsFloat(v.Y));
        (p.H1, p.L1) = Mma.SplitPair(Interop.IntAsFloat(v.Z), Interop.IntAsFloat(v.W));
        return p;
    }


    /// <summary>Signs for weights (p, p+1) of the lane's 16 as an f16 pair of ±1: <paramref name="m"/> holds the 16 sign
    /// bits in its low half and the same shifted down by one in its high half, so bit p and bit 16+p (= sign p+1) move
    /// to the two f16 sign bits in one shift; 0xBC00 is −1 and a set bit flips it to +1.</summary>
    static uint Signs2(uint m, int p) => ((m << (15 - p)) & 0x80008000u) ^ 0xBC00BC00u;

    /// <summary>The lane's 16 sign bits of one row from that row's two words (byte t of each), spread for <see cref="Signs2"/>.</summary>
    static uint SignBits(uint lo, uint hi, int t)
    {
        uint r = (lo >> (8 * t) & 0xFFu) | (hi >> (8 * t) & 0xFFu) << 8;
        return r | (r << 15 & 0xFFFF0000u);
    }

    static GroupAcc GroupChunk(WChunk w, XChunk xv, SignWords sw, ArrayView<int> tab, int gr, GroupLane l, GroupAcc acc, int g, int t,
                               bool tenantLow, ArrayView<float> sa, ArrayView<float> sb, int lane)
    {
        XPairs x0 = Split(xv.V0), x1 = Split(xv.V1), x2 = Split(xv.V2), x3 = Split(xv.V3);
        var d = acc.W;
        d = Mma.M16N8K16(w.A.X, w.A8.X, w.A.Y, w.A8.Y, x0.H0, x0.H1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        d = Mma.M16N8K16(w.A.X, w.A8.X, w.A.Y, w.A8.Y, x0.L0, x0.L1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        d = Mma.M16N8K16(w.A.Z, w.A8.Z, w.A.W, w.A8.W, x1.H0, x1.H1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        d = Mma.M16N8K16(w.A.Z, w.A8.Z, w.A.W, w.A8.W, x1.L0, x1.L1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        d = Mma.M16N8K16(w.B.X, w.B8.X, w.B.Y, w.B8.Y, x2.H0, x2.H1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        d = Mma.M16N8K16(w.B.X, w.B8.X, w.B.Y, w.B8.Y, x2.L0, x2.L1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        d = Mma.M16N8K16(w.B.Z, w.B8.Z, w.B.W, w.B8.W, x3.H0, x3.H1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        d = Mma.M16N8K16(w.B.Z, w.B8.Z, w.B.W, w.B8.W, x3.L0, x3.L1, d.X, d.Y, d.Z, d.W, sa, sb, lane);
        acc.W = d;

        int b = gr * TenantRows.MmaGroupInts + 16;
        var s = acc.S;
        // The same tenants for every warp of the block, so these branches are uniform.
        if (tab[b] >= 0) s = TenantMma(s, sw.S0, tab[b], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        if (tab[b + 1] >= 0) s = TenantMma(s, sw.S1, tab[b + 1], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        if (tab[b + 2] >= 0) s = TenantMma(s, sw.S2, tab[b + 2], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        if (tab[b + 3] >= 0) s = TenantMma(s, sw.S3, tab[b + 3], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        if (tab[b + 4] >= 0) s = TenantMma(s, sw.S4, tab[b + 4], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        if (tab[b + 5] >= 0) s = TenantMma(s, sw.S5, tab[b + 5], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        if (tab[b + 6] >= 0) s = TenantMma(s, sw.S6, tab[b + 6], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        if (tab[b + 7] >= 0) s = TenantMma(s, sw.S7, tab[b + 7], l.Slot, x0, x1, x2, x3, g, t, tenantLow, sa, sb, lane);
        acc.S = s;
        return acc;
    }

    /// <summary>Tenant u's term for one chunk: its signs as A, B = x with the rows of other tenants zeroed.</summary>
    static Mma.Float4 TenantMma(Mma.Float4 s, uint word, int u, int slot, XPairs x0, XPairs x1, XPairs x2, XPairs x3, int g, int t,
                                bool tenantLow, ArrayView<float> sa, ArrayView<float> sb, int lane)
    {
        uint mg = SignBits(Warp.Shuffle(word, 2 * g), Warp.Shuffle(word, 2 * g + 1), t);
        uint mg8 = SignBits(Warp.Shuffle(word, 2 * g + 16), Warp.Shuffle(word, 2 * g + 17), t);
        uint keep = slot == u ? ~0u : 0u;
        s = Mma.M16N8K16(Signs2(mg, 0), Signs2(mg8, 0), Signs2(mg, 2), Signs2(mg8, 2), x0.H0 & keep, x0.H1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
        s = Mma.M16N8K16(Signs2(mg, 4), Signs2(mg8, 4), Signs2(mg, 6), Signs2(mg8, 6), x1.H0 & keep, x1.H1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
        s = Mma.M16N8K16(Signs2(mg, 8), Signs2(mg8, 8), Signs2(mg, 10), Signs2(mg8, 10), x2.H0 & keep, x2.H1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
        s = Mma.M16N8K16(Signs2(mg, 12), Signs2(mg8, 12), Signs2(mg, 14), Signs2(mg8, 14), x3.H0 & keep, x3.H1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
        if (tenantLow)
        {
            s = Mma.M16N8K16(Signs2(mg, 0), Signs2(mg8, 0), Signs2(mg, 2), Signs2(mg8, 2), x0.L0 & keep, x0.L1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
            s = Mma.M16N8K16(Signs2(mg, 4), Signs2(mg8, 4), Signs2(mg, 6), Signs2(mg8, 6), x1.L0 & keep, x1.L1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
            s = Mma.M16N8K16(Signs2(mg, 8), Signs2(mg8, 8), Signs2(mg, 10), Signs2(mg8, 10), x2.L0 & keep, x2.L1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
            s = Mma.M16N8K16(Signs2(mg, 12), Signs2(mg8, 12), Signs2(mg, 14), Signs2(mg8, 14), x3.L0 & keep, x3.L1 & keep, s.X, s.Y, s.Z, s.W, sa, sb, lane);
        }
        return s;
    }
}

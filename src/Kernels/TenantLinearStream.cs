using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The whole decode batch in two launches, when every decode row is on the base or of a tenant with few rows
/// (<see cref="TenantRows.DecodeAllFew"/>) and there are at most <see cref="StreamMaxRows"/> of them: the base term as the base-only form computes it (TenantLinearBase.cs) and each
/// row's tenant term as the bit-serial form does (TenantLinearBits.cs), in one grid, and the last block to finish a
/// column of outputs adds up that column. Those two forms took seven launches per linear (memset, row max, planes, x
/// split, base, split sum, bit-serial) and each waited for the one before: at 4096² the chain cost more than reading W
/// (bench/NOTES.md).
/// - <see cref="StreamPrepKernel"/>: per row with a tenant, its max |x|, bit planes and Σq in blocks of 1024 inputs
///   (each block finds the row max itself, from L2, so no atomics and no memset); per row group, x split into f16 hi + lo
///   in the order the products read it; and the counters zeroed.
/// - <see cref="StreamKernel"/>: the first blocks are the base form's (4 tiles of 16 outputs over one K range, W a chunk
///   ahead), writing split partials; the rest are the bit-serial form's (a tenant row, 128 or 32 outputs), writing
///   each output's tenant term α·2^(E−31)·(2·Σ_p w_p·popc − Q). Each block then makes its writes visible device-wide
///   and counts itself in at the columns of 64 outputs and the row groups it wrote; the block that arrives last at a
///   column's row group adds its base partials in split order and its tenant terms (the CUDA threadFenceReduction pattern). Which block finishes depends on timing; what it adds and in
///   which order does not, so results are the two forms' own, bit for bit.
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Take the streamed form where it applies (the bench turns it off to compare).</summary>
    public static bool UseStream { get; set; } = true;

    /// <summary>The streamed form is taken for at most this many decode rows: its finishing blocks add up the split
    /// partials, latency that grows with the rows; on the H100 at 7B shapes it beat the bit-serial and base-only forms
    /// by 3–16% a layer at 1–8 tenants of one row, by 2% at 16, and lost 2% at 32, and on the base alone it lost ~20%
    /// at 32 rows (bench/NOTES.md).</summary>
    public static int StreamMaxRows { get; set; } = 16;

    const int StreamWarps = 4, PrepThreads = 256, SegWords = 32;

    /// <summary>The shape of one streamed call (a struct: ILGPU kernels take at most 15 parameters).</summary>
    public struct StreamShape
    {
        public int In, Out, Rows, Per, Groups, Entries, Split, Segs, TileBlocks, Mode, BitsSplit, BitsPerRow, FewBase;
    }

    static bool TakesStream(TenantRows tenants, Tensor w) =>
        UseStream && tenants.DecodeAllFew && tenants.FewBase + tenants.FewCount <= StreamMaxRows
        && (tenants.FewCount == 0 || (w.Dim(1) % 256 == 0 && w.Dim(0) % 32 == 0));

    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Device, Tensor> counterPool = new();

    /// <summary>The device's arrival counters, at least <paramref name="n"/>, all zero: zeroed once when made, and each
    /// left zero by the block that finishes its column's row group (<see cref="StreamFinish"/>), so no launch or memset
    /// clears them per call. Launches on the device's stream run in order, so one set serves every call.</summary>
    static Tensor Counters(Device dev, int n)
    {
        lock (counterPool)
        {
            if (counterPool.TryGetValue(dev, out var c) && c.Dim(0) >= n) return c;
            c?.Dispose();
            var fresh = Tensor.From(new int[Math.Max(n, 4096)], [Math.Max(n, 4096)], dev);
            counterPool.AddOrUpdate(dev, fresh);
            return fresh;
        }
    }

    /// <summary>y (+)= x·Wᵀ for the decode rows, plus α_t·x·S_tᵀ for those with a tenant (<see cref="TenantRows.FewList"/>).</summary>
    static void DecodeStream(Tensor x, Tensor w, Tensor signs, Tensor scales, TenantRows tenants, Tensor y, bool accumulate)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), chunks = inDim / 64, rows = x.Dim(0), words = inDim / 32;
        int entries = tenants.FewCount, groupCount = tenants.MmaGroupCount;
        var dev = y.Device;
        int tileBlocks = (outDim / 16 + StreamWarps - 1) / StreamWarps;
        var (split, per) = BaseSplit(dev, outDim, inDim);   // StreamWarps = BaseWarps: the base form's tiles
        int segs = (words + SegWords - 1) / SegWords;
        // The tenant rows' blocks as the bit-serial form's kernel lays them out: 4 groups of 32 outputs a block, or one
        // group with K in four pieces when that would leave the GPU short of warps.
        int bitGroups = outDim / 32, bitsSplit = (bitGroups + 3) / 4 * entries < BitsTargetWarps / 4 ? 4 : 1;
        int bitsPerRow = (bitGroups + 4 / bitsSplit - 1) / (4 / bitsSplit);
        var shape = new StreamShape
        {
            In = inDim, Out = outDim, Rows = rows, Per = per, Groups = groupCount, Entries = entries, Split = split, Segs = segs,
            TileBlocks = tileBlocks, Mode = accumulate ? 1 : 0, BitsSplit = bitsSplit, BitsPerRow = bitsPerRow, FewBase = tenants.FewBase,
        };
        bool one = groupCount == 1;
        using var xs = Tensor.Empty([groupCount * chunks * 4 * 32 * 4], DType.I32, dev);
        using var planes = Tensor.Empty([Math.Max(1, entries * Planes * words)], DType.I32, dev);
        using var meta = Tensor.Empty([(entries + entries * segs + 1) * 2], DType.I32, dev);   // longs: the row maxima, then Σq per segment
        using var basePart = Tensor.Empty([split, rows, outDim], DType.F32, dev);
        using var termPart = Tensor.Empty([Math.Max(1, entries), outDim], DType.F32, dev);
        var counters = Counters(dev, tileBlocks * groupCount);
        using var none = entries == 0 ? Tensor.Empty([2], DType.I32, dev) : null;
        var list = tenants.FewList ?? none!;
        int prepBlocks = entries * segs + groupCount * ((chunks + 1) / 2);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<Vec16>, ArrayView<uint>,
                                 ArrayView<long>, StreamShape>>(StreamPrepKernel)(
            new KernelConfig(prepBlocks, PrepThreads), x.View<Vec16>(), x.View<float>(), tenants.MmaGroups!.View<int>(), list.View<int>(),
            xs.View<Vec16>(), planes.View<uint>(), meta.View<long>(), shape);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, ArrayView<int>, ArrayView<uint>, ArrayView<Vec16>,
                                 ArrayView<uint>, ArrayView<int>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
                                 ArrayView<float>, StreamShape>>(one ? StreamOneKernel : StreamKernel)(
            new KernelConfig(tileBlocks * split + entries * bitsPerRow, StreamWarps * 32), w.View<Vec16>(), xs.View<Vec16>(),
            tenants.MmaGroups!.View<int>(), planes.View<uint>(), signs.View<Vec16>(), signs.View<uint>(), list.View<int>(),
            meta.View<long>(), scales.View<float>(), basePart.View<float>(), termPart.View<float>(), counters.View<int>(), y.View<float>(), shape);
    }

    /// <summary>
    /// Blocks [0, entries·segs): block (e, seg) finds row e's max |x| (every block of the row alike, from L2), then builds
    /// the planes of words seg·32 … seg·32 + 31 (a warp per 4 words, lane i taking input 32w + i, as BitPlanesKernel) and
    /// writes that range's Σq to meta[entries + e·segs + seg]; seg 0 writes the max's bits to meta[e]. The blocks after:
    /// per group and pair of 64-input chunks, x split as SplitXKernel does.
    /// </summary>
    static void StreamPrepKernel(ArrayView<Vec16> x16, ArrayView<float> x, ArrayView<int> groups, ArrayView<int> list, ArrayView<Vec16> xs,
                                 ArrayView<uint> planes, ArrayView<long> meta, StreamShape s)
    {
        var redMax = SharedMemory.Allocate<int>(PrepThreads / 32);
        var redQ = SharedMemory.Allocate<long>(PrepThreads / 32);
        int tid = Group.IdxX, warp = tid / 32, lane = tid % 32, chunks = s.In / 64, words = s.In / 32;
        int bitsBlocks = s.Entries * s.Segs;
        if (Grid.IdxX >= bitsBlocks)
        {
            int b = Grid.IdxX - bitsBlocks, pairs = (chunks + 1) / 2;
            int c = b % pairs * 2 + tid / 128;
            if (c < chunks) SplitX(x16, groups, xs, b / pairs, c, tid % 128 / 32, lane, s.In, chunks);
            return;
        }

        int e = Grid.IdxX / s.Segs, seg = Grid.IdxX % s.Segs;
        long xRow = list[2 * e];
        int vecs = s.In / 4;
        var xa = x16.AsAligned(16);
        int m = 0;
        for (int i = tid; i < vecs; i += 4 * PrepThreads)
        {
            // four independent loads a thread before their maxima
            Vec16 v0 = xa[xRow * vecs + i], v1 = default, v2 = default, v3 = default;
            if (i + PrepThreads < vecs) v1 = xa[xRow * vecs + i + PrepThreads];
            if (i + 2 * PrepThreads < vecs) v2 = xa[xRow * vecs + i + 2 * PrepThreads];
            if (i + 3 * PrepThreads < vecs) v3 = xa[xRow * vecs + i + 3 * PrepThreads];
            m = IntrinsicMath.Max(m, IntrinsicMath.Max(AbsBits(v0), AbsBits(v1)));
            m = IntrinsicMath.Max(m, IntrinsicMath.Max(AbsBits(v2), AbsBits(v3)));
        }
        for (int o = 16; o > 0; o /= 2) m = IntrinsicMath.Max(m, Warp.ShuffleXor(m, o));
        if (lane == 0) redMax[warp] = m;
        Group.Barrier();
        m = redMax[0];
        for (int k = 1; k < PrepThreads / 32; k++) m = IntrinsicMath.Max(m, redMax[k]);

        int exp = BitsExponent(m);
        float f = Interop.IntAsFloat((uint)(31 - exp + 127) << 23);
        bool bad = m >= 0x7F800000;
        int w0 = seg * SegWords + warp * 4;
        long at = xRow * s.In + 32L * w0 + lane;
        float f0 = w0 < words ? x[at] : 0f, f1 = w0 + 1 < words ? x[at + 32] : 0f;
        float f2 = w0 + 2 < words ? x[at + 64] : 0f, f3 = w0 + 3 < words ? x[at + 96] : 0f;
        long pAt = ((long)e * Planes + lane) * words + w0;
        long q = PlaneWord(planes, f0, f, bad, pAt, lane, w0 < words) + PlaneWord(planes, f1, f, bad, pAt + 1, lane, w0 + 1 < words)
               + PlaneWord(planes, f2, f, bad, pAt + 2, lane, w0 + 2 < words) + PlaneWord(planes, f3, f, bad, pAt + 3, lane, w0 + 3 < words);
        for (int o = 16; o > 0; o /= 2) q += Warp.ShuffleXor(q, o);
        if (lane == 0) redQ[warp] = q;
        Group.Barrier();
        if (tid == 0)
        {
            long sum = 0;
            for (int k = 0; k < PrepThreads / 32; k++) sum += redQ[k];
            meta[s.Entries + (long)e * s.Segs + seg] = sum;
            if (seg == 0) meta[e] = m;
        }
    }

    static void StreamKernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<uint> planes,
                             ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<int> list, ArrayView<long> meta, ArrayView<float> scales,
                             ArrayView<float> basePart, ArrayView<float> termPart, ArrayView<int> counters, ArrayView<float> y, StreamShape s) =>
        StreamBody(w16, xs16, groups, planes, signs16, signs, list, meta, scales, basePart, termPart, counters, y, s, false);

    /// <summary><see cref="StreamKernel"/> compiled for one row group (at most 8 decode rows): its base blocks run
    /// <see cref="BaseRange1"/>.</summary>
    static void StreamOneKernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<uint> planes,
                              ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<int> list, ArrayView<long> meta, ArrayView<float> scales,
                              ArrayView<float> basePart, ArrayView<float> termPart, ArrayView<int> counters, ArrayView<float> y, StreamShape s) =>
        StreamBody(w16, xs16, groups, planes, signs16, signs, list, meta, scales, basePart, termPart, counters, y, s, true);

    /// <summary>The streamed kernels' body; <paramref name="one"/> is a constant at each kernel (ILGPU inlines the
    /// body), so the kernel for one group holds no registers for four.</summary>
    static void StreamBody(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<uint> planes,
                           ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<int> list, ArrayView<long> meta, ArrayView<float> scales,
                           ArrayView<float> basePart, ArrayView<float> termPart, ArrayView<int> counters, ArrayView<float> y, StreamShape s, bool one)
    {
        var emu = SharedMemory.Allocate<float>(StreamWarps * 384);   // Mma's scratch where it is emulated
        var part = SharedMemory.Allocate<long>(4 * 32);
        var last = SharedMemory.Allocate<int>(2);
        int baseBlocks = s.TileBlocks * s.Split;
        if (Grid.IdxX < baseBlocks)
        {
            int tb = Grid.IdxX % s.TileBlocks;
            StreamBase(w16, xs16, groups, basePart, emu, s, one);
            for (int gr = 0; gr < (one ? 1 : s.Groups); gr++)
            {
                Arrive(counters, last, 0, tb, gr, s);
                Group.Barrier();
                if (last[0] != 0) StreamFinish(tb, gr, groups, basePart, termPart, y, counters, s);
                Group.Barrier();
            }
            return;
        }

        // A tenant row's terms for 128 outputs (or 32, K in four pieces), as the bit-serial form's kernel; then its
        // arrival at its row group in the one or two columns of 64 outputs it touches.
        int b = Grid.IdxX - baseBlocks, perBlock = 4 / s.BitsSplit, o0 = b % s.BitsPerRow * perBlock * 32;
        // 14 parameters at most: one view of the planes
        long sum = BitsSum(b, signs16, signs, planes.Cast<Vec16>(), planes, list, part, s.In, s.Out, s.BitsSplit, out int e, out int o);
        if (o >= 0)
            termPart[(long)e * s.Out + o] = (float)BitsTerm(sum, SumLongs(meta, s.Entries + (long)e * s.Segs, s.Segs), (int)meta[e], scales[list[2 * e + 1]]);
        int tb0 = o0 / 64, tb1 = IntrinsicMath.Min(s.TileBlocks - 1, (o0 + perBlock * 32 - 1) / 64);
        int ge = (s.FewBase + b / s.BitsPerRow) / 8;
        Arrive(counters, last, 0, tb0, ge, s);
        if (tb1 != tb0) Arrive(counters, last, 1, tb1, ge, s);
        Group.Barrier();
        if (last[0] != 0) StreamFinish(tb0, ge, groups, basePart, termPart, y, counters, s);
        if (tb1 != tb0 && last[1] != 0)
        {
            Group.Barrier();
            StreamFinish(tb1, ge, groups, basePart, termPart, y, counters, s);
        }
    }

    /// <summary>This block's writes made visible device-wide, then its arrival at the counter of row group
    /// <paramref name="gr"/> in column <paramref name="tb"/>; last[k] = 1 when it was the last to arrive of the column's
    /// base blocks (<see cref="StreamShape.Split"/>, each arriving at every group) and the blocks of the group's tenant
    /// rows. A counter per group, not per column: at many rows the finishing is spread over as many blocks.</summary>
    static void Arrive(ArrayView<int> counters, ArrayView<int> last, int k, int tb, int gr, StreamShape s)
    {
        MemoryFence.DeviceLevel();
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            // tenant-row blocks per entry that touch the column: one of 128 outputs, or the one or two of 32
            int touching = s.BitsSplit == 1 ? 1 : 1 + (tb * 64 + 32 < s.Out ? 1 : 0);
            // the group's entries: group positions 8·gr … 8·gr + 7 past the FewBase base rows
            int entries = IntrinsicMath.Max(0, IntrinsicMath.Min(8 * gr + 8, s.FewBase + s.Entries) - IntrinsicMath.Max(8 * gr, s.FewBase));
            int target = s.Split + entries * touching;
            last[k] = Atomic.Add(ref counters[tb * s.Groups + gr], 1) == target - 1 ? 1 : 0;
        }
    }

    /// <summary>The base term of 4 tiles of 16 outputs over one K range into this split's plane of the partial sums,
    /// 32 rows (4 groups) at a time. Every warp runs the same products (the emulated product synchronises the block), a
    /// warp past the last tile on zeros.</summary>
    static void StreamBase(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<float> basePart, ArrayView<float> emu, StreamShape s, bool one)
    {
        var w16a = w16.AsAligned(16);
        var xs = xs16.AsAligned(16);
        int lane = Warp.LaneIdx, wi = Warp.WarpIdx, g = lane >> 2, t = lane & 3;
        var sa = emu.SubView(wi * 384, 256);
        var sb = emu.SubView(wi * 384 + 256, 128);
        int chunks = s.In / 64, ks = Grid.IdxX / s.TileBlocks, tile = Grid.IdxX % s.TileBlocks * StreamWarps + wi;
        bool liveTile = tile < s.Out / 16;
        int c0 = ks * s.Per, c1 = IntrinsicMath.Min(chunks, c0 + s.Per);
        long wStride = s.In / 8, oG = (long)tile * 16 + g;
        long xGroup = (long)chunks * 128;
        long plane = (long)ks * s.Rows * s.Out;
        if (one)
        {
            var acc1 = BaseRange1(w16a, xs, oG, wStride, 0, groups[g] >= 0, c0, c1, liveTile, sa, sb, lane, t);
            if (liveTile) BaseStore(basePart, groups, 0, acc1, oG, t, s.Out, plane, 0);
            return;
        }
        for (int first = 0; first < s.Groups; first += BaseGroups)
        {
            int nG = IntrinsicMath.Min(BaseGroups, s.Groups - first);
            long xFirst = first * xGroup;
            var acc = BaseRange(w16a, xs, oG, wStride, xFirst, xGroup, nG, c0, c1, liveTile, sa, sb, lane, t);
            if (liveTile) BaseStores(basePart, groups, first, nG, acc, oG, t, s.Out, plane, 0);
        }
    }

    static long SumLongs(ArrayView<long> v, long at, int n)
    {
        long a = 0, b = 0;
        int k = 0;
        for (; k + 2 <= n; k += 2)
        {
            a += v[at + k];
            b += v[at + k + 1];
        }
        if (k < n) a += v[at + k];
        return a + b;
    }

    /// <summary>Row group <paramref name="gr"/> of column <paramref name="tb"/> (8 rows × 64 outputs), by the block that
    /// arrived last: per row, every split's base partials added in split order into y, then the row's tenant term (group
    /// position FewBase + e is entry e), as the base-only and bit-serial forms add them.</summary>
    static void StreamFinish(int tb, int gr, ArrayView<int> groups, ArrayView<float> basePart, ArrayView<float> termPart, ArrayView<float> y,
                             ArrayView<int> counters, StreamShape s)
    {
        MemoryFence.DeviceLevel();
        int o0 = tb * StreamWarps * 16, cols = StreamWarps * 16, threads = StreamWarps * 32;
        for (int j = Group.IdxX; j < 8 * cols; j += threads)
        {
            int slotJ = 8 * gr + j / cols, o = o0 + j % cols;
            long row = groups[gr * TenantRows.MmaGroupInts + j / cols];
            if (o >= s.Out || row < 0) continue;
            long at = row * s.Out + o;
            float v = SumSplits(basePart, at, (long)s.Rows * s.Out, s.Split);
            if ((s.Mode & 1) != 0) v = y[at] + v;
            if (slotJ >= s.FewBase) v += termPart[(long)(slotJ - s.FewBase) * s.Out + o];
            y[at] = v;
        }
        // every arrival at this counter has happened: leave it zero for the next call (Counters)
        if (Group.IdxX == 0) counters[tb * s.Groups + gr] = 0;
    }
}

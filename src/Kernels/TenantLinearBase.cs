using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The base term x·W_baseᵀ of the decode rows alone, on tensor cores, for batches whose tenant terms all go to the
/// bit-serial form (TenantLinearBits.cs) or that have none. The fused form (TenantLinearMma.cs) keeps one 16-output tile
/// per block with split-K inside it, loads x as f32 and splits it into f16 hi + lo in every block, and runs each 8-row
/// group's products as one dependent chain: at 16–32 rows that work and latency, not W's bytes, set its time
/// (bench/NOTES.md). Here:
/// - x is split once per call (<see cref="SplitXKernel"/>) into the exact order the products take it: per group, chunk
///   and step one 16-byte load gives a lane its hi and lo pairs;
/// - a block's warps take 4 neighbouring tiles over the same K range, so they read the same x (from L1; for 2–4 groups
///   from a ring in shared memory that the block fills once, TenantLinearBaseRing.cs);
/// - the groups' product chains are interleaved step by step, and the next step's x is loaded before this step's products;
/// - K is split across blocks so that the grid fills the GPU once (11008×4096 took two waves, the second almost empty),
///   and the partial sums are added in a fixed order by <see cref="SumSplitsKernel"/>: results do not depend on timing.
/// Accuracy as the fused form: W is exact in f16, x = hi + lo to 2⁻²², products summed in f32.
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Take this form where it applies (the bench turns it off to compare).</summary>
    public static bool UseBase { get; set; } = true;

    /// <summary>Blocks of 4 warps resident per multiprocessor that the split of K aims for (bench: --base-blocks).</summary>
    public static int BaseBlocksPerSm { get; set; } = 4;

    const int BaseWarps = 4, BaseGroups = 4;

    /// <summary>How the base form cuts K for W [<paramref name="outDim"/>, <paramref name="inDim"/>]: enough blocks of 4
    /// tiles for about <see cref="BaseBlocksPerSm"/> per multiprocessor, each at least 4 chunks of 64 inputs; Per chunks
    /// a split, and no split left without chunks. Public for the bench's read probe, which walks W the same way.
    /// <paramref name="others"/>: blocks of another kind in the same grid (the streamed form's, for one row group); then
    /// fewer splits, down to half, where that puts the whole grid in one wave, since the blocks left for a second wave
    /// set the end (4096², one tenant: 28.2 → 25.3 µs on the H100). The streamed form passes none for more groups,
    /// whose warps keep one chunk of W in flight: longer K ranges made them the long pole (base alone, 16 rows,
    /// 11008×4096: 63 → 74 µs; bench/NOTES.md).</summary>
    public static (int Split, int Per) BaseSplit(Device dev, int outDim, int inDim, int others = 0)
    {
        int slots = BaseBlocksPerSm * (dev.Accelerator?.NumMultiprocessors ?? 1), chunks = inDim / 64;
        int tileBlocks = (outDim / 16 + BaseWarps - 1) / BaseWarps;
        int split = Math.Clamp(slots / tileBlocks, 1, Math.Max(1, chunks / 4)), per = (chunks + split - 1) / split;
        split = (chunks + per - 1) / per;
        if (others < slots && others + tileBlocks * split > slots)
        {
            // never down to one split from more: a warp walking all of K then set the end (12288×4096 at 2–4 tenants, 69
            // against 61 µs at 8, where no block was left for a second wave; bench/NOTES.md)
            split = Math.Clamp((slots - others) / tileBlocks, Math.Max((split + 1) / 2, Math.Min(split, 2)), split);
            per = (chunks + split - 1) / split;
            split = (chunks + per - 1) / per;
        }
        return (split, per);
    }

    /// <summary>
    /// <see cref="TryBase"/> takes the streamed form (one launch) for at most this many rows, the base form's three
    /// launches above. A 7B decode step on the H200 (`bench model --random-7b`, ms, streamed against three launches): 1 row
    /// 6.57–6.91 against the GEMV's 9.65, 2 rows 6.89–7.00 against 7.36–7.44, 3 rows 7.33–7.52 against 7.86, 4 rows
    /// 7.56–7.58 against 7.32, 8 rows 8.06–8.16 against 7.57–7.58 (bench/NOTES.md): the streamed form's finishing blocks
    /// add up the split partials of every row, latency that grows with the rows.
    /// </summary>
    public const int BaseStreamMaxRows = 3;

    /// <summary>
    /// y (+)= x·Wᵀ for a few rows with no tenant (x f32 [rows, in], W [out, in], y f32 [rows, out]) through this base
    /// form, which reads W once for up to 8 groups of 8 rows, where it applies (an f16 W whose shape and alignment the
    /// tensor-core forms take); false where it does not, and then nothing was launched. MatMul takes it on CUDA for 1–32
    /// rows (one row only where GemvOne does not apply), where its GEMV read W once per 8 rows: the 32-row lm_head of a decode step took 4 × 330 µs, and one row ran
    /// at 0.40 of copy against the streamed form's 0.59–0.72 (bench/NOTES.md), which it takes for 1–3 rows.
    /// </summary>
    public static bool TryBase(Tensor x, Tensor w, Tensor y, bool accumulate)
    {
        if (!UseBase || x.Rank != 2 || x.Dim(0) >= PrefillMinRows || !x.Device.IsIlgpu) return false;
        if (x.Dim(0) == 1 && !UseStream) return false;   // the streamed form off (bench model --no-stream): one row to the GEMV
        using var rows = TenantRows.All(x.Dim(0), -1, x.Device);
        if (!TakesMma(rows, x, w)) return false;
        // up to BaseStreamMaxRows: the streamed form's one launch, its blocks splitting their own K range of x (the
        // multi-tenant engine's decode rows run the same); more: split, products, sums (three launches)
        if (x.Dim(0) <= BaseStreamMaxRows && TakesStream(rows, w))
        {
            DecodeStream(x, w, w, w, rows, y, accumulate);   // no tenant rows: signs and scales are never read (W stands in)
            return true;
        }
        DecodeBase(x, w, rows.MmaGroups!, rows.MmaGroupCount, y, accumulate);
        return true;
    }

    /// <summary>y (+)= x·Wᵀ for the rows of the decode groups (<see cref="TenantRows.MmaGroups"/>), base term only.</summary>
    static void DecodeBase(Tensor x, Tensor w, Tensor groups, int groupCount, Tensor y, bool accumulate, OutParts parts = default)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), chunks = inDim / 64, rows = x.Dim(0);
        var dev = y.Device;
        var (split, per) = BaseSplit(dev, outDim, inDim);
        using var xs = Tensor.Empty([groupCount * chunks * 4 * 32 * 4], DType.I32, dev);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<int>, ArrayView<Vec16>, int, int>>(SplitXKernel)(
            new KernelConfig(groupCount * chunks, 128), x.View<Vec16>(), groups.View<int>(), xs.View<Vec16>(), inDim, chunks);
        using var partial = BaseProducts(w, xs, groups, groupCount, y, rows, split, per, accumulate);
        if (partial != null) SumSplitsLaunch(partial, groups, groupCount, y, split, accumulate, baseRowsOnly: false, parts);
    }

    /// <summary>The base kernels over every 4 groups of x's split <paramref name="xs"/>: into y (one K split), or into the
    /// split partials [split, rows, out], which are returned (the caller adds them up and disposes them).</summary>
    static Tensor? BaseProducts(Tensor w, Tensor xs, Tensor groups, int groupCount, Tensor y, int rows, int split, int per, bool accumulate)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), tileBlocks = (outDim / 16 + BaseWarps - 1) / BaseWarps;
        var dev = y.Device;
        var partial = split > 1 ? Tensor.Empty([split, rows, outDim], DType.F32, dev) : null;
        for (int first = 0; first < groupCount; first += BaseGroups)
        {
            int nGroups = Math.Min(BaseGroups, groupCount - first);
            if (nGroups > 1 && BaseRing && BaseRingForm == 2)
            {
                dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, long, ArrayView<int>, ArrayView<float>, int, int, int, int, int, int>>(
                    nGroups == 2 ? BaseRing2Kernel : nGroups == 3 ? BaseRing3Kernel : BaseRing4Kernel)(
                    new KernelConfig(tileBlocks * split, BaseWarps * 32, SharedMemoryConfig.RequestDynamic<byte>(RingBytes(nGroups))),
                    w.View<Vec16>(), xs.View<Vec16>(), xs.DeviceAddress, groups.View<int>(), (partial ?? y).View<float>(), first, inDim,
                    outDim, rows, per, partial != null ? 2 : accumulate ? 1 : 0);
                continue;
            }
            if (nGroups > 1 && BaseRing)
            {
                dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, long, ArrayView<int>, ArrayView<float>, int, int, int, int, int, int, int>>(
                    BaseRingKernel)(
                    new KernelConfig(tileBlocks * split, BaseWarps * 32, SharedMemoryConfig.RequestDynamic<byte>(RingBytes(nGroups))),
                    w.View<Vec16>(), xs.View<Vec16>(), xs.DeviceAddress, groups.View<int>(), (partial ?? y).View<float>(), first, nGroups, inDim,
                    outDim, rows, per, partial != null ? 2 : accumulate ? 1 : 0);
                continue;
            }
            dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, ArrayView<int>, ArrayView<float>, int, int, int, int, int, int, int>>(
                groupCount == 1 ? BaseOneKernel : BaseKernel)(
                new KernelConfig(tileBlocks * split, BaseWarps * 32), w.View<Vec16>(), xs.View<Vec16>(), groups.View<int>(),
                (partial ?? y).View<float>(), first, nGroups, inDim, outDim, rows, per,
                partial != null ? 2 : accumulate ? 1 : 0);
        }
        return partial;
    }

    /// <summary>y (+)= the split partials' sum for every row of the groups, or only for the rows on the base.</summary>
    static void SumSplitsLaunch(Tensor partial, Tensor groups, int groupCount, Tensor y, int split, bool accumulate, bool baseRowsOnly, OutParts parts = default)
    {
        int rows = partial.Dim(1), outDim = partial.Dim(2);
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, int, OutParts>>(SumSplitsKernel)(
            new KernelConfig((groupCount * 8 * outDim + 255) / 256, 256), partial.View<float>(), groups.View<int>(), y.View<float>(),
            groupCount * 8, rows, outDim, split | (accumulate ? 1 << 16 : 0) | (baseRowsOnly ? 1 << 17 : 0), parts);
    }

    /// <summary>Thread (group, chunk, step s, lane (g, t)): the 4 inputs of the lane's step-s pairs from group row g,
    /// split into (hi pair 0, hi pair 1, lo pair 0, lo pair 1), at [group][chunk][s][lane]. The inputs are the fused
    /// form's (TenantLinearMma.cs class comment): step s takes x16 at 16c + 2t + {0, 1, 8, 9}[s].</summary>
    static void SplitXKernel(ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<Vec16> xs, int inDim, int chunks)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        int gc = Grid.IdxX;
        SplitX(x16, groups, xs, gc / chunks, gc % chunks, Group.IdxX / 32, Group.IdxX % 32, inDim, chunks);
    }

    /// <summary>Group <paramref name="gr"/>, chunk <paramref name="c"/>, step <paramref name="s"/>, lane (g, t)'s
    /// entry of the split x (<see cref="SplitXKernel"/>).</summary>
    static void SplitX(ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<Vec16> xs, int gr, int c, int s, int lane, int inDim, int chunks)
    {
        long row = groups[gr * TenantRows.MmaGroupInts + (lane >> 2)];
        SplitXStore(xs, SplitXLoad(x16, row, c, s, lane & 3, inDim), row, gr, c, s, lane, chunks);
    }

    /// <summary>The four f32 inputs that <see cref="SplitX"/> splits for step s, lane (·, t) of chunk c of x's row
    /// <paramref name="row"/> (zeros for row −1).</summary>
    static Vec16 SplitXLoad(ArrayView<Vec16> x16, long row, int c, int s, int t, int inDim) =>
        row < 0 ? default : x16.AsAligned(16)[row * (inDim / 4) + c * 16L + 2 * t + (s & 1) + (s >> 1) * 8];

    /// <summary>Those inputs as (hi pair 0, hi pair 1, lo pair 0, lo pair 1) at their place in xs.</summary>
    static void SplitXStore(ArrayView<Vec16> xs, Vec16 v, long row, int gr, int c, int s, int lane, int chunks)
    {
        xs.AsAligned(16)[(((long)gr * chunks + c) * 4 + s) * 32 + lane] = row >= 0 ? SplitVec(v) : default;
    }

    /// <summary>Four f32 inputs (as bits) as (hi pair 0, hi pair 1, lo pair 0, lo pair 1).</summary>
    static Vec16 SplitVec(Vec16 v)
    {
        Vec16 r;
        (r.X, r.Z) = Mma.SplitPair(Interop.IntAsFloat(v.X), Interop.IntAsFloat(v.Y));
        (r.Y, r.W) = Mma.SplitPair(Interop.IntAsFloat(v.Z), Interop.IntAsFloat(v.W));
        return r;
    }

    /// <summary>The four groups' accumulators of one warp.</summary>
    struct BaseAcc
    {
        public Mma.Float4 G0, G1, G2, G3;
    }

    /// <summary>The four groups' x for one step.</summary>
    struct BaseX
    {
        public Vec16 G0, G1, G2, G3;
    }

    static void BaseKernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<float> y, int first, int nGroups,
                           int inDim, int outDim, int rows, int per, int mode) =>
        BaseBody(w16, xs16, groups, y, first, nGroups, inDim, outDim, rows, per, mode, false);

    /// <summary><see cref="BaseKernel"/> compiled for one group (<see cref="BaseRange1"/>).</summary>
    static void BaseOneKernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<float> y, int first, int nGroups,
                            int inDim, int outDim, int rows, int per, int mode) =>
        BaseBody(w16, xs16, groups, y, first, nGroups, inDim, outDim, rows, per, mode, true);

    /// <summary>The base kernels' body; <paramref name="one"/> is a constant at each kernel, so the other path is not
    /// compiled into it (ILGPU inlines the body).</summary>
    static void BaseBody(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<float> y, int first, int nGroups,
                         int inDim, int outDim, int rows, int per, int mode, bool one)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        var emu = SharedMemory.Allocate<float>(BaseWarps * 384);   // Mma's scratch where it is emulated
        var w16a = w16.AsAligned(16);
        var xs = xs16.AsAligned(16);
        int lane = Warp.LaneIdx, wi = Warp.WarpIdx, g = lane >> 2, t = lane & 3;
        var sa = emu.SubView(wi * 384, 256);
        var sb = emu.SubView(wi * 384 + 256, 128);
        int chunks = inDim / 64, tileBlocks = (outDim / 16 + BaseWarps - 1) / BaseWarps;
        int ks = Grid.IdxX / tileBlocks, tile = Grid.IdxX % tileBlocks * BaseWarps + wi;
        bool liveTile = tile < outDim / 16;
        int c0 = ks * per, c1 = IntrinsicMath.Min(chunks, c0 + per);
        long wStride = inDim / 8, oG = (long)tile * 16 + g;
        long xGroup = (long)chunks * 128;   // Vec16 per group in xs
        long xFirst = (long)first * xGroup;

        // mode: bit 0 accumulate into y; bit 1 write split ks's plane of the partial sums ([split, rows, out]).
        long plane = (mode & 2) != 0 ? (long)ks * rows * outDim : 0;
        int accumulate = mode & 1;
        if (one)
        {
            bool xLive = groups[first * TenantRows.MmaGroupInts + g] >= 0;
            var place = new XPlace { At = xFirst + lane, Cs = 128, Ss = 32 };
            var acc1 = BaseRange1(w16a, xs, place, oG, wStride, xLive, c0, c1, liveTile, sa, sb, lane, t, groups, 0, false, xs, groups, inDim);
            if (liveTile) BaseStore(y, groups, first, acc1, oG, t, outDim, plane, accumulate);
            return;
        }
        var acc = BaseRange(w16a, xs, oG, wStride, xFirst, xGroup, nGroups, c0, c1, liveTile, sa, sb, lane, t, groups, 0);
        if (!liveTile) return;
        BaseStores(y, groups, first, nGroups, acc, oG, t, outDim, plane, accumulate);
    }

    /// <summary><see cref="BaseStore"/> for each of the warp's groups.</summary>
    static void BaseStores(ArrayView<float> y, ArrayView<int> groups, int first, int nGroups, BaseAcc acc, long oG, int t, int outDim, long at, int accumulate)
    {
        BaseStore(y, groups, first, acc.G0, oG, t, outDim, at, accumulate);
        if (nGroups > 1) BaseStore(y, groups, first + 1, acc.G1, oG, t, outDim, at, accumulate);
        if (nGroups > 2) BaseStore(y, groups, first + 2, acc.G2, oG, t, outDim, at, accumulate);
        if (nGroups > 3) BaseStore(y, groups, first + 3, acc.G3, oG, t, outDim, at, accumulate);
    }

    /// <summary>One warp's base products for 16 outputs (rows oG and oG + 8 of W by lane) over chunks c0 … c1 − 1 and up
    /// to 4 groups of x from <paramref name="xFirst"/>: W one chunk ahead, each step's x loaded before the step before
    /// it runs. Every warp of the block runs the same steps (the emulated product synchronises the block); a warp past
    /// the last tile (<paramref name="liveTile"/> false) multiplies zeros. With <paramref name="epoch"/> ≠ 0 (the
    /// streamed form) x is made in the same grid: the warp waits for it (<see cref="WaitReady"/>) after its first W loads
    /// are out.</summary>
    static BaseAcc BaseRange(ArrayView<Vec16> w16a, ArrayView<Vec16> xs, long oG, long wStride, long xFirst, long xGroup, int nGroups, int c0, int c1,
                             bool liveTile, ArrayView<float> sa, ArrayView<float> sb, int lane, int t, ArrayView<int> ready, int epoch)
    {
        var acc = default(BaseAcc);
        var next = LoadW(w16a, oG, wStride, c0, liveTile && c0 < c1, t);
        WaitReady(ready, epoch);
        var xn = LoadBaseX(xs, xFirst + (long)c0 * 128 + lane, xGroup, nGroups, c0 < c1);
        for (int c = c0; c < c1; c++)
        {
            var cur = next;
            next = LoadW(w16a, oG, wStride, c + 1, liveTile && c + 1 < c1, t);
            long at = xFirst + (long)c * 128 + lane;
            var xv = xn;
            xn = LoadBaseX(xs, at + 32, xGroup, nGroups, true);
            acc = BaseStep(acc, cur.A.X, cur.A8.X, cur.A.Y, cur.A8.Y, xv, nGroups, sa, sb, lane);
            xv = xn;
            xn = LoadBaseX(xs, at + 64, xGroup, nGroups, true);
            acc = BaseStep(acc, cur.A.Z, cur.A8.Z, cur.A.W, cur.A8.W, xv, nGroups, sa, sb, lane);
            xv = xn;
            xn = LoadBaseX(xs, at + 96, xGroup, nGroups, true);
            acc = BaseStep(acc, cur.B.X, cur.B8.X, cur.B.Y, cur.B8.Y, xv, nGroups, sa, sb, lane);
            xv = xn;
            xn = LoadBaseX(xs, at + 128, xGroup, nGroups, c + 1 < c1);
            acc = BaseStep(acc, cur.B.Z, cur.B8.Z, cur.B.W, cur.B8.W, xv, nGroups, sa, sb, lane);
        }
        return acc;
    }

    /// <summary>The x of one group for a whole chunk: steps 0–3 of the lane.</summary>
    struct ChunkX
    {
        public Vec16 S0, S1, S2, S3;
    }

    /// <summary>A group's x for one chunk: steps 0–3 of the lane at <paramref name="at"/>, + ss, + 2ss, + 3ss.</summary>
    static ChunkX LoadChunkX(ArrayView<Vec16> xs, long at, int ss, bool live)
    {
        ChunkX r = default;
        if (!live) return r;
        r.S0 = xs[at];
        r.S1 = xs[at + ss];
        r.S2 = xs[at + 2 * ss];
        r.S3 = xs[at + 3 * ss];
        return r;
    }

    /// <summary>Where x comes from for <see cref="BaseRange1"/>: chunk c's step s of the lane at X[At + c·Cs + s·Ss]. The
    /// split launch's xs: At = group start + lane, Cs = 128, Ss = 32. A block's own split in shared memory
    /// (<see cref="SplitXShared"/>): only the group's Live rows, At = 4g + t − c0·Cs, Cs = 16·Live, Ss = 4·Live.</summary>
    struct XPlace
    {
        public long At;
        public int Cs, Ss;
    }

    /// <summary><see cref="BaseRange"/> for one group of x (at most 8 rows), the common decode batch, in a kernel
    /// compiled for it alone: with one group the registers <see cref="BaseRange"/> holds for four are free, so W is
    /// read 3 chunks ahead (w0–w2) and x a whole chunk ahead, and lanes whose row of the group is absent
    /// (<paramref name="xLive"/> false) load no x: the products see zeros. At one row the four-group loop spent ~70% of
    /// its warps' time waiting on its loads (bench/NOTES.md). x is split by a launch before, or in the same grid
    /// (<paramref name="epoch"/> ≠ 0: wait for it, <see cref="WaitReady"/>), or by this block into shared memory
    /// (<paramref name="own"/>: <see cref="SplitXShared"/>, with x16 and groups), each after W's first chunks are out.
    /// Splitting it in every warp instead made the kernel 30–50% slower (f16 conversions, repeated by every tile and
    /// every row slot). Same products in the same order, so the same sums bit for bit.</summary>
    static Mma.Float4 BaseRange1(ArrayView<Vec16> w16a, ArrayView<Vec16> xs, XPlace xp, long oG, long wStride, bool xLive, int c0, int c1,
                                 bool liveTile, ArrayView<float> sa, ArrayView<float> sb, int lane, int t, ArrayView<int> ready, int epoch,
                                 bool own, ArrayView<Vec16> x16, ArrayView<int> groups, int inDim)
    {
        Mma.Float4 acc = default;
        var w0 = LoadW(w16a, oG, wStride, c0, liveTile && c0 < c1, t);
        var w1 = LoadW(w16a, oG, wStride, c0 + 1, liveTile && c0 + 1 < c1, t);
        var w2 = LoadW(w16a, oG, wStride, c0 + 2, liveTile && c0 + 2 < c1, t);
        if (own) SplitXShared(x16, groups, xs, xp.Ss / 4, c0, c1, inDim);
        else WaitReady(ready, epoch);   // the streamed form's x is made in its grid: W's first chunks are on their way meanwhile
        var xn = LoadChunkX(xs, xp.At + (long)c0 * xp.Cs, xp.Ss, xLive && c0 < c1);
        for (int c = c0; c < c1; c++)
        {
            var cur = w0;
            w0 = w1;
            w1 = w2;
            w2 = LoadW(w16a, oG, wStride, c + 3, liveTile && c + 3 < c1, t);
            var xv = xn;
            xn = LoadChunkX(xs, xp.At + (long)(c + 1) * xp.Cs, xp.Ss, xLive && c + 1 < c1);
            acc = Step1(acc, cur.A.X, cur.A8.X, cur.A.Y, cur.A8.Y, xv.S0, sa, sb, lane);
            acc = Step1(acc, cur.A.Z, cur.A8.Z, cur.A.W, cur.A8.W, xv.S1, sa, sb, lane);
            acc = Step1(acc, cur.B.X, cur.B8.X, cur.B.Y, cur.B8.Y, xv.S2, sa, sb, lane);
            acc = Step1(acc, cur.B.Z, cur.B8.Z, cur.B.W, cur.B8.W, xv.S3, sa, sb, lane);
        }
        return acc;
    }

    /// <summary>The block's K range (chunks c0 … c1 − 1) of the group's first <paramref name="live"/> rows, split into f16
    /// hi + lo as <see cref="SplitXKernel"/> does, into shared memory at [c − c0][step][g][t] (the place
    /// <see cref="XPlace"/> describes): one conversion per input and row for the block's four warps, no wait on
    /// another block. Four loads a thread go out before their stores. Every thread of the block must call it.</summary>
    static void SplitXShared(ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<Vec16> sh, int live, int c0, int c1, int inDim)
    {
        int n = (c1 - c0) * 16 * live, per = 16 * live, step = 4 * live;
        for (int i = Group.IdxX; i < n; i += 4 * Group.DimX)
        {
            var v0 = SharedSplitLoad(x16, groups, i, per, step, c0, n, inDim);
            var v1 = SharedSplitLoad(x16, groups, i + Group.DimX, per, step, c0, n, inDim);
            var v2 = SharedSplitLoad(x16, groups, i + 2 * Group.DimX, per, step, c0, n, inDim);
            var v3 = SharedSplitLoad(x16, groups, i + 3 * Group.DimX, per, step, c0, n, inDim);
            SharedSplitStore(sh, v0, i, n);
            SharedSplitStore(sh, v1, i + Group.DimX, n);
            SharedSplitStore(sh, v2, i + 2 * Group.DimX, n);
            SharedSplitStore(sh, v3, i + 3 * Group.DimX, n);
        }
        Group.Barrier();
    }

    static Vec16 SharedSplitLoad(ArrayView<Vec16> x16, ArrayView<int> groups, int i, int per, int step, int c0, int n, int inDim)
    {
        if (i >= n) return default;
        int c = c0 + i / per, s = i % per / step, gt = i % step;
        return SplitXLoad(x16, groups[gt >> 2], c, s, gt & 3, inDim);
    }

    static void SharedSplitStore(ArrayView<Vec16> sh, Vec16 v, int i, int n)
    {
        if (i < n) sh[i] = SplitVec(v);
    }

    /// <summary><see cref="BaseStep"/> for one group: the hi product, then the lo one.</summary>
    static Mma.Float4 Step1(Mma.Float4 acc, uint a0, uint a1, uint a2, uint a3, Vec16 x, ArrayView<float> sa, ArrayView<float> sb, int lane)
    {
        acc = Mma.M16N8K16(a0, a1, a2, a3, x.X, x.Y, acc.X, acc.Y, acc.Z, acc.W, sa, sb, lane);
        return Mma.M16N8K16(a0, a1, a2, a3, x.Z, x.W, acc.X, acc.Y, acc.Z, acc.W, sa, sb, lane);
    }

    static BaseX LoadBaseX(ArrayView<Vec16> xs, long at, long xGroup, int nGroups, bool live)
    {
        BaseX r = default;
        if (!live) return r;
        r.G0 = xs[at];
        if (nGroups > 1) r.G1 = xs[at + xGroup];
        if (nGroups > 2) r.G2 = xs[at + 2 * xGroup];
        if (nGroups > 3) r.G3 = xs[at + 3 * xGroup];
        return r;
    }

    /// <summary>One 16-wide step for every group: the hi products of all groups, then the lo ones, so that a group's two
    /// dependent products have the others' between them.</summary>
    static BaseAcc BaseStep(BaseAcc acc, uint a0, uint a1, uint a2, uint a3, BaseX x, int nGroups, ArrayView<float> sa, ArrayView<float> sb, int lane)
    {
        acc.G0 = Mma.M16N8K16(a0, a1, a2, a3, x.G0.X, x.G0.Y, acc.G0.X, acc.G0.Y, acc.G0.Z, acc.G0.W, sa, sb, lane);
        if (nGroups > 1) acc.G1 = Mma.M16N8K16(a0, a1, a2, a3, x.G1.X, x.G1.Y, acc.G1.X, acc.G1.Y, acc.G1.Z, acc.G1.W, sa, sb, lane);
        if (nGroups > 2) acc.G2 = Mma.M16N8K16(a0, a1, a2, a3, x.G2.X, x.G2.Y, acc.G2.X, acc.G2.Y, acc.G2.Z, acc.G2.W, sa, sb, lane);
        if (nGroups > 3) acc.G3 = Mma.M16N8K16(a0, a1, a2, a3, x.G3.X, x.G3.Y, acc.G3.X, acc.G3.Y, acc.G3.Z, acc.G3.W, sa, sb, lane);
        acc.G0 = Mma.M16N8K16(a0, a1, a2, a3, x.G0.Z, x.G0.W, acc.G0.X, acc.G0.Y, acc.G0.Z, acc.G0.W, sa, sb, lane);
        if (nGroups > 1) acc.G1 = Mma.M16N8K16(a0, a1, a2, a3, x.G1.Z, x.G1.W, acc.G1.X, acc.G1.Y, acc.G1.Z, acc.G1.W, sa, sb, lane);
        if (nGroups > 2) acc.G2 = Mma.M16N8K16(a0, a1, a2, a3, x.G2.Z, x.G2.W, acc.G2.X, acc.G2.Y, acc.G2.Z, acc.G2.W, sa, sb, lane);
        if (nGroups > 3) acc.G3 = Mma.M16N8K16(a0, a1, a2, a3, x.G3.Z, x.G3.W, acc.G3.X, acc.G3.Y, acc.G3.Z, acc.G3.W, sa, sb, lane);
        return acc;
    }

    /// <summary>D's four values of one group: outputs oG and oG + 8 of the group's rows 2t and 2t + 1, at y[at + row·out + o]
    /// (at: this split's plane of the partial sums, or 0 for y itself).</summary>
    static void BaseStore(ArrayView<float> y, ArrayView<int> groups, int gr, Mma.Float4 d, long oG, int t, int outDim, long at, int accumulate)
    {
        int b = gr * TenantRows.MmaGroupInts;
        long r0 = groups[b + 2 * t], r1 = groups[b + 2 * t + 1];
        if (r0 >= 0)
        {
            Put(y, at + r0 * outDim + oG, d.X, accumulate);
            Put(y, at + r0 * outDim + oG + 8, d.Z, accumulate);
        }
        if (r1 >= 0)
        {
            Put(y, at + r1 * outDim + oG, d.Y, accumulate);
            Put(y, at + r1 * outDim + oG + 8, d.W, accumulate);
        }
    }

    /// <summary>y[row, o] (+)= Σ over splits of partial[split, row, o], in split order, for every row of the groups (mode:
    /// the split count, bit 16 accumulate, bit 17 only the rows on the base, whose slot in the group table is −1); y's
    /// place of (row, o) as <paramref name="parts"/> lays it out.</summary>
    static void SumSplitsKernel(ArrayView<float> partial, ArrayView<int> groups, ArrayView<float> y, int slots, int rows, int outDim, int mode, OutParts parts)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        long i = Grid.GlobalIndex.X;
        if (i >= (long)slots * outDim) return;
        int j = (int)(i / outDim), o = (int)(i % outDim), split = mode & 0xFFFF;
        long row = groups[j / 8 * TenantRows.MmaGroupInts + j % 8];
        if (row < 0 || ((mode & 1 << 17) != 0 && groups[j / 8 * TenantRows.MmaGroupInts + 8 + j % 8] >= 0)) return;
        Put(y, PartAt(parts, o, row, rows, outDim), SumSplits(partial, row * outDim + o, (long)rows * outDim, split), (mode >> 16) & 1);
    }

    /// <summary>Σ_k part[at + k·stride] for k &lt; n, added in k order; four loads issued before their sums (a sum's
    /// time is latency, not bandwidth: the streamed form's finishing blocks run many in a row).</summary>
    static float SumSplits(ArrayView<float> part, long at, long stride, int n)
    {
        float sum = 0;
        int k = 0;
        for (; k + 4 <= n; k += 4)
        {
            float a = part[at + k * stride], b = part[at + (k + 1) * stride], c = part[at + (k + 2) * stride], d = part[at + (k + 3) * stride];
            sum += a;
            sum += b;
            sum += c;
            sum += d;
        }
        for (; k < n; k++) sum += part[at + k * stride];
        return sum;
    }
}

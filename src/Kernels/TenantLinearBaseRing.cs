using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The base form's products for two to four groups of x (9–32 decode rows) with x through a ring in shared memory.
/// <see cref="BaseRange"/> loads each step's x from global memory one step before its products, 8 KB a chunk a warp
/// for 2 KB of W, and Nsight Compute's stall samples put half of its time on the products waiting for those loads
/// (4096², 32 tenants of one row on the H200: 22.3 µs, DRAM 33%, the first product of every other step holding 954 of
/// 2189 samples; bench/NOTES.md). Here the block's 128 threads copy each chunk's x of all its groups once (16 bytes a
/// thread a group) with <c>cp.async</c> (PTX ISA §9.7.9.25) <see cref="RingStages"/> − 1 chunks ahead, so the four warps
/// read it from shared memory, and the registers that held x a step ahead hold W a second chunk ahead. The products are
/// <see cref="BaseStep"/>'s in the same order: the same sums bit for bit.
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Take the ring form for two to four groups (the bench turns it off to compare).</summary>
    public static bool BaseRing { get; set; } = true;

    /// <summary>Which ring form takes them: 1, <see cref="BaseRingKernel"/> (the group count a parameter, the chunk loop
    /// rolled; measured on the H200, bench/NOTES.md); 2, <see cref="BaseRing2Kernel"/> … 4 (one kernel a group count, the
    /// loop unrolled by the ring's stages: 180 instructions a chunk in ptxas's SASS against 331, not yet timed). The bench
    /// sets it (<c>--base-ring-form</c>) to compare them in one run.</summary>
    public static int BaseRingForm { get; set; } = 1;

    const int RingStages = 3;

    /// <summary>Shared bytes of the ring for <paramref name="groups"/> groups: a stage is a chunk of each group's split x
    /// (128 16-byte entries: 4 steps × 32 lanes).</summary>
    static int RingBytes(int groups) => RingStages * groups * 128 * 16;

    /// <summary>As <see cref="BaseKernel"/>, x through the ring; <paramref name="xsAt"/> is xs's device address (for
    /// cp.async).</summary>
    [PromoteLocals]
    static void BaseRingKernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, long xsAt, ArrayView<int> groups, ArrayView<float> y, int first,
                               int nGroups, int inDim, int outDim, int rows, int per, int mode)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        var emu = SharedMemory.Allocate<float>(BaseWarps * 384);   // Mma's scratch where it is emulated
        var ringWords = SharedMemory.GetDynamic<uint>();   // as the emulated copy writes it
        var ring = ringWords.Cast<Vec16>().AsAligned(16);
        uint ringAt = Bulk.Dynamic(0);
        var w16a = w16.AsAligned(16);
        int tid = Group.IdxX, lane = Warp.LaneIdx, wi = Warp.WarpIdx, g = lane >> 2, t = lane & 3;
        var sa = emu.SubView(wi * 384, 256);
        var sb = emu.SubView(wi * 384 + 256, 128);
        int chunks = inDim / 64, tileBlocks = (outDim / 16 + BaseWarps - 1) / BaseWarps;
        int ks = Grid.IdxX / tileBlocks, tile = Grid.IdxX % tileBlocks * BaseWarps + wi;
        bool liveTile = tile < outDim / 16;
        int c0 = ks * per, n = IntrinsicMath.Min(chunks, c0 + per) - c0, stageVecs = nGroups * 128;
        long wStride = inDim / 8, oG = (long)tile * 16 + g, xGroup = (long)chunks * 128, xFirst = (long)first * xGroup;

        var w0 = LoadW(w16a, oG, wStride, c0, liveTile && n > 0, t);
        var w1 = LoadW(w16a, oG, wStride, c0 + 1, liveTile && n > 1, t);
        for (int s = 0; s < RingStages - 1; s++)
        {
            if (s < n) RingIssue(xs16, xsAt, xFirst + (long)(c0 + s) * 128 + tid, xGroup, nGroups, ringWords, ringAt, s * stageVecs + tid);
            GemmHalf.Commit();
        }
        var acc = default(BaseAcc);
        for (int i = 0; i < n; i++)
        {
            var cur = w0;
            w0 = w1;
            w1 = LoadW(w16a, oG, wStride, c0 + i + 2, liveTile && i + 2 < n, t);
            // this thread's copies of chunk i have landed; the barrier makes the block's visible and tells that every warp
            // is done with chunk i − 1, whose stage the next issue refills
            GemmHalf.WaitAllButNewest();
            Group.Barrier();
            int next = i + RingStages - 1;
            if (next < n)
                RingIssue(xs16, xsAt, xFirst + (long)(c0 + next) * 128 + tid, xGroup, nGroups, ringWords, ringAt, next % RingStages * stageVecs + tid);
            GemmHalf.Commit();
            int st = i % RingStages * stageVecs + lane;
            acc = BaseStep(acc, cur.A.X, cur.A8.X, cur.A.Y, cur.A8.Y, LoadBaseX(ring, st, 128, nGroups, true), nGroups, sa, sb, lane);
            acc = BaseStep(acc, cur.A.Z, cur.A8.Z, cur.A.W, cur.A8.W, LoadBaseX(ring, st + 32, 128, nGroups, true), nGroups, sa, sb, lane);
            acc = BaseStep(acc, cur.B.X, cur.B8.X, cur.B.Y, cur.B8.Y, LoadBaseX(ring, st + 64, 128, nGroups, true), nGroups, sa, sb, lane);
            acc = BaseStep(acc, cur.B.Z, cur.B8.Z, cur.B.W, cur.B8.W, LoadBaseX(ring, st + 96, 128, nGroups, true), nGroups, sa, sb, lane);
        }
        if (!liveTile) return;
        long plane = (mode & 2) != 0 ? (long)ks * rows * outDim : 0;
        BaseStores(y, groups, first, nGroups, acc, oG, t, outDim, plane, mode & 1);
    }

    /// <summary>The second form (<see cref="BaseRingForm"/> 2) for 2 groups: one kernel a group count, so that the products of
    /// absent groups are not compiled in rather than branched around (the first form, the count a parameter, ran 321
    /// instructions a warp a chunk on the H200, 64 of them branches and their padding around its 32 products).</summary>
    [PromoteLocals]
    static void BaseRing2Kernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, long xsAt, ArrayView<int> groups, ArrayView<float> y, int first,
                                int inDim, int outDim, int rows, int per, int mode) =>
        BaseRingBody(w16, xs16, xsAt, groups, y, first, 2, inDim, outDim, rows, per, mode);

    /// <summary><see cref="BaseRing2Kernel"/> for 3 groups.</summary>
    [PromoteLocals]
    static void BaseRing3Kernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, long xsAt, ArrayView<int> groups, ArrayView<float> y, int first,
                                int inDim, int outDim, int rows, int per, int mode) =>
        BaseRingBody(w16, xs16, xsAt, groups, y, first, 3, inDim, outDim, rows, per, mode);

    /// <summary><see cref="BaseRing2Kernel"/> for 4 groups.</summary>
    [PromoteLocals]
    static void BaseRing4Kernel(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, long xsAt, ArrayView<int> groups, ArrayView<float> y, int first,
                                int inDim, int outDim, int rows, int per, int mode) =>
        BaseRingBody(w16, xs16, xsAt, groups, y, first, 4, inDim, outDim, rows, per, mode);

    /// <summary>The ring kernels' body (<paramref name="nGroups"/> a constant at each). The chunk loop is unrolled by the
    /// ring's 3 stages: chunk i + k takes stage k and W's buffer k, which is reloaded 3 chunks ahead after its products, so
    /// no registers are moved from buffer to buffer (the rolled loop moved 32 a chunk).</summary>
    static void BaseRingBody(ArrayView<Vec16> w16, ArrayView<Vec16> xs16, long xsAt, ArrayView<int> groups, ArrayView<float> y, int first,
                             int nGroups, int inDim, int outDim, int rows, int per, int mode)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        var emu = SharedMemory.Allocate<float>(BaseWarps * 384);   // Mma's scratch where it is emulated
        var ringWords = SharedMemory.GetDynamic<uint>();   // as the emulated copy writes it
        var ring = ringWords.Cast<Vec16>().AsAligned(16);
        uint ringAt = Bulk.Dynamic(0);
        var w16a = w16.AsAligned(16);
        int tid = Group.IdxX, lane = Warp.LaneIdx, wi = Warp.WarpIdx, g = lane >> 2, t = lane & 3;
        var sa = emu.SubView(wi * 384, 256);
        var sb = emu.SubView(wi * 384 + 256, 128);
        int chunks = inDim / 64, tileBlocks = (outDim / 16 + BaseWarps - 1) / BaseWarps;
        int ks = Grid.IdxX / tileBlocks, tile = Grid.IdxX % tileBlocks * BaseWarps + wi;
        bool liveTile = tile < outDim / 16;
        int c0 = ks * per, n = IntrinsicMath.Min(chunks, c0 + per) - c0, stageVecs = nGroups * 128;
        long wStride = inDim / 8, oG = (long)tile * 16 + g, xGroup = (long)chunks * 128;
        long xAt = (long)first * xGroup + (long)c0 * 128 + tid;   // this thread's entry of the first chunk of group 0

        var wa = LoadW(w16a, oG, wStride, c0, liveTile && n > 0, t);
        var wb = LoadW(w16a, oG, wStride, c0 + 1, liveTile && n > 1, t);
        var wc = LoadW(w16a, oG, wStride, c0 + 2, liveTile && n > 2, t);
        for (int s = 0; s < RingStages - 1; s++)
        {
            if (s < n) RingIssue(xs16, xsAt, xAt + s * 128L, xGroup, nGroups, ringWords, ringAt, s * stageVecs + tid);
            GemmHalf.Commit();
        }
        var acc = default(BaseAcc);
        for (int i = 0; i < n; i += RingStages)
        {
            acc = RingChunk(acc, wa, ring, ringWords, ringAt, xs16, xsAt, xAt, xGroup, nGroups, stageVecs, i, 0, n, tid, lane, sa, sb);
            wa = LoadW(w16a, oG, wStride, c0 + i + 3, liveTile && i + 3 < n, t);
            if (i + 1 < n)
            {
                acc = RingChunk(acc, wb, ring, ringWords, ringAt, xs16, xsAt, xAt, xGroup, nGroups, stageVecs, i + 1, 1, n, tid, lane, sa, sb);
                wb = LoadW(w16a, oG, wStride, c0 + i + 4, liveTile && i + 4 < n, t);
            }
            if (i + 2 < n)
            {
                acc = RingChunk(acc, wc, ring, ringWords, ringAt, xs16, xsAt, xAt, xGroup, nGroups, stageVecs, i + 2, 2, n, tid, lane, sa, sb);
                wc = LoadW(w16a, oG, wStride, c0 + i + 5, liveTile && i + 5 < n, t);
            }
        }
        if (!liveTile) return;
        long plane = (mode & 2) != 0 ? (long)ks * rows * outDim : 0;
        BaseStores(y, groups, first, nGroups, acc, oG, t, outDim, plane, mode & 1);
    }

    /// <summary>Chunk <paramref name="i"/> of the block's range, whose x is in ring stage <paramref name="stage"/> (= i mod
    /// 3): wait for it, refill the stage chunk i − 1 left (chunk i + 2), and run the four steps' products with W's chunk
    /// <paramref name="w"/>.</summary>
    static BaseAcc RingChunk(BaseAcc acc, WChunk w, ArrayView<Vec16> ring, ArrayView<uint> ringWords, uint ringAt, ArrayView<Vec16> xs16, long xsAt,
                             long xAt, long xGroup, int nGroups, int stageVecs, int i, int stage, int n, int tid, int lane,
                             ArrayView<float> sa, ArrayView<float> sb)
    {
        // this thread's copies of chunk i have landed; the barrier makes the block's visible and tells that every warp is
        // done with chunk i − 1, whose stage the next issue refills
        GemmHalf.WaitAllButNewest();
        Group.Barrier();
        if (i + RingStages - 1 < n)
            RingIssue(xs16, xsAt, xAt + (i + RingStages - 1) * 128L, xGroup, nGroups, ringWords, ringAt, (stage + RingStages - 1) % RingStages * stageVecs + tid);
        GemmHalf.Commit();
        int st = stage * stageVecs + lane;
        acc = BaseStep(acc, w.A.X, w.A8.X, w.A.Y, w.A8.Y, LoadBaseX(ring, st, 128, nGroups, true), nGroups, sa, sb, lane);
        acc = BaseStep(acc, w.A.Z, w.A8.Z, w.A.W, w.A8.W, LoadBaseX(ring, st + 32, 128, nGroups, true), nGroups, sa, sb, lane);
        acc = BaseStep(acc, w.B.X, w.B8.X, w.B.Y, w.B8.Y, LoadBaseX(ring, st + 64, 128, nGroups, true), nGroups, sa, sb, lane);
        return BaseStep(acc, w.B.Z, w.B8.Z, w.B.W, w.B8.W, LoadBaseX(ring, st + 96, 128, nGroups, true), nGroups, sa, sb, lane);
    }

    /// <summary>Thread <c>tid</c>'s share of one chunk of the ring: entry tid of each group's chunk (xs at
    /// <paramref name="at"/> + j·<paramref name="xGroup"/>) into ring entry <paramref name="slot"/> + 128·j.</summary>
    static void RingIssue(ArrayView<Vec16> xs16, long xsAt, long at, long xGroup, int nGroups, ArrayView<uint> ringWords, uint ringAt, int slot)
    {
        for (int j = 0; j < nGroups; j++)
            GemmHalf.Copy16(xs16, xsAt, at + j * xGroup, true, ringWords, ringAt, 16 * (slot + 128 * j));
    }
}

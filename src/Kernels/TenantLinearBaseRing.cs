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

    /// <summary>Thread <c>tid</c>'s share of one chunk of the ring: entry tid of each group's chunk (xs at
    /// <paramref name="at"/> + j·<paramref name="xGroup"/>) into ring entry <paramref name="slot"/> + 128·j.</summary>
    static void RingIssue(ArrayView<Vec16> xs16, long xsAt, long at, long xGroup, int nGroups, ArrayView<uint> ringWords, uint ringAt, int slot)
    {
        for (int j = 0; j < nGroups; j++)
            GemmHalf.Copy16(xs16, xsAt, at + j * xGroup, true, ringWords, ringAt, 16 * (slot + 128 * j));
    }
}

using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Hopper's copy engine for plain 1-D copies, global → shared, through inline PTX (PTX ISA 8.0, sm_90:
/// <c>cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes</c>), completing on a shared-memory barrier
/// (<c>mbarrier</c> with a transaction count). One thread issues a copy of kilobytes and the bytes in flight sit in shared
/// memory, not in registers: the decode kernels' register loads hold at most 3–4 chunks a warp before they lose
/// occupancy, and with their row-strided order that capped them near 2 TB/s on the H100 (bench/NOTES.md). 1-D copies
/// need no tensor map.
/// The ring lives in dynamic shared memory, which ILGPU 1.5.3 declares as <c>__dyn_shared_alloca</c>: the PTX names it
/// to get its 32-bit shared address (ILGPU keeps a view's address to itself; BulkTests pins the name). Global sources
/// are addressed by the caller from <see cref="Tensor.DeviceAddress"/>. Where inline PTX cannot run (ILGPU's CPU
/// accelerator) a copy is done at once by the issuing thread through the views and the barrier calls do nothing, so
/// the same kernel runs there when the block synchronises between issuing a stage and reading it.
/// </summary>
public static class Bulk
{
    /// <summary>The 32-bit shared address of the block's dynamic shared memory plus <paramref name="bytes"/> (0 where
    /// inline PTX cannot run).</summary>
    public static uint Dynamic(int bytes)
    {
        if (!CudaAsm.IsSupported) return 0;
        CudaAsm.Emit("mov.u32 %0, __dyn_shared_alloca;", out uint r);
        return r + (uint)bytes;
    }

    /// <summary>Set up the barrier at shared address <paramref name="bar"/> (8 bytes, 8-aligned) for one arrival a phase
    /// and make it visible to the copy engine (the async proxy). One thread calls it; the block synchronises after.</summary>
    public static void Init(uint bar)
    {
        if (!CudaAsm.IsSupported) return;
        CudaAsm.Emit("mbarrier.init.shared::cta.b64 [%0], 1;", bar);
        CudaAsm.Emit("fence.mbarrier_init.release.cluster;");
    }

    /// <summary>Copy <paramref name="bytes"/> (a multiple of 16, both ends 16-aligned) from global address
    /// <paramref name="src"/> to shared address <paramref name="dst"/>, announced on barrier <paramref name="bar"/>,
    /// whose current phase completes when they have landed. One thread calls it. Off the GPU the copy is made at once
    /// from <paramref name="srcView"/> to <paramref name="dstView"/>.</summary>
    public static void Copy(uint bar, uint dst, long src, int bytes, ArrayView<Vec16> dstView, ArrayView<Vec16> srcView)
    {
        if (!CudaAsm.IsSupported)
        {
            for (int i = 0; i < bytes / 16; i++) dstView[i] = srcView[i];
            return;
        }
        CudaAsm.Emit("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;", bar, bytes);
        CudaAsm.Emit("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];", dst, src, bytes, bar);
    }

    /// <summary>Wait until phase <paramref name="parity"/> (0, 1, 0, … for a barrier's successive uses) of barrier
    /// <paramref name="bar"/> has completed: its copy's bytes are in shared memory and visible to the waiting thread.</summary>
    public static void Wait(uint bar, int parity)
    {
        if (!CudaAsm.IsSupported) return;
        uint done = 0;
        while (done == 0)
            CudaAsm.Emit("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }", out done, bar, parity);
    }

    /// <summary>Runs <see cref="ReadProbeKernel"/> over <paramref name="src"/> (a whole number of 16-byte units) in
    /// <paramref name="blocks"/> blocks of 128 threads; <paramref name="sink"/> holds blocks × 128 words.</summary>
    public static void ReadProbe(Tensor src, Tensor sink, int blocks)
    {
        long vecs = src.ByteLength / 16;
        src.Device.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, long, ArrayView<uint>, long>>(ReadProbeKernel)(
            new KernelConfig(blocks, 128, SharedMemoryConfig.RequestDynamic<Vec16>(ProbeSharedVecs)),
            src.View<Vec16>(), src.DeviceAddress, sink.View<uint>(), (vecs + blocks - 1) / blocks);
    }

    /// <summary>Stages of the read probe's ring and their size in 16-byte units (8 KB each).</summary>
    public const int ProbeStages = 4, ProbeStageVecs = 512;

    /// <summary>Dynamic shared memory the probe takes, in 16-byte units: the ring, then one 8-byte barrier a stage.</summary>
    public const int ProbeSharedVecs = ProbeStages * ProbeStageVecs + (ProbeStages + 1) / 2;

    /// <summary>
    /// The ceiling of reading through the copy engine (bench multitenant's read probe): block b streams the 16-byte units
    /// [b·per, (b+1)·per) of <paramref name="src"/> (at device address <paramref name="srcAt"/>) through a ring of
    /// <see cref="ProbeStages"/> stages in dynamic shared memory (<see cref="ProbeSharedVecs"/>), one thread issuing each
    /// stage's copy once the block has read the stage it replaces, every thread XOR-ing the words of its units of each
    /// landed stage into <paramref name="sink"/>[its global index] (so a test can check that every byte came through).
    /// </summary>
    public static void ReadProbeKernel(ArrayView<Vec16> src, long srcAt, ArrayView<uint> sink, long per)
    {
        var ring = SharedMemory.GetDynamic<Vec16>();
        long start = Grid.IdxX * per, end = IntrinsicMath.Min(start + per, src.Length);
        int n = start < end ? (int)((end - start + ProbeStageVecs - 1) / ProbeStageVecs) : 0;
        uint ringAt = Dynamic(0), barAt = Dynamic(ProbeStages * ProbeStageVecs * 16);
        if (Group.IdxX == 0)
        {
            for (int s = 0; s < ProbeStages; s++) Init(barAt + 8u * (uint)s);
            for (int i = 0; i < IntrinsicMath.Min(ProbeStages, n); i++) ProbeIssue(src, srcAt, ring, ringAt, barAt, start, end, i);
        }
        Group.Barrier();
        uint x = 0;
        for (int i = 0; i < n; i++)
        {
            int s = i % ProbeStages;
            Wait(barAt + 8u * (uint)s, (i / ProbeStages) & 1);
            int len = (int)IntrinsicMath.Min(ProbeStageVecs, end - start - (long)i * ProbeStageVecs);
            for (int j = Group.IdxX; j < len; j += Group.DimX)
            {
                var v = ring[s * ProbeStageVecs + j];
                x ^= v.X ^ v.Y ^ v.Z ^ v.W;
            }
            Group.Barrier();
            if (Group.IdxX == 0 && i + ProbeStages < n) ProbeIssue(src, srcAt, ring, ringAt, barAt, start, end, i + ProbeStages);
        }
        sink[Grid.GlobalIndex.X] = x;
    }

    static void ProbeIssue(ArrayView<Vec16> src, long srcAt, ArrayView<Vec16> ring, uint ringAt, uint barAt, long start, long end, int i)
    {
        int s = i % ProbeStages;
        long at = start + (long)i * ProbeStageVecs;
        int len = (int)IntrinsicMath.Min(ProbeStageVecs, end - at);
        Copy(barAt + 8u * (uint)s, ringAt + (uint)(s * ProbeStageVecs * 16), srcAt + at * 16, len * 16,
             ring.SubView(s * ProbeStageVecs, len), src.SubView(at, len));
    }
}

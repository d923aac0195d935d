using ILGPU;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The streamed form's block timeline (`bench multitenant --timeline`): each block of a traced call stamps the GPU's
/// %globaltimer at its start, after its wait, its products and its arrival, and at its end, with its multiprocessor.
/// The stamps go after the call's meta longs (<see cref="TenantLinear.StreamShape.TraceAt"/>), so the kernel keeps its
/// parameters; untraced calls skip them on one uniform branch.
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Record, per block of the next streamed calls, when it started, waited, finished its products and ended
    /// (the GPU's %globaltimer, ns) and on which multiprocessor; <see cref="LastStreamTrace"/> gets them after each call
    /// (the call then waits for the device). For the bench's timeline: where a grid's time goes between its kinds of
    /// blocks, which no profiler's per-kernel figure shows.</summary>
    public static bool TraceStream { get; set; }

    /// <summary>The last traced call's blocks, <see cref="TraceLongs"/> longs each: start, wait over, products done,
    /// arrived (counted in at its columns), end, multiprocessor, kind (0 split, 1 planes, 2 base, 3 tenant row) + 4 ×
    /// columns it finished; and the call's block counts of each kind, in grid order.</summary>
    public static (long[] Blocks, int PrepSplit, int PrepBits, int Base, int Rows)? LastStreamTrace { get; set; }

    /// <summary>Longs per block in <see cref="LastStreamTrace"/>.</summary>
    public const int TraceLongs = 7;

    /// <summary>The GPU's global nanosecond timer (0 where there is none).</summary>
    static long Now()
    {
        if (!CudaAsm.IsSupported) return 0;
        CudaAsm.Emit("mov.u64 %0, %%globaltimer;", out long t);
        return t;
    }

    /// <summary>Field <paramref name="k"/> of this block's trace (thread 0; nothing unless traced).</summary>
    static void Stamp(ArrayView<long> meta, StreamShape s, int k, long v)
    {
        if (s.TraceAt < 0 || Group.IdxX != 0) return;
        meta[s.TraceAt + (long)Grid.IdxX * TraceLongs + k] = v;
    }

    static long SmId()
    {
        if (!CudaAsm.IsSupported) return 0;
        CudaAsm.Emit("mov.u32 %0, %%smid;", out int r);
        return r;
    }

    static void StampNow(ArrayView<long> meta, StreamShape s, int k)
    {
        if (s.TraceAt >= 0) Stamp(meta, s, k, Now());
    }

    /// <summary>The block's end, multiprocessor, kind and the columns it finished.</summary>
    static void StampEnd(ArrayView<long> meta, StreamShape s, int kind, int finished)
    {
        if (s.TraceAt < 0) return;
        Stamp(meta, s, 4, Now());
        Stamp(meta, s, 5, SmId());
        Stamp(meta, s, 6, kind + 4 * finished);
    }
}

using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative.Kernels;

/// <summary>
/// How the streamed form's blocks (TenantLinearStream.cs) hand work to each other inside one grid: a block waits for a
/// published epoch (<see cref="TenantLinear.WaitReady"/>); a block that wrote a column's partial sums counts itself in
/// (<see cref="TenantLinear.Arrive"/>), and the last to arrive adds the column up (<see cref="TenantLinear.StreamFinish"/>,
/// the CUDA threadFenceReduction pattern), in a fixed order so that results do not depend on timing. The fences between
/// writes and counts are release / acquire patterns of the PTX memory model (<see cref="TenantLinear.Fence"/>).
/// </summary>
public static partial class TenantLinear
{
    /// <summary>The fence between a block's writes and its count (and between a count and the reads of what it counted):
    /// fence.acq_rel.gpu, which with the relaxed atomic after (before) it is a release (acquire) pattern of the PTX memory
    /// model, all these handoffs need; or, with <see cref="StreamShape.LightFence"/> 0, membar.gl (fence.sc.gpu) as
    /// ILGPU's MemoryFence.DeviceLevel gives, the stronger sequentially consistent fence.</summary>
    static void Fence(StreamShape s)
    {
        if (CudaAsm.IsSupported && s.LightFence != 0) CudaAsm.Emit("fence.acq_rel.gpu;");
        else MemoryFence.DeviceLevel();
    }

    /// <summary>Fence the streamed form's handoffs with fence.acq_rel.gpu (true) or membar.gl (false; the bench's
    /// --sc-fence, to compare).</summary>
    public static bool StreamLightFence { get; set; } = true;

    /// <summary>Group positions whose rows every block reads at its start for <see cref="StreamFinish"/> (two groups: the
    /// streamed form's rows when <see cref="StreamMaxRows"/> was 16; the engine's 8 are one); positions past them are read
    /// when finishing.</summary>
    const int FinishRows = 16;

    /// <summary>Wait until <paramref name="ready"/>[0] holds this call's <paramref name="epoch"/> (0: nothing to wait for). One
    /// thread polls the word with atomic reads (at L2, never a stale L1 line), resting between polls so that hundreds of
    /// waiting blocks do not crowd the L2 with them (the preparation's own atomics are on another line); the fence and
    /// barrier after it order the block's later loads of x's split and the planes after that read. Every thread of the
    /// block must call it.</summary>
    static void WaitReady(ArrayView<int> ready, int epoch)
    {
        if (epoch == 0) return;
        if (Group.IdxX == 0)
        {
            while (Atomic.Or(ref ready[0], 0) != epoch)
                if (CudaAsm.IsSupported) CudaAsm.Emit("nanosleep.u32 64;");
            MemoryFence.DeviceLevel();
        }
        Group.Barrier();
    }

    /// <summary>This block's writes made visible device-wide, then its arrival at the counter of row group
    /// <paramref name="gr"/> in column <paramref name="tb"/>; last[k] = 1 when it was the last to arrive of the column's
    /// base blocks (<see cref="StreamShape.Split"/>, each arriving at every group) and the blocks of the group's tenant
    /// rows. A counter per group, not per column: at many rows the finishing is spread over as many blocks.</summary>
    static void Arrive(ArrayView<int> counters, ArrayView<int> last, int k, int tb, int gr, StreamShape s)
    {
        Fence(s);
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

    /// <summary>Row group <paramref name="gr"/> of column <paramref name="tb"/> (8 rows × 64 outputs), by the block that
    /// arrived last: per row, every split's base partials added in split order into y, then the row's tenant term (group
    /// position FewBase + e is entry e), as the base-only and bit-serial forms add them.</summary>
    static void StreamFinish(int tb, int gr, ArrayView<int> groups, ArrayView<int> rows, ArrayView<float> basePart, ArrayView<float> termPart,
                             ArrayView<float> y, ArrayView<int> counters, StreamShape s)
    {
        Fence(s);
        // Thread i takes output o0 + i % 64 of group positions i / 64 + 2u, u = 0 … 3 (8 rows × 64 outputs, 128
        // threads), all four entries' loads out before any sum, and the splits' four at a time: as a loop of entries,
        // each entry's loads waited for the last one's store, and at 8 rows the finishing blocks ran ~15 µs past the
        // last products (bench timeline).
        int o = tb * StreamWarps * 16 + Group.IdxX % 64, p = Group.IdxX / 64;
        long stride = (long)s.Rows * s.Out;
        var e0 = FinishEntry(groups, rows, termPart, y, gr, p, o, s);
        var e1 = FinishEntry(groups, rows, termPart, y, gr, p + 2, o, s);
        var e2 = FinishEntry(groups, rows, termPart, y, gr, p + 4, o, s);
        var e3 = FinishEntry(groups, rows, termPart, y, gr, p + 6, o, s);
        // Σ over splits in split order per entry, as SumSplits adds them (the same bits as the base form)
        var sum = new Finish4();
        int k = 0;
        for (; k + 4 <= s.Split; k += 4)
        {
            var a = SplitLoads(basePart, e0.At, e1.At, e2.At, e3.At, k * stride);
            var b = SplitLoads(basePart, e0.At, e1.At, e2.At, e3.At, (k + 1) * stride);
            var c = SplitLoads(basePart, e0.At, e1.At, e2.At, e3.At, (k + 2) * stride);
            var d = SplitLoads(basePart, e0.At, e1.At, e2.At, e3.At, (k + 3) * stride);
            sum = Add(Add(Add(Add(sum, a), b), c), d);
        }
        for (; k < s.Split; k++) sum = Add(sum, SplitLoads(basePart, e0.At, e1.At, e2.At, e3.At, k * stride));
        FinishStore(y, e0, sum.A);
        FinishStore(y, e1, sum.B);
        FinishStore(y, e2, sum.C);
        FinishStore(y, e3, sum.D);
        // every arrival at this counter has happened: leave it zero for the next call (StreamWords)
        if (Group.IdxX == 0) counters[tb * s.Groups + gr] = 0;
    }

    /// <summary>One entry of a finishing block: y's index (−1: no row there, or past the outputs), and what goes on top
    /// of the split sums: y's old value when accumulating, the row's tenant term.</summary>
    struct Finish
    {
        /// <summary>The entry's place in the base partials (row·out + o), and in y (its part's place there).</summary>
        public long At, Y;
        public float Old, Term;
        public bool Accumulate, HasTerm;
    }

    static Finish FinishEntry(ArrayView<int> groups, ArrayView<int> rows, ArrayView<float> termPart, ArrayView<float> y, int gr, int pos, int o,
                              StreamShape s)
    {
        var f = new Finish { At = -1 };
        int slotJ = 8 * gr + pos, entry = slotJ - s.FewBase;
        // the term's place does not depend on the row: its load goes out with the row's
        f.HasTerm = entry >= 0 && entry < s.Entries && o < s.Out;
        if (f.HasTerm) f.Term = termPart[(long)entry * s.Out + o];
        long row = slotJ < FinishRows ? rows[slotJ] : groups[gr * TenantRows.MmaGroupInts + pos];
        if (o >= s.Out || row < 0) return f;
        f.At = row * s.Out + o;
        f.Y = PartAt(s.Parts, o, row, s.Rows, s.Out);
        f.Accumulate = (s.Mode & 1) != 0;
        if (f.Accumulate) f.Old = y[f.Y];
        return f;
    }

    /// <summary>Four entries' values (A–D), one split's partial sums or their running sums.</summary>
    struct Finish4
    {
        public float A, B, C, D;
    }

    static Finish4 SplitLoads(ArrayView<float> part, long a, long b, long c, long d, long off) => new()
    {
        A = a >= 0 ? part[a + off] : 0,
        B = b >= 0 ? part[b + off] : 0,
        C = c >= 0 ? part[c + off] : 0,
        D = d >= 0 ? part[d + off] : 0,
    };

    static Finish4 Add(Finish4 s, Finish4 v) => new() { A = s.A + v.A, B = s.B + v.B, C = s.C + v.C, D = s.D + v.D };

    /// <summary>y = (old +) Σ splits (+ term), added in that order as the base and bit-serial forms add them.</summary>
    static void FinishStore(ArrayView<float> y, Finish f, float sum)
    {
        if (f.At < 0) return;
        float v = f.Accumulate ? f.Old + sum : sum;
        y[f.Y] = f.HasTerm ? v + f.Term : v;
    }
}

using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The whole decode batch in one launch, when every decode row is on the base or of a tenant with few rows
/// (<see cref="TenantRows.DecodeAllFew"/>) and there are at most <see cref="StreamMaxRows"/> of them: the base term as the
/// base-only form computes it (TenantLinearBase.cs) and each row's tenant term as the bit-serial form does
/// (TenantLinearBits.cs), in one grid, and the last block to finish a column of outputs adds up that column. Those two
/// forms took seven launches per linear (memset, row max, planes, x split, base, split sum, bit-serial) and each waited
/// for the one before: at 4096² the chain cost more than reading W (bench/NOTES.md). The grid, in block order:
/// - preparation blocks: per row group and 4 chunks of 64 inputs, x split into f16 hi + lo in the order the products
///   read it (not for one row group: see the base blocks); per row with a tenant and 1024 inputs, its max |x| (each
///   block finds it itself, from L2: no atomics, no memset), bit planes and Σq. The last split block to finish
///   publishes the call's number (<see cref="StreamShape.Epoch"/>) in one device word, the last planes block in another;
/// - base blocks (4 tiles of 16 outputs over one K range): their first chunks of W go out, then they wait for the split's
///   word (<see cref="WaitReady"/>), or, for one row group (at most 8 rows), split their own K range of x into shared
///   memory (<see cref="SplitXShared"/>: under W's traffic the split blocks' chain of loads, fence and atomics held W's
///   reads back ~5 µs); then they run as the base form does, writing split partials;
/// - tenant-row blocks (128 or 32 outputs of a row), which wait for the planes' word, then write each output's tenant
///   term α·2^(E−31)·(2·Σ_p w_p·popc − Q).
/// Each base and tenant block then makes its writes visible device-wide and counts itself in at the columns of 64 outputs
/// and the row groups it wrote; the block that arrives last at a column's row group adds its base partials in split order
/// and its tenant terms (the CUDA threadFenceReduction pattern). Which block finishes depends on timing; what it adds and
/// in which order does not, so results are the two forms' own, bit for bit.
///
/// Waiting inside one grid is safe because blocks start in index order (on the GPU, as single-pass scans with decoupled
/// look-back rely on; ILGPU's CPU accelerator runs a multiprocessor's blocks in index order): a waiting block's
/// preparation blocks have all started before it, and they wait on nothing. The preparation had been a launch of its
/// own (3–5 µs a linear, profiled); in the grid the base blocks wait for the split with their first W loads in flight
/// (bench/NOTES.md).
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Take the streamed form where it applies (the bench turns it off to compare).</summary>
    public static bool UseStream { get; set; } = true;

    /// <summary>The streamed form is taken for at most this many decode rows (one row group): its finishing blocks add up
    /// the split partials, latency that grows with the rows. On the H100 at 7B shapes it beat the bit-serial and base-only
    /// forms by 3–16% a layer at 1–8 tenants of one row and by 2% at 16; with q/k/v and gate/up in one launch each
    /// (RunParts) the three launches won past 8 on the H200: a 7B step at 16 tenants 14.1 against 14.9 ms, 10 tenants 12.4
    /// against 12.9, 16 rows of the base alone 8.2 against 9.7 (bench/NOTES.md).</summary>
    public static int StreamMaxRows { get; set; } = 8;

    const int StreamWarps = 4, SegWords = 32, SplitChunks = 4;

    /// <summary>Shared memory a base block may take for its own split of x (<see cref="SplitXShared"/>), in 16-byte
    /// entries, 16 a row and chunk: 32 KB keeps the static 7 KB under the 48 KB a block gets without opting in, and four
    /// blocks a multiprocessor within the H100's 228 KB. Batches that need more take the split blocks; 0 sends every
    /// batch there (tests, the bench's --no-own-split).</summary>
    public static int StreamOwnSplitVecs { get; set; } = 2048;

    /// <summary>A row group of more rows than this takes the split blocks even where its K ranges fit in shared memory:
    /// a base block's own split of 8 rows is 8 × its K range of x, loaded and converted before its products (2048 entries
    /// a block at 4096², 8 tenants), and the split blocks then won: the H200's 4096² call 34.5 → 31.1 µs at 8 tenants,
    /// 22.3 → 19.7 for 8 rows of the base alone; level at 4 rows (28.6 and 28.5), and at one row the own split is what won
    /// (bench/NOTES.md).</summary>
    public static int StreamOwnSplitMaxRows { get; set; } = 4;

    /// <summary>The device words' layout, each on a line of its own (128 bytes apart): the count of x's split blocks done
    /// and of the planes' blocks done, the epoch whose split is complete (what base blocks wait for) and whose planes are
    /// (what tenant-row blocks wait for); the arrival counters after.</summary>
    const int SplitDone = 0, BitsDone = 32, SplitReady = 64, BitsReady = 96, FirstCounter = 128;

    /// <summary>The shape of one streamed call (a struct: ILGPU kernels take at most 15 parameters). PrepSplit and PrepBits
    /// count the preparation blocks; Epoch is this call's number, never 0.</summary>
    public struct StreamShape
    {
        public int In, Out, Rows, Per, Groups, Entries, Split, Segs, TileBlocks, Mode, BitsSplit, BitsPerRow, FewBase;
        public int PrepSplit, PrepBits, Epoch;
        /// <summary>One row group whose base blocks split their own K range of x (<see cref="TenantLinear.SplitXShared"/>)
        /// for its Live rows; 0: x is split by the preparation blocks.</summary>
        public int Live;
        /// <summary>1: <see cref="Fence"/> is fence.acq_rel.gpu; 0: membar.gl.</summary>
        public int LightFence;
        public long XsVecs, BaseFloats;
        /// <summary>Where in meta each block's trace starts (<see cref="TraceStream"/>), or −1 for none.</summary>
        public long TraceAt;
        /// <summary>The outputs as one linear's, or as two or three linears' one after another (<see cref="OutParts"/>).</summary>
        public OutParts Parts;
    }

    /// <summary>
    /// Outputs [0, out) as the outputs of up to three linears that read the same x (q, k, v; gate, up), one after another:
    /// part j is [start_j, end_j) with ends S1, S2 and out. A part has its own place in the signs pool and in y, each as
    /// that linear alone keeps it: the signs of part j are Sign1 [Cap, n_j, in] at row Cap·start_j of the signs (the pool's
    /// storage, DeltaPool.cs), y's are f32 [rows, n_j] at rows·start_j, and its scales f32 [Cap] at j·Cap. So one launch
    /// reads the three linears' W as one [out, in] (the layer's q/k/v stored together, LlamaWeights.cs) and writes each
    /// output where its own launch would have. All zero (the default): one linear, row r of y at r·out.
    /// </summary>
    public struct OutParts
    {
        public int S1, S2, Cap;
    }

    /// <summary>Output o's part: 0, 1 or 2 (<see cref="OutParts"/>).</summary>
    static int PartOf(OutParts p, int o) => (p.S1 > 0 && o >= p.S1 ? 1 : 0) + (p.S2 > 0 && o >= p.S2 ? 1 : 0);

    /// <summary>Row <paramref name="r"/>, output o of the part o is in, as an index into that part's [count, n_j] block
    /// (signs: count = Cap, r the slot; y: count = rows, r the row): count·start_j + r·n_j + (o − start_j).</summary>
    static long PartAt(OutParts p, int o, long r, long count, int outDim)
    {
        int j = PartOf(p, o), start = j == 0 ? 0 : j == 1 ? p.S1 : p.S2, end = j == 0 && p.S1 > 0 ? p.S1 : j == 1 && p.S2 > 0 ? p.S2 : outDim;
        return count * start + r * (end - start) + (o - start);
    }

    /// <summary>α of the linear output o is of, for slot <paramref name="slot"/>: scales[part·Cap + slot] (o past the
    /// outputs, as a thread past its block's outputs has, reads the last part's).</summary>
    static float PartScale(ArrayView<float> scales, OutParts p, int o, int outDim, int slot) =>
        scales[PartOf(p, IntrinsicMath.Min(o, outDim - 1)) * p.Cap + slot];

    static bool TakesStream(TenantRows tenants, Tensor w) =>
        UseStream && tenants.DecodeAllFew && tenants.FewBase + tenants.FewCount <= StreamMaxRows
        && (tenants.FewCount == 0 || (w.Dim(1) % 256 == 0 && w.Dim(0) % 32 == 0));

    /// <summary>A device's words for the streamed form (<see cref="SplitDone"/> …: the preparation's done counts and
    /// published epochs, then the arrival counters of columns and row groups), and the number of the last call.</summary>
    sealed class StreamState
    {
        public Tensor? Words;
        public int Epoch;
    }

    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Device, StreamState> streamStates = new();

    /// <summary>The device's words, with at least <paramref name="n"/> arrival counters, all zero, and the next call's
    /// epoch. Zeroed once when made: the done counts are left zero by the last preparation blocks, each counter by the
    /// block that finishes its column's row group (<see cref="StreamFinish"/>), and the published epochs are only ever
    /// compared with a newer epoch, so no launch or memset clears them per call. Launches on the device's stream run in
    /// order, so one set serves every call.</summary>
    static (Tensor Words, int Epoch) StreamWords(Device dev, int n)
    {
        var state = streamStates.GetValue(dev, _ => new StreamState());
        lock (state)
        {
            if (state.Words == null || state.Words.Dim(0) < n + FirstCounter)
            {
                state.Words?.Dispose();
                int size = Math.Max(n + FirstCounter, 4096);
                state.Words = Tensor.From(new int[size], [size], dev);
            }
            state.Epoch = state.Epoch == int.MaxValue ? 1 : state.Epoch + 1;
            return (state.Words, state.Epoch);
        }
    }

    /// <summary>y (+)= x·Wᵀ for the decode rows, plus α_t·x·S_tᵀ for those with a tenant (<see cref="TenantRows.FewList"/>);
    /// the outputs as one linear's, or as several linears' (<paramref name="outParts"/>).</summary>
    static void DecodeStream(Tensor x, Tensor w, Tensor signs, Tensor scales, TenantRows tenants, Tensor y, bool accumulate, OutParts outParts = default)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), chunks = inDim / 64, rows = x.Dim(0), words = inDim / 32;
        int entries = tenants.FewCount, groupCount = tenants.MmaGroupCount;
        var dev = y.Device;
        int tileBlocks = (outDim / 16 + StreamWarps - 1) / StreamWarps;
        int segs = (words + SegWords - 1) / SegWords;
        // The tenant rows' blocks as the bit-serial form's kernel lays them out: one group of 32 outputs a block with K in
        // four pieces (short blocks, done while the base blocks still read W) while those blocks would take at most half
        // the grid's one-wave slots; else 4 groups of 32 outputs a block, each warp all of K, so that the base blocks keep
        // the slots (H100, 7B shapes: 4096² at 8 tenants 40.9 → 36.1 µs, 11008×4096 at 4 tenants 68.0 → 60.2; at 1–2
        // tenants of 4096² the longer blocks lost 15–28%; bench/NOTES.md).
        int bitGroups = outDim / 32, slots = BaseBlocksPerSm * (dev.Accelerator?.NumMultiprocessors ?? 1);
        int bitsSplit = StreamBitsSplit > 0 ? StreamBitsSplit : 2 * entries * bitGroups <= slots ? 4 : 1;
        int bitsPerRow = (bitGroups + 4 / bitsSplit - 1) / (4 / bitsSplit);
        int prepSplit = groupCount * ((chunks + SplitChunks - 1) / SplitChunks), prepBits = entries * segs;
        // StreamWarps = BaseWarps: the base form's tiles, K cut to fit the grid in one wave for one row group (BaseSplit)
        // One group whose K ranges fit in shared memory: each base block splits its own range (SplitXShared), so no
        // block waits for x's split and there are no split blocks. Else the split blocks make it, base blocks wait.
        int live = groupCount == 1 ? tenants.FewBase + entries : 0, others = groupCount == 1 ? prepBits + entries * bitsPerRow : 0;
        var (split, per) = BaseSplit(dev, outDim, inDim, others);
        if (live > 0 && (live * per * 16 > StreamOwnSplitVecs || live > StreamOwnSplitMaxRows))
        {
            live = 0;
            (split, per) = BaseSplit(dev, outDim, inDim, others + prepSplit);
        }
        if (live > 0) prepSplit = 0;
        long xsVecs = live > 0 ? 0 : (long)groupCount * chunks * 4 * 32, planeInts = (long)entries * Planes * words;
        var (counters, epoch) = StreamWords(dev, tileBlocks * groupCount);
        var shape = new StreamShape
        {
            In = inDim, Out = outDim, Rows = rows, Per = per, Groups = groupCount, Entries = entries, Split = split, Segs = segs,
            TileBlocks = tileBlocks, Mode = accumulate ? 1 : 0, BitsSplit = bitsSplit, BitsPerRow = bitsPerRow, FewBase = tenants.FewBase,
            PrepSplit = prepSplit, PrepBits = prepBits, Epoch = epoch, Live = live, LightFence = StreamLightFence ? 1 : 0,
            XsVecs = xsVecs, BaseFloats = (long)split * rows * outDim, Parts = outParts,
        };
        bool one = groupCount == 1;
        // x split, then the planes (16-byte aligned: planeInts is a multiple of 4 words × 32)
        using var work = Tensor.Empty([checked((int)(xsVecs * 4 + Math.Max(4, planeInts)))], DType.I32, dev);
        int blocks = prepSplit + prepBits + tileBlocks * split + entries * bitsPerRow;
        long metaLongs = entries + entries * segs + 1;
        shape.TraceAt = TraceStream ? metaLongs : -1;
        // longs: the row maxima, then Σq per segment (then the trace, when asked)
        using var meta = Tensor.Empty([checked((int)(2 * (metaLongs + (TraceStream ? (long)blocks * TraceLongs : 0))))], DType.I32, dev);
        if (TraceStream) meta.Fill(0);   // fields a block does not stamp stay 0
        using var parts = Tensor.Empty([checked((int)(shape.BaseFloats + Math.Max(1, entries) * (long)outDim))], DType.F32, dev);   // base partials, tenant terms
        using var none = entries == 0 ? Tensor.Empty([2], DType.I32, dev) : null;
        var list = tenants.FewList ?? none!;
        // the own split's shared memory is sized per call (dynamic); a kernel that does not take it must not be given any
        var config = live > 0
            ? new KernelConfig(blocks, StreamWarps * 32, SharedMemoryConfig.RequestDynamic<Vec16>(live * per * 16))
            : new KernelConfig(blocks, StreamWarps * 32);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, ArrayView<int>, ArrayView<Vec16>, ArrayView<Vec16>,
                                 ArrayView<int>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, StreamShape>>(
            one ? StreamOneKernel : StreamKernel)(
            config, w.View<Vec16>(), x.View<Vec16>(), tenants.MmaGroups!.View<int>(), work.View<Vec16>(),
            signs.View<Vec16>(), list.View<int>(), meta.View<long>(), scales.View<float>(), parts.View<float>(), counters.View<int>(),
            y.View<float>(), shape);
        if (TraceStream)
        {
            var all = meta.ToArray<long>();
            LastStreamTrace = (all.AsSpan((int)metaLongs, blocks * TraceLongs).ToArray(), prepSplit, prepBits, tileBlocks * split, entries * bitsPerRow);
        }
    }

    /// <summary>Tenant-row blocks of the streamed form: 1 = four groups of 32 outputs a block, each warp all of K; 4 =
    /// one group, K in four pieces; 0 = by how many slots the short blocks would take (<see cref="DecodeStream"/>).</summary>
    public static int StreamBitsSplit { get; set; }

    /// <summary>Preparation block <paramref name="b"/>. Blocks [0, PrepSplit): row group b / q, chunks 4·(b % q) … + 3 of
    /// x split as SplitXKernel does (warp = step), the four loads out before any store. Blocks after: (e, seg) finds row
    /// e's max |x| (every block of the row alike, from L2), then builds the planes of words seg·32 … seg·32 + 31 (a warp per
    /// 8 words, lane i taking input 32w + i, as BitPlanesKernel) and writes that range's Σq to meta[entries + e·segs + seg];
    /// seg 0 writes the max's bits to meta[e]. Then the block counts itself done, and the last one publishes the epoch.</summary>
    static void StreamPrep(int b, ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<int> list, ArrayView<Vec16> xs, ArrayView<uint> planes,
                           ArrayView<long> meta, ArrayView<int> counters, StreamShape s)
    {
        PrepWork(b, x16, groups, list, xs, planes, meta, s);
        int tid = Group.IdxX;
        Fence(s);
        Group.Barrier();
        bool split = b < s.PrepSplit;
        int done = split ? SplitDone : BitsDone;
        if (tid == 0 && Atomic.Add(ref counters[done], 1) == (split ? s.PrepSplit : s.PrepBits) - 1)
        {
            // every block of this kind has counted itself: leave the count zero for the next call, then publish
            counters[done] = 0;
            Fence(s);
            Atomic.Exchange(ref counters[split ? SplitReady : BitsReady], s.Epoch);
        }
    }

    /// <summary>What preparation block <paramref name="b"/> makes (<see cref="StreamPrep"/>), without the handoff: also the
    /// first launch of the bit-serial form's three (<see cref="DecodeBaseBits"/>).</summary>
    static void PrepWork(int b, ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<int> list, ArrayView<Vec16> xs, ArrayView<uint> planes,
                         ArrayView<long> meta, StreamShape s)
    {
        var redMax = SharedMemory.Allocate<int>(StreamWarps);
        var redQ = SharedMemory.Allocate<long>(StreamWarps);
        int tid = Group.IdxX, warp = tid / 32, lane = tid % 32, chunks = s.In / 64, words = s.In / 32;
        if (b < s.PrepSplit)
        {
            int quads = (chunks + SplitChunks - 1) / SplitChunks, gr = b / quads, c = b % quads * SplitChunks, t = lane & 3;
            long row = groups[gr * TenantRows.MmaGroupInts + (lane >> 2)];
            var v0 = SplitXLoad(x16, c < chunks ? row : -1, c, warp, t, s.In);
            var v1 = SplitXLoad(x16, c + 1 < chunks ? row : -1, c + 1, warp, t, s.In);
            var v2 = SplitXLoad(x16, c + 2 < chunks ? row : -1, c + 2, warp, t, s.In);
            var v3 = SplitXLoad(x16, c + 3 < chunks ? row : -1, c + 3, warp, t, s.In);
            if (c < chunks) SplitXStore(xs, v0, row, gr, c, warp, lane, chunks);
            if (c + 1 < chunks) SplitXStore(xs, v1, row, gr, c + 1, warp, lane, chunks);
            if (c + 2 < chunks) SplitXStore(xs, v2, row, gr, c + 2, warp, lane, chunks);
            if (c + 3 < chunks) SplitXStore(xs, v3, row, gr, c + 3, warp, lane, chunks);
        }
        else
        {
            const int threads = StreamWarps * 32;
            int e = (b - s.PrepSplit) / s.Segs, seg = (b - s.PrepSplit) % s.Segs;
            long xRow = list[2 * e];
            int vecs = s.In / 4;
            var xa = x16.AsAligned(16);
            int m = 0;
            for (int i = tid; i < vecs; i += 4 * threads)
            {
                // four independent loads a thread before their maxima
                Vec16 u0 = xa[xRow * vecs + i], u1 = default, u2 = default, u3 = default;
                if (i + threads < vecs) u1 = xa[xRow * vecs + i + threads];
                if (i + 2 * threads < vecs) u2 = xa[xRow * vecs + i + 2 * threads];
                if (i + 3 * threads < vecs) u3 = xa[xRow * vecs + i + 3 * threads];
                m = IntrinsicMath.Max(m, IntrinsicMath.Max(AbsBits(u0), AbsBits(u1)));
                m = IntrinsicMath.Max(m, IntrinsicMath.Max(AbsBits(u2), AbsBits(u3)));
            }
            for (int o = 16; o > 0; o /= 2) m = IntrinsicMath.Max(m, Warp.ShuffleXor(m, o));
            if (lane == 0) redMax[warp] = m;
            Group.Barrier();
            m = redMax[0];
            for (int k = 1; k < StreamWarps; k++) m = IntrinsicMath.Max(m, redMax[k]);

            int exp = BitsExponent(m);
            float f = Interop.IntAsFloat((uint)(31 - exp + 127) << 23);
            bool bad = m >= 0x7F800000;
            var x = x16.Cast<float>();
            long q = 0;
            for (int h = 0; h < 2; h++)   // a warp's 8 words, 4 at a time: four loads out before their planes
            {
                int w0 = seg * SegWords + warp * 8 + h * 4;
                long at = xRow * s.In + 32L * w0 + lane;
                float f0 = w0 < words ? x[at] : 0f, f1 = w0 + 1 < words ? x[at + 32] : 0f;
                float f2 = w0 + 2 < words ? x[at + 64] : 0f, f3 = w0 + 3 < words ? x[at + 96] : 0f;
                q += PlaneWord(planes, f0, f, bad, PlaneAt(e, lane, w0, words), lane, w0 < words)
                   + PlaneWord(planes, f1, f, bad, PlaneAt(e, lane, w0 + 1, words), lane, w0 + 1 < words)
                   + PlaneWord(planes, f2, f, bad, PlaneAt(e, lane, w0 + 2, words), lane, w0 + 2 < words)
                   + PlaneWord(planes, f3, f, bad, PlaneAt(e, lane, w0 + 3, words), lane, w0 + 3 < words);
            }
            for (int o = 16; o > 0; o /= 2) q += Warp.ShuffleXor(q, o);
            if (lane == 0) redQ[warp] = q;
            Group.Barrier();
            if (tid == 0)
            {
                long sum = 0;
                for (int k = 0; k < StreamWarps; k++) sum += redQ[k];
                meta[s.Entries + (long)e * s.Segs + seg] = sum;
                if (seg == 0) meta[e] = m;
            }
        }
    }

    static void StreamKernel(ArrayView<Vec16> w16, ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<Vec16> work, ArrayView<Vec16> signs16,
                             ArrayView<int> list, ArrayView<long> meta, ArrayView<float> scales, ArrayView<float> parts, ArrayView<int> counters,
                             ArrayView<float> y, StreamShape s) =>
        StreamBody(w16, x16, groups, work, signs16, list, meta, scales, parts, counters, y, s, false);

    /// <summary><see cref="StreamKernel"/> compiled for one row group (at most 8 decode rows): its base blocks run
    /// <see cref="BaseRange1"/>.</summary>
    static void StreamOneKernel(ArrayView<Vec16> w16, ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<Vec16> work, ArrayView<Vec16> signs16,
                                ArrayView<int> list, ArrayView<long> meta, ArrayView<float> scales, ArrayView<float> parts, ArrayView<int> counters,
                                ArrayView<float> y, StreamShape s) =>
        StreamBody(w16, x16, groups, work, signs16, list, meta, scales, parts, counters, y, s, true);

    /// <summary>The streamed kernels' body; <paramref name="one"/> is a constant at each kernel (ILGPU inlines the
    /// body), so the kernel for one group holds no registers for four. <paramref name="work"/> holds x's split (XsVecs)
    /// then the planes; <paramref name="parts"/> the base partials (BaseFloats) then the tenant terms; counters before FirstCounter are
    /// the preparation's words, the arrival counters follow from FirstCounter.</summary>
    static void StreamBody(ArrayView<Vec16> w16, ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<Vec16> work, ArrayView<Vec16> signs16,
                           ArrayView<int> list, ArrayView<long> meta, ArrayView<float> scales, ArrayView<float> parts, ArrayView<int> counters,
                           ArrayView<float> y, StreamShape s, bool one)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        var emu = SharedMemory.Allocate<float>(StreamWarps * 384);   // Mma's scratch where it is emulated
        var part = SharedMemory.Allocate<long>(4 * 32);
        var last = SharedMemory.Allocate<int>(2);
        // the rows of the first two groups' positions, read now for a finishing block's use at the end (its partial
        // sums are at the rows': read then, the row would be one more round trip on the grid's last path)
        var rows = SharedMemory.Allocate<int>(FinishRows);
        if (Group.IdxX < FinishRows)
            rows[Group.IdxX] = Group.IdxX < s.Groups * 8 ? groups[Group.IdxX / 8 * TenantRows.MmaGroupInts + Group.IdxX % 8] : -1;
        var xs16 = work.SubView(0, s.XsVecs);
        var planes16 = work.SubView(s.XsVecs);
        var planes = planes16.Cast<uint>();
        var basePart = parts.SubView(0, s.BaseFloats);
        var termPart = parts.SubView(s.BaseFloats);
        var tiles = counters.SubView(FirstCounter);
        int prep = s.PrepSplit + s.PrepBits, baseBlocks = s.TileBlocks * s.Split;
        StampNow(meta, s, 0);
        if (Grid.IdxX < prep)
        {
            StreamPrep(Grid.IdxX, x16, groups, list, xs16, planes, meta, counters, s);
            StampNow(meta, s, 2);
            StampEnd(meta, s, Grid.IdxX < s.PrepSplit ? 0 : 1, 0);
            return;
        }
        if (Grid.IdxX < prep + baseBlocks)
        {
            int bb = Grid.IdxX - prep, tb = bb % s.TileBlocks, finished = 0;
            StreamBase(bb, w16, x16, xs16, groups, basePart, emu, counters.SubView(SplitReady), s, one);
            StampNow(meta, s, 2);
            for (int gr = 0; gr < (one ? 1 : s.Groups); gr++)
            {
                Arrive(tiles, last, 0, tb, gr, s);
                Group.Barrier();
                if (gr == 0) StampNow(meta, s, 3);
                if (last[0] != 0)
                {
                    StreamFinish(tb, gr, groups, rows, basePart, termPart, y, tiles, s);
                    finished++;
                }
                Group.Barrier();
            }
            StampEnd(meta, s, 2, finished);
            return;
        }

        // A tenant row's terms for 128 outputs (or 32, K in four pieces), as the bit-serial form's kernel; then its
        // arrival at its row group in the one or two columns of 64 outputs it touches.
        WaitReady(counters.SubView(BitsReady), s.Epoch);
        StampNow(meta, s, 1);
        int b = Grid.IdxX - prep - baseBlocks, perBlock = 4 / s.BitsSplit, o0 = b % s.BitsPerRow * perBlock * 32;
        // the row's Σq, max and scale read before the products, not after them: their loads (the scale's after the
        // list's) would otherwise add their round trips to every block's time
        int row = b / s.BitsPerRow, tid = Group.IdxX, oMine = (b % s.BitsPerRow * perBlock + tid / 32) * 32 + tid % 32;
        long q = SumLongs(meta, s.Entries + (long)row * s.Segs, s.Segs);
        int big = (int)meta[row];
        float alpha = PartScale(scales, s.Parts, oMine, s.Out, list[2 * row + 1]);
        long sum = BitsSum(1, b, signs16, signs16.Cast<uint>(), planes16, list, part, s.In, s.Out, s.BitsSplit, s.Parts, out int e, out int o);
        if (o >= 0)
            termPart[(long)e * s.Out + o] = (float)BitsTerm(sum, q, big, alpha);
        StampNow(meta, s, 2);
        int tb0 = o0 / 64, tb1 = IntrinsicMath.Min(s.TileBlocks - 1, (o0 + perBlock * 32 - 1) / 64);
        int ge = (s.FewBase + b / s.BitsPerRow) / 8;
        Arrive(tiles, last, 0, tb0, ge, s);
        if (tb1 != tb0) Arrive(tiles, last, 1, tb1, ge, s);
        Group.Barrier();
        StampNow(meta, s, 3);
        int done = 0;
        if (last[0] != 0)
        {
            StreamFinish(tb0, ge, groups, rows, basePart, termPart, y, tiles, s);
            done++;
        }
        if (tb1 != tb0 && last[1] != 0)
        {
            Group.Barrier();
            StreamFinish(tb1, ge, groups, rows, basePart, termPart, y, tiles, s);
            done++;
        }
        StampEnd(meta, s, 3, done);
    }

    /// <summary>The base term of 4 tiles of 16 outputs over one K range into this split's plane of the partial sums,
    /// 32 rows (4 groups) at a time. Every warp runs the same products (the emulated product synchronises the block), a
    /// warp past the last tile on zeros.</summary>
    static void StreamBase(int bb, ArrayView<Vec16> w16, ArrayView<Vec16> x16, ArrayView<Vec16> xs16, ArrayView<int> groups, ArrayView<float> basePart, ArrayView<float> emu,
                           ArrayView<int> ready, StreamShape s, bool one)
    {
        var w16a = w16.AsAligned(16);
        var xs = xs16.AsAligned(16);
        int lane = Warp.LaneIdx, wi = Warp.WarpIdx, g = lane >> 2, t = lane & 3;
        var sa = emu.SubView(wi * 384, 256);
        var sb = emu.SubView(wi * 384 + 256, 128);
        int chunks = s.In / 64, ks = bb / s.TileBlocks, tile = bb % s.TileBlocks * StreamWarps + wi;
        bool liveTile = tile < s.Out / 16;
        int c0 = ks * s.Per, c1 = IntrinsicMath.Min(chunks, c0 + s.Per);
        long wStride = s.In / 8, oG = (long)tile * 16 + g;
        long xGroup = (long)chunks * 128;
        long plane = (long)ks * s.Rows * s.Out;
        if (one)
        {
                Mma.Float4 acc1;
            if (s.Live > 0)
            {
                // this block splits its own K range of x into shared memory: no wait on the preparation blocks
                int cs = 16 * s.Live;
                var place = new XPlace { At = g * 4 + t - (long)c0 * cs, Cs = cs, Ss = 4 * s.Live };
                acc1 = BaseRange1(w16a, SharedMemory.GetDynamic<Vec16>().AsAligned(16), place, oG, wStride, g < s.Live, c0, c1, liveTile, sa, sb,
                                  lane, t, ready, 0, true, x16, groups, s.In);
            }
            else
                acc1 = BaseRange1(w16a, xs, new XPlace { At = lane, Cs = 128, Ss = 32 }, oG, wStride, groups[g] >= 0, c0, c1, liveTile, sa, sb,
                                  lane, t, ready, s.Epoch, false, x16, groups, s.In);
            if (liveTile) BaseStore(basePart, groups, 0, acc1, oG, t, s.Out, plane, 0);
            return;
        }
        for (int first = 0; first < s.Groups; first += BaseGroups)
        {
            int nG = IntrinsicMath.Min(BaseGroups, s.Groups - first);
            long xFirst = first * xGroup;
            var acc = BaseRange(w16a, xs, oG, wStride, xFirst, xGroup, nG, c0, c1, liveTile, sa, sb, lane, t, ready, s.Epoch);
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

}

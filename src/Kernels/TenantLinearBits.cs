using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The tenant term α_t·x·S_tᵀ of decode rows whose tenant has few rows in the batch, bit-serially on the binary
/// tensor cores. With one row per tenant the f16 tensor-core form (TenantLinearMma.cs) fills one column of eight and
/// spends integer work expanding every sign to ±1 f16 (bench/NOTES.md), so at 16–32 tenants it is bound by that work,
/// not by the bits it reads. Here the signs go to the tensor cores as they are stored:
/// - x_r is made an integer vector exactly enough: q = rint(x·2^(31−E)) with 2^E > max|x_r|. Scaling by a power of two
///   is exact, so only what lies below 2^(E−31) is rounded: 2⁻³¹ of the row's largest value, under f32's own rounding.
/// - q's 32 two's-complement bit planes b_p (weights w_p = 2^p, and −2^31 for the sign plane) give
///   Σ_k q_k·s_k = Σ_p w_p·(2·popc(b_p ∧ S) − popc(b_p)) with s = ±1 and S its bits (set = +1, BitLinear.Sign), and
///   Σ_p w_p·popc(b_p) = Σ_k q_k = Q.
/// - popc(b_p ∧ S_n) over 256 inputs for 16 planes × 8 outputs is one <see cref="Mma.M16N8K256And"/>: A = planes, B =
///   the sign words straight from memory, with no expansion. The counts are exact integers, so split-K partials add in
///   any order to the same sum: results do not depend on timing.
/// A row's term is then α·2^(E−31)·(2·Σ_p w_p·D_p − Q), formed in f64 from exact integers and added to y, which the
/// base term has written just before (the base-only form, TenantLinearBase.cs, or the fused form with these rows'
/// tenants left out).
///
/// Layout: lane (g, t) of a warp loads 16 bytes at word 16c + 4t of each 512-input chunk c, for output row g of each
/// of its 4 tiles of 8 outputs, and the A fragments of planes g, g+8 and g+16, g+24 for those words (the planes are
/// stored fragment by fragment, <see cref="PlaneAt"/>); words 4t, 4t+1 feed one product and 4t+2, 4t+3 the next, for
/// A and B alike, so every input is counted once. A last half chunk (in = 256 mod 512) takes words 2t, 2t+1 instead.
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Take the bit-serial form where it applies (the bench turns it off to compare).</summary>
    public static bool UseBits { get; set; } = true;

    /// <summary>A tenant with at most this many decode rows takes the bit-serial form: its cost grows with rows (each
    /// row is 32 planes), while the f16 form serves up to 8 rows of a tenant with the same products.</summary>
    public static int BitsMaxRows { get; set; } = 2;

    /// <summary>The bit-serial form adds four launches (a memset, the row max, the planes, the products), ~10 µs on the
    /// H100; with fewer tenants than this the fused form's tenant term costs less than that (bench/NOTES.md).</summary>
    public static int BitsMinTenants { get; set; } = 3;

    const int BitsTargetWarps = 2048, Planes = 32;

    /// <summary>Whether <see cref="Run"/> sends some decode rows' tenant terms to the bit-serial form (after
    /// <see cref="TakesMma"/>: the base term of those rows comes from the tensor-core form).</summary>
    static bool TakesBits(TenantRows tenants, Tensor w) => UseBits && tenants.BitsCount > 0 && w.Dim(1) % 256 == 0 && w.Dim(0) % 32 == 0;

    /// <summary>y[row] += α_slot·x[row]·S_slotᵀ for each (row, slot) pair of <paramref name="list"/> (I32 [count, 2]).</summary>
    static void DecodeBits(Tensor x, Tensor signs, Tensor scales, Tensor list, int count, Tensor y)
    {
        int outDim = signs.Dim(1), inDim = signs.Dim(2), words = inDim / 32;
        var dev = y.Device;
        using var planes = Tensor.Empty([count, Planes, words], DType.I32, dev);
        using var meta = Tensor.Empty([count, 4], DType.I32, dev);
        meta.Fill(0);
        // Integer atomics only (a max of non-negative float bits, a sum of integers): the same result in any order.
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<int>, ArrayView<int>, int>>(BitsMaxKernel)(
            new KernelConfig(count * ((inDim / 4 + 255) / 256), 256), x.View<Vec16>(), list.View<int>(), meta.View<int>(), inDim);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<int>, ArrayView<long>, int>>(BitPlanesKernel)(
            new KernelConfig(count * ((words + 7) / 8), 256), x.View<float>(), list.View<int>(), planes.View<uint>(), meta.View<int>(), meta.View<long>(), inDim);
        var (split, perRow) = BitsLayout(outDim, count);
        int blocks = perRow * count;
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<uint>, ArrayView<Vec16>, ArrayView<uint>, ArrayView<int>, ArrayView<long>, ArrayView<int>,
                                 ArrayView<float>, ArrayView<float>, int, int, int>>(BitsKernel)(
            new KernelConfig(blocks, 128), signs.View<Vec16>(), signs.View<uint>(), planes.View<Vec16>(), planes.View<uint>(), meta.View<int>(),
            meta.View<long>(), list.View<int>(), scales.View<float>(), y.View<float>(), inDim, outDim, split);
    }

    /// <summary>How the bit-serial products lay out their blocks of 4 warps for <paramref name="entries"/> rows: K split 4
    /// ways (a block takes one group of 32 outputs) when whole-K warps would not fill ~BitsTargetWarps, else 1 (four groups a
    /// block); and the blocks a row takes.</summary>
    static (int Split, int PerRow) BitsLayout(int outDim, int entries)
    {
        int groups = outDim / 32, split = BitsSplitOverride is 1 or 2 or 4 ? BitsSplitOverride : (groups + 3) / 4 * entries < BitsTargetWarps / 4 ? 4 : 1;
        int perBlock = 4 / split;
        return (split, (groups + perBlock - 1) / perBlock);
    }

    /// <summary>Forces the bit-serial products' split of K (1, 2 or 4; 0: by the batch's size, <see cref="BitsLayout"/>), so
    /// tests reach every layout at small shapes and the bench can time split 2 (two groups of 32 outputs a block, K in
    /// halves), which the layout does not pick: at 17–31 tenants of one row its blocks of half length might fill the last
    /// wave better than whole-K blocks (bench/NOTES.md, not yet measured).</summary>
    public static int BitsSplitOverride { get; set; }

    /// <summary>How far ahead of its products the three launches' bit-serial products (<see cref="BitsEndKernel"/>) load a
    /// chunk's signs: 2 (signs and planes two chunks ahead in two buffers, measured on the H200) or 3 (signs three
    /// chunks ahead, planes one: <see cref="SumDeep"/>, not yet timed). The bench sets it (<c>--bits-ahead</c>).</summary>
    public static int BitsSignsAhead { get; set; } = 2;

    /// <summary>Batches past the streamed form's rows whose tenant terms are all bit-serial take three launches
    /// (<see cref="DecodeBaseBits"/>) instead of the base form's and this form's seven; off, the seven (the bench compares).</summary>
    public static bool FuseBits { get; set; } = true;

    /// <summary>
    /// y (+)= x·Wᵀ + α_t·x·S_tᵀ for a decode batch whose tenant rows are all in <see cref="TenantRows.BitsList"/> and too many
    /// for the streamed form, in three launches: (1) the streamed grid's preparation blocks alone (<see cref="PrepWork"/>:
    /// x's split for the base and each row's max, planes and Σq, with no atomics, so no memset); (2) the base form's products
    /// into its split partials; (3) the bit-serial products, each output adding its base partials in split order, then its
    /// tenant term. Base rows' partials are added by <see cref="SumSplitsKernel"/> when there are any. The separate chain
    /// (SplitX, base, SumSplits, memset, row max, planes, products) spent ~28 µs of ~110 µs a linear in its small kernels and
    /// launches at 32 tenants on the H200 (bench/NOTES.md). Same operations in the same order as that chain: the same bits.
    /// </summary>
    static void DecodeBaseBits(Tensor x, Tensor w, Tensor signs, Tensor scales, TenantRows tenants, Tensor y, bool accumulate, OutParts outParts = default)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), chunks = inDim / 64, rows = x.Dim(0), words = inDim / 32;
        int groupCount = tenants.MmaGroupCount, entries = tenants.BitsCount;
        var dev = y.Device;
        var groups = tenants.MmaGroups!;
        var list = tenants.BitsList!;
        var (split, per) = BaseSplit(dev, outDim, inDim);
        int segs = (words + SegWords - 1) / SegWords;
        int prepSplit = groupCount * ((chunks + SplitChunks - 1) / SplitChunks), prepBits = entries * segs;
        var (bitsSplit, bitsPerRow) = BitsLayout(outDim, entries);
        var shape = new StreamShape
        {
            In = inDim, Out = outDim, Rows = rows, Split = split, Segs = segs, Entries = entries, PrepSplit = prepSplit, PrepBits = prepBits,
            BitsSplit = bitsSplit, BitsPerRow = bitsPerRow, Mode = accumulate ? 1 : 0, Parts = outParts,
        };
        using var xs = Tensor.Empty([groupCount * chunks * 4 * 32 * 4], DType.I32, dev);
        using var planes = Tensor.Empty([entries, Planes, words], DType.I32, dev);
        using var meta = Tensor.Empty([2 * (entries + entries * segs)], DType.I32, dev);   // longs: row maxima, then Σq per segment
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<int>, ArrayView<int>, ArrayView<Vec16>, ArrayView<uint>, ArrayView<long>, StreamShape>>(
            BitsPrepKernel)(new KernelConfig(prepSplit + prepBits, StreamWarps * 32), x.View<Vec16>(), groups.View<int>(), list.View<int>(),
                            xs.View<Vec16>(), planes.View<uint>(), meta.View<long>(), shape);
        using var partial = BaseProducts(w, xs, groups, groupCount, y, rows, split, per, accumulate);
        // the base rows' sums; the tenant rows' are added by the products' launch
        if (partial != null && tenants.FewBase > 0) SumSplitsLaunch(partial, groups, groupCount, y, split, accumulate, baseRowsOnly: true, outParts);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<uint>, ArrayView<Vec16>, ArrayView<uint>, ArrayView<long>, ArrayView<int>,
                                 ArrayView<float>, ArrayView<float>, ArrayView<float>, StreamShape>>(BitsSignsAhead == 3 ? BitsEndDeepKernel : BitsEndKernel)(
            new KernelConfig(bitsPerRow * entries, 128), signs.View<Vec16>(), signs.View<uint>(), planes.View<Vec16>(), planes.View<uint>(),
            meta.View<long>(), list.View<int>(), scales.View<float>(), (partial ?? y).View<float>(), y.View<float>(), shape);
    }

    /// <summary>The preparation of <see cref="DecodeBaseBits"/>: block b as the streamed grid's preparation block b.</summary>
    static void BitsPrepKernel(ArrayView<Vec16> x16, ArrayView<int> groups, ArrayView<int> list, ArrayView<Vec16> xs, ArrayView<uint> planes,
                               ArrayView<long> meta, StreamShape s)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        PrepWork(Grid.IdxX, x16, groups, list, xs, planes, meta, s);
    }

    /// <summary>The products of <see cref="DecodeBaseBits"/>: as <see cref="BitsKernel"/>, then per output y (+)= the base
    /// partials in split order (when K was split), then + the tenant term. The row's scalars and its base partials are
    /// loaded before the products, so their round trips overlap them.</summary>
    [LaunchBounds(128, 4)]   // the registers of 4 blocks a multiprocessor, as without the two buffers (bench/NOTES.md)
    static void BitsEndKernel(ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<Vec16> planes16, ArrayView<uint> planes, ArrayView<long> meta,
                              ArrayView<int> list, ArrayView<float> scales, ArrayView<float> partial, ArrayView<float> y, StreamShape s) =>
        BitsEnd(2, signs16, signs, planes16, meta, list, scales, partial, y, s);

    /// <summary><see cref="BitsEndKernel"/> with the signs three chunks ahead and the planes one (<see cref="SumDeep"/>;
    /// <see cref="BitsSignsAhead"/> 3).</summary>
    [LaunchBounds(128, 3)]
    static void BitsEndDeepKernel(ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<Vec16> planes16, ArrayView<uint> planes, ArrayView<long> meta,
                                  ArrayView<int> list, ArrayView<float> scales, ArrayView<float> partial, ArrayView<float> y, StreamShape s) =>
        BitsEnd(3, signs16, signs, planes16, meta, list, scales, partial, y, s);

    /// <summary>The body of the two kernels above; <paramref name="depth"/> a constant in each (ILGPU inlines it).</summary>
    static void BitsEnd(int depth, ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<Vec16> planes16, ArrayView<long> meta,
                        ArrayView<int> list, ArrayView<float> scales, ArrayView<float> partial, ArrayView<float> y, StreamShape s)
    {
        GridDependency.Release();   // launched dependent: the next kernel may start as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // nothing read or written before the kernel ahead has finished
        var part = SharedMemory.Allocate<long>(4 * 32);
        int b = Grid.IdxX, row = b / s.BitsPerRow, tid = Group.IdxX, perBlock = 4 / s.BitsSplit;
        int mine = tid / 32, oMine = (b % s.BitsPerRow * perBlock + mine) * 32 + tid % 32;
        long q = SumLongs(meta, s.Entries + (long)row * s.Segs, s.Segs);
        int big = (int)meta[row];
        float alpha = PartScale(scales, s.Parts, oMine, s.Out, list[2 * row + 1]);
        long at = list[2 * row] * (long)s.Out + oMine, yAt = PartAt(s.Parts, oMine, list[2 * row], s.Rows, s.Out);
        bool mineLive = mine < perBlock && oMine < s.Out;
        float baseSum = mineLive && s.Split > 1 ? SumSplits(partial, at, (long)s.Rows * s.Out, s.Split) : 0f;
        float before = mineLive && (s.Split == 1 || s.Mode != 0) ? y[yAt] : 0f;
        long sum = BitsSum(depth, b, signs16, signs, planes16, list, part, s.In, s.Out, s.BitsSplit, s.Parts, out _, out int o);
        if (o < 0) return;
        float term = (float)BitsTerm(sum, q, big, alpha);
        y[yAt] = (s.Split == 1 ? before : s.Mode != 0 ? before + baseSum : baseSum) + term;
    }

    /// <summary>meta[e, 0] = max over the row of |x| as f32 bits (non-negative floats order as their bits; a NaN's
    /// bits are above infinity's, so a non-finite row shows as ≥ 0x7F800000).</summary>
    static void BitsMaxKernel(ArrayView<Vec16> x16, ArrayView<int> list, ArrayView<int> meta, int inDim)
    {
        int vecs = inDim / 4, per = (vecs + 255) / 256, e = Grid.IdxX / per, i = Grid.IdxX % per * 256 + Group.IdxX;
        int m = i < vecs ? AbsBits(x16.AsAligned(16)[list[2 * e] * (long)vecs + i]) : 0;
        for (int o = 16; o > 0; o /= 2) m = IntrinsicMath.Max(m, Warp.ShuffleXor(m, o));
        if (Warp.LaneIdx == 0) Atomic.Max(ref meta[4 * e], m);
    }

    /// <summary>The largest |x| of four as f32 bits (non-negative floats order as their bits).</summary>
    static int AbsBits(Vec16 v) => IntrinsicMath.Max(IntrinsicMath.Max((int)(v.X & 0x7FFFFFFFu), (int)(v.Y & 0x7FFFFFFFu)),
                                                     IntrinsicMath.Max((int)(v.Z & 0x7FFFFFFFu), (int)(v.W & 0x7FFFFFFFu)));

    /// <summary>
    /// A warp per 32 inputs of a listed row: E from the row's max (a non-finite row is marked by its max and gets a NaN
    /// term), q for lane i's input 32w + i, then the 32×32 bit matrix transposed by shuffles, so lane p ends with plane
    /// p's word w. Q = Σ q is added into meta[e, 2..3] as a long.
    /// </summary>
    static void BitPlanesKernel(ArrayView<float> x, ArrayView<int> list, ArrayView<uint> planes, ArrayView<int> meta, ArrayView<long> meta64, int inDim)
    {
        int words = inDim / 32, per = (words + 7) / 8, e = Grid.IdxX / per, w = Grid.IdxX % per * 8 + Warp.WarpIdx, lane = Warp.LaneIdx;
        if (w >= words) return;
        int exp = BitsExponent(meta[4 * e]);
        float f = Interop.IntAsFloat((uint)(31 - exp + 127) << 23);
        long q = PlaneWord(planes, x[list[2 * e] * (long)inDim + 32L * w + lane], f, meta[4 * e] >= 0x7F800000,
                           PlaneAt(e, lane, w, words), lane, true);
        for (int o = 16; o > 0; o /= 2) q += Warp.ShuffleXor(q, o);
        if (lane == 0) Atomic.Add(ref meta64[2 * e + 1], q);
    }

    /// <summary>Lane i's q = rint(v·f) (0 for a non-finite row), the warp's 32 q transposed so lane p holds plane p's word,
    /// stored at planes[at] (when <paramref name="live"/>, the same for the whole warp); returns q.</summary>
    static long PlaneWord(ArrayView<uint> planes, float v, float f, bool bad, long at, int lane, bool live)
    {
        float sv = v * f;   // |sv| < 2^31 and a multiple of 128 past 2^30: the int holds it
        int qi = bad || !live ? 0 : (int)(sv >= 0 ? sv + 0.5f : sv - 0.5f);
        uint b = (uint)qi;
        b = Transpose(b, lane, 16, 0x0000FFFFu);
        b = Transpose(b, lane, 8, 0x00FF00FFu);
        b = Transpose(b, lane, 4, 0x0F0F0F0Fu);
        b = Transpose(b, lane, 2, 0x33333333u);
        b = Transpose(b, lane, 1, 0x55555555u);
        if (live) planes[at] = b;
        return qi;
    }

    /// <summary>
    /// Where word w of plane p of listed row e lies in the planes tensor ([entries, 32·words] words): planes q and q + 8
    /// (q = 0…7 and 16…23) interleaved word pair by word pair in one pair row of 2·words, so the 16 bytes at word pair
    /// m are (P_q[2m], P_q+8[2m], P_q[2m+1], P_q+8[2m+1]): one binary product's A fragment as it is loaded (PTX ISA,
    /// "Matrix Fragments for mma.m16n8k256": a0…a3 = rows g, g+8 of words k, k+1). Laid out plane by plane, ptxas
    /// assembled each fragment from two loads with 4 moves, and the warps waited on those moves right after the loads
    /// (half of the products' stall samples, bench/NOTES.md). Pair row r = q for q &lt; 8, q − 8 for q ≥ 16.
    /// </summary>
    static long PlaneAt(long e, int p, int w, int words) =>
        (e * Planes + ((p & 7) | (p >> 4 << 3)) * 2) * words + 4 * (w >> 1) + 2 * (w & 1) + ((p >> 3) & 1);

    /// <summary>E with 2^E above the max whose f32 bits are given: field − 126 for a normal one; tiny rows (under
    /// 2^-91) share E = −90 so 2^(31−E) stays a normal f32.</summary>
    static int BitsExponent(int maxBits) => IntrinsicMath.Max(((maxBits >> 23) & 0xFF) - 126, -90);

    /// <summary>One step of the 32×32 bit transpose: lanes j apart swap the off-diagonal j×j blocks.</summary>
    static uint Transpose(uint b, int lane, int j, uint low)
    {
        uint o = Warp.ShuffleXor(b, j);
        return (lane & j) == 0 ? (b & low) | ((o & low) << j) : (b & ~low) | ((o >> j) & low);
    }

    /// <summary>The counts of one warp's 4 tiles: per tile, planes 0–15 (P) and 16–31 (H).</summary>
    struct BitsAcc
    {
        public Mma.Int4 P0, H0, P1, H1, P2, H2, P3, H3;
    }

    /// <summary>The lane's A fragments of one chunk: planes g, g+8 (L) and g+16, g+24 (H), words 4t, 4t+1 (0) and 4t+2, 4t+3 (1).</summary>
    struct PlaneWords
    {
        public Vec16 L0, L1, H0, H1;
    }

    /// <summary>The lane's loads for one chunk: its plane words and its sign words of the 4 tiles.</summary>
    struct BitsChunk
    {
        public PlaneWords P;
        public Vec16 S0, S1, S2, S3;
    }

    /// <summary>A block of 4 warps: its counts (<see cref="BitsSum"/>, whose layout the warps share the row's planes
    /// through L1 in), each output's term added to y.</summary>
    [LaunchBounds(128, 4)]   // as BitsEndKernel
    static void BitsKernel(ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<Vec16> planes16, ArrayView<uint> planes, ArrayView<int> meta,
                           ArrayView<long> meta64, ArrayView<int> list, ArrayView<float> scales, ArrayView<float> y, int inDim, int outDim, int split)
    {
        var part = SharedMemory.Allocate<long>(4 * 32);
        long sum = BitsSum(2, Grid.IdxX, signs16, signs, planes16, list, part, inDim, outDim, split, default, out int e, out int o);
        if (o < 0) return;
        y[list[2 * e] * (long)outDim + o] += (float)BitsTerm(sum, meta64[2 * e + 1], meta[4 * e], scales[list[2 * e + 1]]);
    }

    /// <summary>Block <paramref name="b"/>'s work: Σ_p w_p·popc(b_p ∧ S_n) over all inputs for the thread's output
    /// <paramref name="o"/> of listed row <paramref name="e"/> (o = −1 for a thread with none). The block takes four groups
    /// of 32 outputs of one row, each warp all of K (<paramref name="split"/> 1), or one group with each warp a quarter
    /// of K (4, for batches too small to fill the GPU otherwise); each chunk's loads go out <paramref name="depth"/>
    /// chunks before its products (1 or 2; 3: the signs three chunks ahead and the planes one, <see cref="SumDeep"/>). A
    /// group of 32 outputs lies in one part of <paramref name="parts"/> (each part a multiple of 32 outputs), whose signs
    /// it reads. Every thread of the block must call it (it synchronises the block).</summary>
    static long BitsSum(int depth, int b, ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<Vec16> planes16, ArrayView<int> list,
                        ArrayView<long> part, int inDim, int outDim, int split, OutParts parts, out int e, out int o)
    {
        int lane = Warp.LaneIdx, wi = Warp.WarpIdx, g = lane >> 2, t = lane & 3;
        int groupsPerBlock = 4 / split, og = wi / split, piece = wi % split;
        int perRow = (outDim / 32 + groupsPerBlock - 1) / groupsPerBlock;
        e = b / perRow;
        int o0 = (b % perRow * groupsPerBlock + og) * 32;
        bool live = o0 < outDim;
        int slot = list[2 * e + 1];
        int chunks = (inDim + 511) / 512;
        int per = (chunks + split - 1) / split, c0 = piece * per, c1 = live ? IntrinsicMath.Min(chunks, c0 + per) : c0;
        int vecs = inDim / 128, full = inDim / 512, cEnd = IntrinsicMath.Min(c1, full);
        long pRow = ((long)e * Planes + 2 * g) * vecs, sRow = PartAt(parts, o0, slot, parts.Cap, outDim) + g;   // pRow: pair row g, in 16-byte units
        var acc = default(BitsAcc);
        // Two buffers, each loaded two chunks before its products and reloaded right after them, so a loaded fragment is
        // used where it was loaded (one buffer rotated, cur = next, needs a copy of the loads at the loop's end, and the
        // warp waits on it there). Full chunks in the loop, loads past the range clamped to its last full chunk (read
        // twice, counted once); the half chunk, when the warp's range has it, after. The streamed kernel keeps the one
        // buffer: the second's registers cost it more than the copy (8 tenants, bench/NOTES.md).
        if (depth == 1)
        {
            var next = LoadChunk(signs16, signs, planes16, pRow, sRow, c0, c0 < c1, inDim, t);
            for (int c = c0; c < c1; c++)
            {
                var cur = next;
                next = LoadChunk(signs16, signs, planes16, pRow, sRow, c + 1, c + 1 < c1, inDim, t);
                acc = CountChunk(cur, acc, lane);
            }
        }
        else if (depth == 3 && cEnd > c0) acc = SumDeep(acc, signs16, planes16, pRow, sRow, c0, cEnd, vecs, t, lane);
        else if (cEnd > c0)
        {
            int last = cEnd - 1;
            var ka = LoadFull(signs16, planes16, pRow, sRow, c0, vecs, t);
            var kb = LoadFull(signs16, planes16, pRow, sRow, IntrinsicMath.Min(c0 + 1, last), vecs, t);
            for (int c = c0; c < cEnd; c += 2)
            {
                acc = CountChunk(ka, acc, lane);
                ka = LoadFull(signs16, planes16, pRow, sRow, IntrinsicMath.Min(c + 2, last), vecs, t);
                if (c + 1 < cEnd) acc = CountChunk(kb, acc, lane);
                kb = LoadFull(signs16, planes16, pRow, sRow, IntrinsicMath.Min(c + 3, last), vecs, t);
            }
        }
        if (depth > 1 && c0 <= full && full < c1) acc = CountChunk(LoadHalf(signs, planes16, pRow, sRow, full, inDim, t), acc, lane);

        Gather(part, wi, 0, lane, g, t, acc.P0, acc.H0);
        Gather(part, wi, 1, lane, g, t, acc.P1, acc.H1);
        Gather(part, wi, 2, lane, g, t, acc.P2, acc.H2);
        Gather(part, wi, 3, lane, g, t, acc.P3, acc.H3);
        Group.Barrier();
        int tid = Group.IdxX, n = tid % 32, mine = tid / 32;
        o = (b % perRow * groupsPerBlock + mine) * 32 + n;
        if (mine >= groupsPerBlock || o >= outDim)
        {
            o = -1;
            return 0;
        }
        long sum = 0;
        for (int k = 0; k < split; k++) sum += part[(mine * split + k) * 32 + n];
        return sum;
    }

    /// <summary>The lane's sign words of one chunk for the warp's 4 tiles.</summary>
    struct SignVecs
    {
        public Vec16 S0, S1, S2, S3;
    }

    /// <summary>
    /// The full chunks [c0, cEnd) with each chunk's signs loaded three chunks before its products and its planes one.
    /// With two buffers of both (the loop above) the products' largest wait was still on their own loads (Nsight Compute,
    /// 4096² at 32 tenants on the H200: 1483 of 3299 stall samples on a buffer's first product; bench/NOTES.md): the signs
    /// come from DRAM, two chunks (2 KB a warp) in flight were not enough at 16 warps a multiprocessor. The planes are the
    /// row's, read by every block of the row, so they come from L1 or L2 and one chunk ahead covers them; their second
    /// buffer's registers go to a third chunk of signs. Unrolled by 6 (3 sign buffers × 2 plane buffers) so that every
    /// load lands in the registers its product reads: no buffer is copied into another (a copy waits for its load).
    /// Loads past the range are clamped to its last chunk (read again, not counted).
    /// </summary>
    static BitsAcc SumDeep(BitsAcc acc, ArrayView<Vec16> signs16, ArrayView<Vec16> planes16, long pRow, long sRow, int c0, int cEnd, int vecs, int t, int lane)
    {
        int last = cEnd - 1;
        var s0 = LoadSigns(signs16, sRow, c0, vecs, t);
        var s1 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c0 + 1, last), vecs, t);
        var s2 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c0 + 2, last), vecs, t);
        var p0 = LoadPlanes(planes16, pRow, c0, vecs, t);
        PlaneWords p1;
        for (int c = c0; c < cEnd; c += 6)
        {
            p1 = LoadPlanes(planes16, pRow, IntrinsicMath.Min(c + 1, last), vecs, t);
            acc = CountSigns(p0, s0, acc, lane);
            s0 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c + 3, last), vecs, t);
            p0 = LoadPlanes(planes16, pRow, IntrinsicMath.Min(c + 2, last), vecs, t);
            if (c + 1 < cEnd) acc = CountSigns(p1, s1, acc, lane);
            s1 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c + 4, last), vecs, t);
            p1 = LoadPlanes(planes16, pRow, IntrinsicMath.Min(c + 3, last), vecs, t);
            if (c + 2 < cEnd) acc = CountSigns(p0, s2, acc, lane);
            s2 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c + 5, last), vecs, t);
            p0 = LoadPlanes(planes16, pRow, IntrinsicMath.Min(c + 4, last), vecs, t);
            if (c + 3 < cEnd) acc = CountSigns(p1, s0, acc, lane);
            s0 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c + 6, last), vecs, t);
            p1 = LoadPlanes(planes16, pRow, IntrinsicMath.Min(c + 5, last), vecs, t);
            if (c + 4 < cEnd) acc = CountSigns(p0, s1, acc, lane);
            s1 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c + 7, last), vecs, t);
            p0 = LoadPlanes(planes16, pRow, IntrinsicMath.Min(c + 6, last), vecs, t);
            if (c + 5 < cEnd) acc = CountSigns(p1, s2, acc, lane);
            s2 = LoadSigns(signs16, sRow, IntrinsicMath.Min(c + 8, last), vecs, t);
        }
        return acc;
    }

    /// <summary>Full chunk c's plane fragments: pair rows g (L) and 8 + g (H) at word pairs 8c + 2t and + 1.</summary>
    static PlaneWords LoadPlanes(ArrayView<Vec16> planes16, long pRow, int c, int vecs, int t)
    {
        var p16 = planes16.AsAligned(16);
        long pa = pRow + 8 * c + 2 * t;
        PlaneWords r;
        r.L0 = p16[pa];
        r.L1 = p16[pa + 1];
        r.H0 = p16[pa + 16 * vecs];
        r.H1 = p16[pa + 16 * vecs + 1];
        return r;
    }

    /// <summary>Full chunk c's sign words: 16 bytes at word 16c + 4t of each of the 4 tiles' row g.</summary>
    static SignVecs LoadSigns(ArrayView<Vec16> signs16, long sRow, int c, int vecs, int t)
    {
        var s16 = signs16.AsAligned(16);
        long sa = sRow * vecs + 4 * c + t;
        SignVecs r;
        r.S0 = s16[sa];
        r.S1 = s16[sa + 8 * vecs];
        r.S2 = s16[sa + 16 * vecs];
        r.S3 = s16[sa + 24 * vecs];
        return r;
    }

    /// <summary><see cref="CountChunk"/> from planes and signs held apart.</summary>
    static BitsAcc CountSigns(PlaneWords p, SignVecs s, BitsAcc acc, int lane)
    {
        (acc.P0, acc.H0) = Count(p, s.S0, acc.P0, acc.H0, lane);
        (acc.P1, acc.H1) = Count(p, s.S1, acc.P1, acc.H1, lane);
        (acc.P2, acc.H2) = Count(p, s.S2, acc.P2, acc.H2, lane);
        (acc.P3, acc.H3) = Count(p, s.S3, acc.P3, acc.H3, lane);
        return acc;
    }

    /// <summary>A row's tenant term α·2^(E−31)·(2·sum − Q) from its exact integers (the row max's f32 bits give E; a
    /// non-finite row gets NaN).</summary>
    static double BitsTerm(long sum, long q, int big, float alpha)
    {
        // 2^(E−31) as an f64 built from its bits; (2·sum − Q) is an exact integer under 2^53.
        double unit = Interop.IntAsFloat((ulong)(BitsExponent(big) - 31 + 1023) << 52);
        return big >= 0x7F800000 ? double.NaN : (2 * sum - q) * unit * alpha;
    }

    /// <summary>Full chunk c's loads: the fragments of pair rows g (planes g, g+8: L) and 8 + g (planes g+16, g+24: H) at
    /// word pairs 8c + 2t and + 1 (words 16c + 4t … + 3), and 16 bytes at word 16c + 4t of the 4 tiles' row g.</summary>
    static BitsChunk LoadFull(ArrayView<Vec16> signs16, ArrayView<Vec16> planes16, long pRow, long sRow, int c, int vecs, int t)
    {
        var p = LoadPlanes(planes16, pRow, c, vecs, t);
        var s = LoadSigns(signs16, sRow, c, vecs, t);
        return new BitsChunk { P = p, S0 = s.S0, S1 = s.S1, S2 = s.S2, S3 = s.S3 };
    }

    /// <summary>The last half chunk's loads (in = 256 mod 512, chunk c = in / 512): lane t takes words 16c + 2t and + 1,
    /// the fragments at word pair 8c + t and the sign words as X, Y; the second product's operands stay zero, which
    /// count nothing.</summary>
    static BitsChunk LoadHalf(ArrayView<uint> signs, ArrayView<Vec16> planes16, long pRow, long sRow, int c, int inDim, int t)
    {
        BitsChunk r = default;
        var p16 = planes16.AsAligned(16);
        int vecs = inDim / 128, words = inDim / 32;
        long pa = pRow + 8 * c + t, sw = sRow * words + 16 * c + 2 * t;
        r.P.L0 = p16[pa];
        r.P.H0 = p16[pa + 16 * vecs];
        r.S0.X = signs[sw]; r.S0.Y = signs[sw + 1];
        r.S1.X = signs[sw + 8 * words]; r.S1.Y = signs[sw + 8 * words + 1];
        r.S2.X = signs[sw + 16 * words]; r.S2.Y = signs[sw + 16 * words + 1];
        r.S3.X = signs[sw + 24 * words]; r.S3.Y = signs[sw + 24 * words + 1];
        return r;
    }

    /// <summary>Chunk c's loads, full or half (zeros when not <paramref name="live"/>).</summary>
    static BitsChunk LoadChunk(ArrayView<Vec16> signs16, ArrayView<uint> signs, ArrayView<Vec16> planes16, long pRow, long sRow, int c, bool live, int inDim, int t)
    {
        if (!live) return default;
        return c < inDim / 512 ? LoadFull(signs16, planes16, pRow, sRow, c, inDim / 128, t) : LoadHalf(signs, planes16, pRow, sRow, c, inDim, t);
    }

    /// <summary>One chunk's products for the warp's 4 tiles.</summary>
    static BitsAcc CountChunk(BitsChunk k, BitsAcc acc, int lane) =>
        CountSigns(k.P, new SignVecs { S0 = k.S0, S1 = k.S1, S2 = k.S2, S3 = k.S3 }, acc, lane);

    /// <summary>Both products of one chunk for one tile: words X, Y of each operand, then Z, W.</summary>
    static (Mma.Int4, Mma.Int4) Count(PlaneWords p, Vec16 s, Mma.Int4 lo, Mma.Int4 hi, int lane)
    {
        lo = Mma.M16N8K256And(p.L0.X, p.L0.Y, p.L0.Z, p.L0.W, s.X, s.Y, lo.X, lo.Y, lo.Z, lo.W, lane);
        hi = Mma.M16N8K256And(p.H0.X, p.H0.Y, p.H0.Z, p.H0.W, s.X, s.Y, hi.X, hi.Y, hi.Z, hi.W, lane);
        lo = Mma.M16N8K256And(p.L1.X, p.L1.Y, p.L1.Z, p.L1.W, s.Z, s.W, lo.X, lo.Y, lo.Z, lo.W, lane);
        hi = Mma.M16N8K256And(p.H1.X, p.H1.Y, p.H1.Z, p.H1.W, s.Z, s.W, hi.X, hi.Y, hi.Z, hi.W, lane);
        return (lo, hi);
    }

    /// <summary>Σ_p w_p·D_p for the tile's outputs 2t and 2t+1: this lane's planes g, g+8 (lo) and g+16, g+24 (hi),
    /// then the 8 lanes of each t (g = 0 … 7) added by shuffles; lane t writes the warp's two sums.</summary>
    static void Gather(ArrayView<long> part, int wi, int tile, int lane, int g, int t, Mma.Int4 lo, Mma.Int4 hi)
    {
        long top = g == 7 ? -(1L << 31) : 1L << (24 + g);
        long v0 = ((long)lo.X << g) + ((long)lo.Z << (g + 8)) + ((long)hi.X << (g + 16)) + hi.Z * top;
        long v1 = ((long)lo.Y << g) + ((long)lo.W << (g + 8)) + ((long)hi.Y << (g + 16)) + hi.W * top;
        for (int o = 4; o < 32; o *= 2)
        {
            v0 += Warp.ShuffleXor(v0, o);
            v1 += Warp.ShuffleXor(v1, o);
        }
        if (g == 0)
        {
            part[wi * 32 + tile * 8 + 2 * t] = v0;
            part[wi * 32 + tile * 8 + 2 * t + 1] = v1;
        }
    }
}

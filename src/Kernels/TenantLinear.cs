using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The multi-tenant linear, what BitDelta exists for (Liu et al., arXiv 2402.10193, §4: one base in memory, many
/// fine-tunes as 1-bit deltas, decoded together): for a batch whose row r belongs to tenant t(r),
/// y_r (+)= x_r·(W_base + α_t·S_t)ᵀ, and y_r (+)= x_r·W_baseᵀ for a row of the base alone (t = −1).
/// Every tenant's signs sit in one pool, Sign1 [capacity, out, in] (slot t's matrix at [t]), and its scales in
/// an f32 [capacity]; a slot is a tenant loaded on the device.
///
/// Two forms, picked per segment (a maximal run of rows of one tenant, <see cref="TenantRows"/>):
/// - decode (segments shorter than <see cref="PrefillMinRows"/>): for an f16 base with in a multiple of 64 and out of
///   16 (every Llama linear), on tensor cores, 32 rows a launch (TenantLinearMma.cs). Otherwise like the GEMV
///   it streams each row of W_base once for up to 8 rows of x, 16 bytes a lane, and folds each tenant's signs
///   into the weights it read (W + α·S in registers, as many times as distinct tenants in the 8 rows), so the base
///   is read once and each tenant's bits once per group of rows, and no f32 weight is ever written. From 9 to 32 rows
///   a block stages x in shared memory per K-tile instead (TenantLinearTiled.cs).
/// - prefill (longer segments): the tiled GEMM with the same fold where it stages W in shared memory, one launch
///   a segment.
/// On the managed CPU device: the base matmul for all rows, then the delta term per segment (<see cref="BitLinear.Host"/>),
/// the very operations the one-tenant path runs, so a tenant's rows give what its fine-tune gives alone.
/// </summary>
public static partial class TenantLinear
{
    /// <summary>Segments of at least this many rows take the GEMM: one 64-row tile of it is then full.</summary>
    public const int PrefillMinRows = 64;

    /// <summary>The spec: per row and output, the f64 sum of x·(w + α·s) over the inputs, with the tenant's α and signs
    /// (w alone for slot −1). <paramref name="signs"/> is [capacity, out, words], <paramref name="scales"/> [capacity].</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<uint> signs, ReadOnlySpan<float> scales,
                            ReadOnlySpan<int> slots, Span<float> y, int rows, int inDim, int outDim, bool accumulate)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        for (int r = 0; r < rows; r++)
        {
            int t = slots[r];
            var sT = t < 0 ? default : signs.Slice(t * outDim * words, outDim * words);
            for (int o = 0; o < outDim; o++)
            {
                double s = accumulate ? y[r * outDim + o] : 0;
                for (int i = 0; i < inDim; i++)
                {
                    double wi = w[o * inDim + i];
                    if (t >= 0) wi += (double)scales[t] * BitLinear.Sign(sT, words, o, i);
                    s += wi * x[r * inDim + i];
                }
                y[r * outDim + o] = (float)s;
            }
        }
    }

    /// <summary>y (+)= per row x·(W + α_t·S_t)ᵀ. x f32 [rows, in]; w [out, in] f16/bf16/f32; signs Sign1 [capacity,
    /// out, in]; scales f32 [capacity]; y f32 [rows, out]; <paramref name="tenants"/> names each row's slot.</summary>
    public static void Run(Tensor x, Tensor w, Tensor signs, Tensor scales, TenantRows tenants, Tensor y, bool accumulate = false)
    {
        NeedOperands(x, w, signs, scales, tenants, y);
        int outDim = w.Dim(0), inDim = w.Dim(1);
        if (signs.DType != DType.Sign1 || signs.Rank != 3 || signs.Dim(1) != outDim || signs.Dim(2) != inDim)
            throw new ArgumentException($"tenant linear signs: expected Sign1 [capacity, {outDim}, {inDim}], got {signs}");
        int capacity = signs.Dim(0);
        Need.Count("tenant linear scales", scales, capacity);
        int rows = tenants.Count;
        NeedRows(x, y, tenants, inDim, outDim, capacity);
        if (rows == 0 || outDim == 0) return;
        if (rows == 1 && GemvOne.Takes(x, w))
        {
            // one decode row: one warp an output reads its whole row of W, no block meets another (GemvOne.cs)
            GemvOne.Run(x, w, signs, scales, tenants.Slots[0], y, accumulate);
            return;
        }
        if (GemvOne.TakesFew(x, w, rows) && tenants.Slots.All(t => t < 0))
        {
            // two base rows; with tenants' signs the few-row form lost to the streamed form (bench/NOTES.md)
            GemvOne.RunFew(x, w, null, null, null, y, accumulate);
            return;
        }
        using var x2 = x.Reshape(rows, inDim);
        using var y2 = y.Reshape(rows, outDim);
        if (!y.Device.IsIlgpu)
        {
            MatMul.Run(x2, w, y2, accumulate);   // MatMul: the base term for every row
            var xs = x2.Host<float>();
            var ys = y2.Host<float>();
            var ss = signs.Host<uint>();
            var alpha = scales.Host<float>();
            long slotWords = (long)outDim * DTypes.SignWordsPerRow(inDim);
            foreach (var (start, count, slot) in tenants.Segments)
                if (slot >= 0)
                    BitLinear.Host(xs.Slice(start * inDim, count * inDim), ss.Slice((int)(slot * slotWords), (int)slotWords), alpha[slot],
                                   ys.Slice(start * outDim, count * outDim), count, inDim, outDim);
            return;
        }
        foreach (var (start, count, slot) in tenants.Segments)
        {
            if (count < PrefillMinRows) continue;
            using var xs = x2.Slice(start, count);
            using var ys = y2.Slice(start, count);
            if (slot >= 0 && !(MatMul.TakesMmaGemm(xs, w, inDim) && MatMul.TakesMmaSigns(xs, count, inDim)))
                MatMul.GemmFolded(xs, w, signs, scales, slot, ys, accumulate);
            else
            {
                // as BitLinear.Apply runs one tenant: the base GEMM, then α·x·Sᵀ of the slot, both on tensor cores
                MatMul.Run(xs, w, ys, accumulate);
                if (slot >= 0)
                    MatMul.GemmSigns(xs, signs.View<uint>(), (long)slot * outDim * DTypes.SignWordsPerRow(inDim), scales.View<float>(), slot, 0f, ys, count, inDim, outDim);
            }
        }
        if (TakesMma(tenants, x2, w) && TakesStream(tenants, w))
            DecodeStream(x2, w, signs, scales, tenants, y2, accumulate);
        else if (TakesMma(tenants, x2, w))
        {
            bool bits = TakesBits(tenants, w);
            if (UseBase && tenants.DecodeTenantsAllBits && bits && FuseBits)
            {
                DecodeBaseBits(x2, w, signs, scales, tenants, y2, accumulate);
                return;
            }
            if (UseBase && tenants.DecodeTenantsAllBits && (bits || tenants.BitsCount == 0))
                DecodeBase(x2, w, tenants.MmaGroups!, tenants.MmaGroupCount, y2, accumulate);
            else
                DecodeMma(x2, w, signs, scales, bits ? tenants.MmaGroupsBits! : tenants.MmaGroups!, tenants.MmaGroupCount, y2, accumulate);
            if (bits) DecodeBits(x2, signs, scales, tenants.BitsList!, tenants.BitsCount, y2);
        }
        else if (tenants.DecodeList is { } list)
            Decode(x2, w, signs, scales, tenants.DeviceSlots, list, y2, accumulate);
    }

    /// <summary>
    /// Two or three linears that read the same x in one launch (q, k, v; gate, up): y_j (+)= per row x·(W_j + α_t,j·S_t,j)ᵀ
    /// for part j, where <paramref name="w"/> is the W_j one after another as one [out, in] (LlamaWeights.cs
    /// keeps a layer's q/k/v and gate/up so), <paramref name="signs"/> the parts' pools one after another (Sign1
    /// [capacity·out, in]: part j's [capacity, n_j, in] at row capacity·start_j), <paramref name="scales"/> f32
    /// [parts·capacity] and <paramref name="y"/> f32 [rows·out], part j's [rows, n_j] at rows·start_j; <paramref name="ends"/>
    /// the parts' ends (the last = out). Each part's results are what its own <see cref="Run"/> gives, up to the rounding
    /// of a different split of K. The streamed form (TenantLinearStream.cs) takes the parts in one grid, and past its rows
    /// the base and bit-serial forms' three launches where the base splits K: false where neither applies (nor where
    /// <see cref="Run"/> takes GemvOne), and then nothing was launched; the caller runs the parts one by one. At 7B shapes on the H200,
    /// q/k/v as one 12288×4096 call at 8 tenants took 61.4 µs against 3 × 32.3 apart (bench/NOTES.md).
    /// </summary>
    public static bool RunParts(Tensor x, Tensor w, Tensor signs, Tensor scales, int[] ends, TenantRows tenants, Tensor y, bool accumulate = false)
    {
        NeedOperands(x, w, signs, scales, tenants, y);
        int outDim = w.Dim(0), inDim = w.Dim(1), rows = tenants.Count;
        if (ends.Length is < 2 or > 3 || ends[^1] != outDim || ends[0] <= 0 || ends.Zip(ends.Skip(1)).Any(p => p.First >= p.Second))
            throw new ArgumentException($"tenant linear parts: expected 2 or 3 ascending ends ending at {outDim}, got [{string.Join(", ", ends)}]");
        if (signs.DType != DType.Sign1 || signs.Rank != 2 || signs.Dim(1) != inDim || signs.Dim(0) % outDim != 0)
            throw new ArgumentException($"tenant linear parts' signs: expected Sign1 [capacity·{outDim}, {inDim}], got {signs}");
        int capacity = signs.Dim(0) / outDim;
        Need.Count("tenant linear parts' scales", scales, (long)ends.Length * capacity);
        NeedRows(x, y, tenants, inDim, outDim, capacity);
        if (rows == 0 || !y.Device.IsIlgpu) return false;
        // the rows Run gives to GemvOne (one row; two of the base alone) stay there, each part its own launch; so do
        // batches with a prefill segment (serve's prompt chunks beside its decodes): these forms run decode rows only
        if ((rows == 1 && GemvOne.Takes(x, w)) || (GemvOne.TakesFew(x, w, rows) && tenants.Slots.All(t => t < 0))) return false;
        if (tenants.Segments.Any(sg => sg.Count >= PrefillMinRows)) return false;
        for (int j = 0; j < ends.Length; j++)
            if ((ends[j] - (j == 0 ? 0 : ends[j - 1])) % 32 != 0) return false;   // a tenant block's 32 outputs in one part
        using var x2 = x.Reshape(rows, inDim);
        if (!TakesMma(tenants, x2, w)) return false;
        var parts = new OutParts { S1 = ends[0], S2 = ends.Length == 3 ? ends[1] : outDim, Cap = capacity };
        using var y2 = y.Reshape(rows, outDim);
        if (TakesStream(tenants, w))
        {
            DecodeStream(x2, w, signs, scales, tenants, y2, accumulate, parts);
            return true;
        }
        // past the streamed form's rows: the three launches, where the base form splits K (with one split it writes y
        // itself, row by row: not each part's place)
        if (UseBase && tenants.DecodeTenantsAllBits && BaseSplit(y.Device, outDim, inDim).Split > 1)
        {
            if (TakesBits(tenants, w) && FuseBits)
            {
                DecodeBaseBits(x2, w, signs, scales, tenants, y2, accumulate, parts);
                return true;
            }
            if (tenants.BitsCount == 0)
            {
                // the base alone (every row decodes, none bit-serial): split, products into split partials, their sums
                // into each part's place
                DecodeBase(x2, w, tenants.MmaGroups!, tenants.MmaGroupCount, y2, accumulate, parts);
                return true;
            }
        }
        return false;
    }

    /// <summary>What <see cref="Run"/> and <see cref="RunParts"/> ask of their operands alike: one device, f32 x, y and
    /// scales, a float W [out, in].</summary>
    static void NeedOperands(Tensor x, Tensor w, Tensor signs, Tensor scales, TenantRows tenants, Tensor y)
    {
        Need.SameDevice(x, w, signs, scales, y);
        if (tenants.Device != x.Device) throw new ArgumentException($"tenant linear: rows of {tenants.Device} and x {x} are on different devices");
        Need.F32("tenant linear x", x);
        Need.F32("tenant linear y", y);
        Need.Float("tenant linear weight", w);
        Need.F32("tenant linear scales", scales);
        if (w.Rank != 2) throw new ArgumentException($"tenant linear weight: expected [out, in], got {w}");
    }

    /// <summary>x and y hold the batch's rows, and every row's slot is −1 or in the pool.</summary>
    static void NeedRows(Tensor x, Tensor y, TenantRows tenants, int inDim, int outDim, int capacity)
    {
        Need.Count("tenant linear x", x, (long)tenants.Count * inDim);
        Need.Count("tenant linear y", y, (long)tenants.Count * outDim);
        foreach (var s in tenants.Slots)
            if (s < -1 || s >= capacity) throw new ArgumentException($"tenant linear: slot {s} outside the pool's {capacity}");
    }

    /// <summary>The decode form alone, over the rows in <paramref name="list"/> (I32), for tests and benchmarks.</summary>
    public static void Decode(Tensor x, Tensor w, Tensor signs, Tensor scales, Tensor slots, Tensor list, Tensor y, bool accumulate)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), listed = (int)list.ElementCount;
        if (listed == 0) return;
        bool vector = w.DType != DType.F32 && inDim % 8 == 0 && Aligned16(x) && Aligned16(w);
        if (vector && listed > GemvMaxRows)
        {
            DecodeTiled(x, w, signs, scales, slots, list, y, accumulate);
            return;
        }
        int chunks = (listed + GemvMaxRows - 1) / GemvMaxRows;
        long warps = (long)outDim * chunks;
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<ushort>, ArrayView<Vec16>, int, ArrayView<float>, ArrayView<Vec16>, ArrayView<uint>, ArrayView<float>,
                                      ArrayView<int>, ArrayView<int>, ArrayView<float>, int, int, int, int>>(DecodeKernel)(
            new KernelConfig((int)((warps + DecodeWarps - 1) / DecodeWarps), DecodeWarps * 32),
            Elem.View(w), w.View<Vec16>(), Elem.Code(w.DType), x.View<float>(), x.View<Vec16>(), signs.View<uint>(), scales.View<float>(),
            slots.View<int>(), list.View<int>(), y.View<float>(), listed, inDim, outDim, (accumulate ? 1 : 0) | (vector ? 2 : 0));
    }

    const int DecodeWarps = 4;

    /// <summary>Up to 8 listed rows a warp works on: their row ids, slots and scales (named fields: registers).</summary>
    struct Rows8
    {
        public long X0, X1, X2, X3, X4, X5, X6, X7;
        public int T0, T1, T2, T3, T4, T5, T6, T7;
        public float A0, A1, A2, A3, A4, A5, A6, A7;
    }

    /// <summary>
    /// Warp g works on output o = g / chunks and the 8 listed rows of chunk g % chunks (warps of one o are
    /// neighbours, so when more than 8 rows are listed their repeated reads of W's row hit L1/L2, not DRAM). Lane l
    /// reads 16-byte chunks l, l+32, … of W's row o (8 f16/bf16 weights), and for each of its rows adds
    /// x·(w ± α) with the row's tenant's sign byte for those 8 weights; consecutive rows of one tenant reuse the
    /// folded weights. Rows of slot −1 take w alone. The warp's partial sums reduce as in the GEMV.
    /// </summary>
    static void DecodeKernel(ArrayView<ushort> w, ArrayView<Vec16> w16, int code, ArrayView<float> x, ArrayView<Vec16> x16,
                             ArrayView<uint> signs, ArrayView<float> scales, ArrayView<int> slots, ArrayView<int> list,
                             ArrayView<float> y, int listed, int inDim, int outDim, int flags)
    {
        int chunks = (listed + GemvMaxRows - 1) / GemvMaxRows;
        long g = (long)Grid.IdxX * DecodeWarps + Warp.WarpIdx;
        if (g >= (long)outDim * chunks) return;   // whole warps leave together
        int o = (int)(g / chunks), first = (int)(g % chunks) * GemvMaxRows;
        int n = Math.Min(GemvMaxRows, listed - first);
        int lane = Warp.LaneIdx;
        var rs = LoadRows(scales, slots, list, first, n);
        int words = (inDim + 31) / 32;
        long slotWords = (long)outDim * words, signRow = (long)o * words;
        Acc8 acc = (flags & 2) != 0
            ? DecodeHalf(w16.AsAligned(16), code, x16.AsAligned(16), signs, rs, n, inDim, o, lane, slotWords, signRow)
            : DecodeScalar(w, code, x, signs, rs, n, inDim, o, lane, slotWords, signRow);
        int accumulate = flags & 1;
        if (n == 1)
        {
            float s = WarpTotal(acc.R0);
            if (lane == 0) Put(y, rs.X0 * outDim + o, s, accumulate);
            return;
        }
        float t = WarpTotal8(acc, lane);
        int j = RowOfLane(lane);
        if ((lane & 3) == 0 && j < n) Put(y, RowOf(rs, j) * outDim + o, t, accumulate);
    }

    static Rows8 LoadRows(ArrayView<float> scales, ArrayView<int> slots, ArrayView<int> list, int first, int n)
    {
        Rows8 r = default;
        r.T0 = r.T1 = r.T2 = r.T3 = r.T4 = r.T5 = r.T6 = r.T7 = -1;
        r.X0 = list[first]; r.T0 = slots[r.X0]; r.A0 = r.T0 >= 0 ? scales[r.T0] : 0f;
        if (n > 1) { r.X1 = list[first + 1]; r.T1 = slots[r.X1]; r.A1 = r.T1 >= 0 ? scales[r.T1] : 0f; }
        if (n > 2) { r.X2 = list[first + 2]; r.T2 = slots[r.X2]; r.A2 = r.T2 >= 0 ? scales[r.T2] : 0f; }
        if (n > 3) { r.X3 = list[first + 3]; r.T3 = slots[r.X3]; r.A3 = r.T3 >= 0 ? scales[r.T3] : 0f; }
        if (n > 4) { r.X4 = list[first + 4]; r.T4 = slots[r.X4]; r.A4 = r.T4 >= 0 ? scales[r.T4] : 0f; }
        if (n > 5) { r.X5 = list[first + 5]; r.T5 = slots[r.X5]; r.A5 = r.T5 >= 0 ? scales[r.T5] : 0f; }
        if (n > 6) { r.X6 = list[first + 6]; r.T6 = slots[r.X6]; r.A6 = r.T6 >= 0 ? scales[r.T6] : 0f; }
        if (n > 7) { r.X7 = list[first + 7]; r.T7 = slots[r.X7]; r.A7 = r.T7 >= 0 ? scales[r.T7] : 0f; }
        return r;
    }

    static long RowOf(Rows8 r, int j) => j switch { 0 => r.X0, 1 => r.X1, 2 => r.X2, 3 => r.X3, 4 => r.X4, 5 => r.X5, 6 => r.X6, _ => r.X7 };

    /// <summary>16-byte path (f16/bf16, in a multiple of 8, aligned): chunk c holds weights 8c … 8c+7, whose signs
    /// are byte c % 4 of sign word c / 4.</summary>
    static Acc8 DecodeHalf(ArrayView<Vec16> w16, int code, ArrayView<Vec16> x16, ArrayView<uint> signs, Rows8 rs, int n, int inDim,
                           int o, int lane, long slotWords, long signRow)
    {
        int chunks = inDim / 8;
        long row = (long)o * chunks, xStride = inDim / 4;
        var acc = default(Acc8);
        for (int c = lane; c < chunks; c += 32)
        {
            var wv = Unpack(w16[row + c], code);
            long word = signRow + c / 4;
            int shift = (c & 3) * 8;
            long xi = 2L * c;
            var e = Fold8(wv, signs, rs.T0, rs.A0, slotWords, word, shift);
            acc.R0 = Dot8(e, x16[rs.X0 * xStride + xi], x16[rs.X0 * xStride + xi + 1], acc.R0);
            if (n > 1)
            {
                if (rs.T1 != rs.T0) e = Fold8(wv, signs, rs.T1, rs.A1, slotWords, word, shift);
                acc.R1 = Dot8(e, x16[rs.X1 * xStride + xi], x16[rs.X1 * xStride + xi + 1], acc.R1);
            }
            if (n > 2)
            {
                if (rs.T2 != rs.T1) e = Fold8(wv, signs, rs.T2, rs.A2, slotWords, word, shift);
                acc.R2 = Dot8(e, x16[rs.X2 * xStride + xi], x16[rs.X2 * xStride + xi + 1], acc.R2);
            }
            if (n > 3)
            {
                if (rs.T3 != rs.T2) e = Fold8(wv, signs, rs.T3, rs.A3, slotWords, word, shift);
                acc.R3 = Dot8(e, x16[rs.X3 * xStride + xi], x16[rs.X3 * xStride + xi + 1], acc.R3);
            }
            if (n > 4)
            {
                if (rs.T4 != rs.T3) e = Fold8(wv, signs, rs.T4, rs.A4, slotWords, word, shift);
                acc.R4 = Dot8(e, x16[rs.X4 * xStride + xi], x16[rs.X4 * xStride + xi + 1], acc.R4);
            }
            if (n > 5)
            {
                if (rs.T5 != rs.T4) e = Fold8(wv, signs, rs.T5, rs.A5, slotWords, word, shift);
                acc.R5 = Dot8(e, x16[rs.X5 * xStride + xi], x16[rs.X5 * xStride + xi + 1], acc.R5);
            }
            if (n > 6)
            {
                if (rs.T6 != rs.T5) e = Fold8(wv, signs, rs.T6, rs.A6, slotWords, word, shift);
                acc.R6 = Dot8(e, x16[rs.X6 * xStride + xi], x16[rs.X6 * xStride + xi + 1], acc.R6);
            }
            if (n > 7)
            {
                if (rs.T7 != rs.T6) e = Fold8(wv, signs, rs.T7, rs.A7, slotWords, word, shift);
                acc.R7 = Dot8(e, x16[rs.X7 * xStride + xi], x16[rs.X7 * xStride + xi + 1], acc.R7);
            }
        }
        return acc;
    }

    /// <summary>w + α·s for 8 weights whose signs are bits shift … shift+7 of the tenant's word; w itself for slot −1.</summary>
    static W8 Fold8(W8 w, ArrayView<uint> signs, int t, float a, long slotWords, long word, int shift)
    {
        if (t < 0) return w;
        uint b = signs[t * slotWords + word] >> shift;
        W8 e;
        e.A0 = w.A0 + ((b & 1u) != 0 ? a : -a);
        e.A1 = w.A1 + ((b & 2u) != 0 ? a : -a);
        e.A2 = w.A2 + ((b & 4u) != 0 ? a : -a);
        e.A3 = w.A3 + ((b & 8u) != 0 ? a : -a);
        e.A4 = w.A4 + ((b & 16u) != 0 ? a : -a);
        e.A5 = w.A5 + ((b & 32u) != 0 ? a : -a);
        e.A6 = w.A6 + ((b & 64u) != 0 ? a : -a);
        e.A7 = w.A7 + ((b & 128u) != 0 ? a : -a);
        return e;
    }

    /// <summary>Any shape and dtype: lane l takes inputs l, l+32, … (one sign word per 32 inputs, the same word for the
    /// whole warp: a broadcast).</summary>
    static Acc8 DecodeScalar(ArrayView<ushort> w, int code, ArrayView<float> x, ArrayView<uint> signs, Rows8 rs, int n, int inDim,
                             int o, int lane, long slotWords, long signRow)
    {
        long row = (long)o * inDim;
        var acc = default(Acc8);
        for (int i = lane; i < inDim; i += 32)
        {
            float v = Elem.Load(w, row + i, code);
            long word = signRow + i / 32;
            int bit = i % 32;
            float e = Fold1(v, signs, rs.T0, rs.A0, slotWords, word, bit);
            acc.R0 += e * x[rs.X0 * inDim + i];
            if (n > 1) { if (rs.T1 != rs.T0) e = Fold1(v, signs, rs.T1, rs.A1, slotWords, word, bit); acc.R1 += e * x[rs.X1 * inDim + i]; }
            if (n > 2) { if (rs.T2 != rs.T1) e = Fold1(v, signs, rs.T2, rs.A2, slotWords, word, bit); acc.R2 += e * x[rs.X2 * inDim + i]; }
            if (n > 3) { if (rs.T3 != rs.T2) e = Fold1(v, signs, rs.T3, rs.A3, slotWords, word, bit); acc.R3 += e * x[rs.X3 * inDim + i]; }
            if (n > 4) { if (rs.T4 != rs.T3) e = Fold1(v, signs, rs.T4, rs.A4, slotWords, word, bit); acc.R4 += e * x[rs.X4 * inDim + i]; }
            if (n > 5) { if (rs.T5 != rs.T4) e = Fold1(v, signs, rs.T5, rs.A5, slotWords, word, bit); acc.R5 += e * x[rs.X5 * inDim + i]; }
            if (n > 6) { if (rs.T6 != rs.T5) e = Fold1(v, signs, rs.T6, rs.A6, slotWords, word, bit); acc.R6 += e * x[rs.X6 * inDim + i]; }
            if (n > 7) { if (rs.T7 != rs.T6) e = Fold1(v, signs, rs.T7, rs.A7, slotWords, word, bit); acc.R7 += e * x[rs.X7 * inDim + i]; }
        }
        return acc;
    }

    static float Fold1(float w, ArrayView<uint> signs, int t, float a, long slotWords, long word, int bit) =>
        t < 0 ? w : w + (((signs[t * slotWords + word] >> bit) & 1u) != 0 ? a : -a);

    // ---- audit ----

    public static IEnumerable<AuditCase> Cases =>
        [Case("tenant linear decode", prefill: false), Case("tenant linear prefill", prefill: true), Case("tenant linear mma", prefill: false, mma: true),
         Case("tenant linear bits", prefill: false, mma: true, bits: true)];

    /// <summary>
    /// Random tenants over a small pool, slot −1 among them, rows in random order (decode) or in segments some of which
    /// reach the GEMM (prefill); W f16/bf16/f32, in ragged or a multiple of 8 (the 16-byte path), padding bits of
    /// the last sign word set so a kernel that reads them fails; accumulate on or off.
    /// </summary>
    /// <paramref name="mma"/>: shapes and dtype the tensor-core form takes (f16, in a multiple of 64, out of 16), more
    /// chunks than warps at times (uneven split-K), up to 40 rows (two launches of 4 groups).
    /// <paramref name="bits"/>: shapes the bit-serial form takes (in a multiple of 256, odd ones ending in a half chunk;
    /// out of 32), <see cref="BitsMinTenants"/> or more tenants of one or two rows each beside base rows and at times a tenant of many rows (which stays
    /// on the f16 form), in random order.
    static AuditCase Case(string name, bool prefill, bool mma = false, bool bits = false) => new(name, Check.F32Bound, (dev, rng) =>
    {
        var wt = mma ? DType.F16 : Check.FloatType(rng);
        int capacity = bits ? BitsMinTenants + 1 + rng.Next(4) : Check.Size(rng, mma ? 6 : 4);   // bits: one tenant may have many rows
        int inDim = bits ? 256 * Check.Size(rng, 5) : mma ? 64 * Check.Size(rng, 12) : rng.Next(2) == 0 ? 8 * Check.Size(rng, prefill ? 20 : 80) : Check.Size(rng, prefill ? 150 : 700);
        int outDim = bits ? 32 * Check.Size(rng, 3) : mma ? 16 * Check.Size(rng, 3) : Check.Size(rng, prefill ? 70 : 40);
        int[] slots;
        if (bits)
        {
            var list = new List<int>();
            for (int u = 0; u < capacity; u++) list.AddRange(Enumerable.Repeat(u, u == 0 && rng.Next(3) == 0 ? 3 + rng.Next(8) : 1 + rng.Next(2)));
            list.AddRange(Enumerable.Repeat(-1, rng.Next(2) == 0 ? rng.Next(4) : 20 + rng.Next(20)));   // past 32 rows: two launches
            slots = [.. list.OrderBy(_ => rng.Next())];
        }
        else if (prefill)
        {
            var list = new List<int>();
            int segments = Check.Size(rng, 3);
            for (int s = 0; s < segments; s++)
                list.AddRange(Enumerable.Repeat(rng.Next(-1, capacity), rng.Next(2) == 0 ? Check.Size(rng, 8) : PrefillMinRows + rng.Next(70)));
            slots = [.. list];
        }
        else slots = Enumerable.Range(0, Check.Size(rng, 40)).Select(_ => rng.Next(-1, capacity)).ToArray();   // past 32: two tiled launches
        int rows = slots.Length;
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
        var signs = Check.Signs(rng, capacity * outDim, inDim);
        var scales = Enumerable.Range(0, capacity).Select(_ => Check.Value(rng, 0.05f)).ToArray();
        bool accumulate = rng.Next(2) == 0;
        var want = accumulate ? Check.Values(rng, (long)rows * outDim, 3f) : new float[rows * outDim];
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, wt);
        using var ts = Tensor.From(signs, [capacity, outDim, inDim], dev);
        using var ta = Tensor.From(scales, [capacity], dev);
        using var tenants = new TenantRows(slots, dev);
        using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
        bool gemvOne = GemvOne.Use;
        GemvOne.Use = !(mma || bits);   // those cases test the tensor-core forms, whatever the rows
        try { Run(tx, tw, ts, ta, tenants, ty, accumulate); }
        finally { GemvOne.Use = gemvOne; }
        Twin(x, w, signs, scales, slots, want, rows, inDim, outDim, accumulate);
        string path = TakesMma(tenants, tx, tw) ? " tensor cores" : dev.IsIlgpu && wt != DType.F32 && inDim % 8 == 0 ? " 16-byte" : "";
        if (mma && dev.IsIlgpu && path != " tensor cores") throw new InvalidOperationException($"{name}: the tensor-core form did not apply to [{outDim}, {inDim}]");
        if (dev.IsIlgpu && path == " tensor cores" && TakesStream(tenants, tw)) path += $", streamed ({tenants.FewCount} tenant rows)";
        else if (dev.IsIlgpu && TakesBits(tenants, tw)) path += $", {tenants.BitsCount} rows bit-serial{(UseBase && tenants.DecodeTenantsAllBits ? FuseBits ? ", base form, three launches" : ", base form" : "")}";
        if (bits && dev.IsIlgpu && !TakesBits(tenants, tw) && !TakesStream(tenants, tw)) throw new InvalidOperationException($"{name}: the bit-serial form did not apply to [{outDim}, {inDim}]");
        if (!(mma || bits) && rows == 1 && GemvOne.Takes(tx, tw)) path = " gemv one";
        else if (!(mma || bits) && GemvOne.TakesFew(tx, tw, rows) && slots.All(t => t < 0)) path = $" gemv one, {rows} rows";
        return (Check.RelativeError(ty.ToFloatArray(), want),
                $"{rows} rows in {tenants.Segments.Length} segments over {capacity} slots, [{outDim}, {inDim}] w {wt}{(accumulate ? " +=" : "")}{path}");
    });
}

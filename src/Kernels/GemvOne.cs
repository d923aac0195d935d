using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// One row of x through one linear, with or without one tenant's BitDelta term: y (+)= x·(W + α·S)ᵀ, x f32 [1, in],
/// W f16 or bf16 [out, in], S the ±1 signs packed 32 a word along in (<see cref="DType.Sign1"/>), α one scale. This is
/// the decode step of one sequence, which reads every weight once and does two flops with it: the bytes decide.
///
/// One warp an output row, no shared memory and no barrier: lane l reads 16-byte chunks l, l + 32, … of W's row, eight
/// of them issued before the first is used (4 KB in flight a warp; 31 warps a multiprocessor at 4096 outputs on 132
/// multiprocessors is ~127 KB, where Little's law at 4.8 TB/s and ~1 µs asks ~36 KB), x's matching 32 bytes from L1, and
/// a chunk past the row's end reads the row's last chunk and counts 0 (no branch sits between the loads, so they issue
/// together: bench/NOTES.md, decode attention). The tenant's 8 sign bits of a chunk are one byte of its row; α is folded
/// into the 8 weights in f32 as the twin does (W + α·S, BitLinear.cs). The streamed form (TenantLinearStream.cs) reached
/// 0.59 of copy at 4096² with one row: its blocks meet at barriers inside every chunk of 64 inputs (a fifth of its stall
/// cycles, Nsight, bench/NOTES.md), which a warp that owns its whole row never does.
/// </summary>
public static class GemvOne
{
    /// <summary>Take this kernel for one-row linears where it applies (the bench turns it off to compare).</summary>
    public static bool Use { get; set; } = true;

    const int Warps = 4, Batch = 8;

    /// <summary>The scalar spec: y[o] (+)= Σ_i x[i]·(W[o, i] + α·S[o, i]) in f32, S read from the packed words when
    /// <paramref name="signs"/> is given (<paramref name="words"/> words a row).</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<uint> signs, float alpha, Span<float> y,
                            int inDim, int outDim, bool accumulate)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        for (int o = 0; o < outDim; o++)
        {
            double s = 0;
            for (int i = 0; i < inDim; i++)
            {
                float wi = w[o * inDim + i];
                if (!signs.IsEmpty) wi += alpha * BitLinear.Sign(signs, words, o, i);
                s += (double)x[i] * wi;
            }
            y[o] = (float)(accumulate ? y[o] + s : s);
        }
    }

    /// <summary>Whether the kernel takes this linear: one row, an f16 or bf16 W whose rows are whole 16-byte chunks, x and
    /// W 16-byte aligned, on an ILGPU device.</summary>
    public static bool Takes(Tensor x, Tensor w) => Fits(x, w, 1);

    /// <summary><paramref name="rows"/> rows of x and an f16/bf16 W of whole 16-byte chunks a row, both aligned, on an
    /// ILGPU device, with the kernels on.</summary>
    static bool Fits(Tensor x, Tensor w, int rows) =>
        Use && x.Device.IsIlgpu && (w.DType == DType.F16 || w.DType == DType.BF16) && w.Rank == 2
        && x.ElementCount == (long)rows * w.Dim(1) && w.Dim(1) % 8 == 0 && VectorPath(x, w, w.Dim(1));

    /// <summary>The rows the few-row form takes (<see cref="RunFew"/>): W read once, each row's products on CUDA cores;
    /// past it the tensor-core forms. 2: with copies of its loop for 3 and 4 rows the kernel took 142 registers and
    /// lost to the streamed form at 3–4 rows by 20–60% (bench/NOTES.md), so only two rows are compiled. MatMul takes it
    /// for two rows (the plain model's step 7.23 → 6.47 ms at 7B); the tenant linear only for two base rows: with
    /// tenants' signs it lost to the streamed form (24.9 against 22.6 µs at 4096²).</summary>
    public const int FewRows = 2;

    /// <summary>Whether the few-row form takes <paramref name="rows"/> rows (<see cref="FewRows"/>) of x through W:
    /// as <see cref="Takes"/>, rows after rows.</summary>
    public static bool TakesFew(Tensor x, Tensor w, int rows) => rows == FewRows && Fits(x, w, rows);

    /// <summary>y (+)= x·Wᵀ for 2 rows (x [rows, in], y [rows, out]), each row r plus α·x_r·S_{slot r}ᵀ where
    /// <paramref name="slots"/> (I32 [rows] on the device) gives it a slot ≥ 0 of the [capacity, out, in] signs; W is read
    /// once for all rows. The caller checked <see cref="TakesFew"/> and the shapes.</summary>
    public static void RunFew(Tensor x, Tensor w, Tensor? signs, Tensor? scales, Tensor? slots, Tensor y, bool accumulate)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1);
        if (outDim == 0) return;
        bool tenant = signs != null && slots != null;
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, int, ArrayView<Vec16>, ArrayView<uint>, ArrayView<float>, ArrayView<int>, int,
                                      ArrayView<float>, int, int, int>>(GemvFewKernel)(
            new KernelConfig((outDim + Warps - 1) / Warps, Warps * 32),
            w.View<Vec16>(), Elem.Code(w.DType), x.View<Vec16>(),
            tenant ? signs!.View<uint>() : w.View<uint>(), tenant ? scales!.View<float>() : y.View<float>(),
            tenant ? slots!.View<int>() : y.View<int>(), tenant ? 1 : 0,   // no tenant: stand-ins, never read
            y.View<float>(), inDim, outDim, accumulate ? 1 : 0);
    }

    /// <summary>y (+)= x·Wᵀ, plus α·x·Sᵀ where <paramref name="signs"/> is given: its slot <paramref name="slot"/> of a
    /// [capacity, out, in] Sign1 tensor (or a 2-D [out, in] one with slot 0), α = scales[slot]. The caller checked
    /// <see cref="Takes"/> and the shapes.</summary>
    public static void Run(Tensor x, Tensor w, Tensor? signs, Tensor? scales, int slot, Tensor y, bool accumulate)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1);
        if (outDim == 0) return;
        bool tenant = signs != null && slot >= 0;
        long offset = tenant ? (long)slot * outDim * DTypes.SignWordsPerRow(inDim) : 0;
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, int, ArrayView<Vec16>, ArrayView<uint>, long, ArrayView<float>, int,
                                      ArrayView<float>, int, int, int>>(GemvOneKernel)(
            new KernelConfig((outDim + Warps - 1) / Warps, Warps * 32),
            w.View<Vec16>(), Elem.Code(w.DType), x.View<Vec16>(),
            tenant ? signs!.View<uint>() : w.View<uint>(), offset,   // no tenant: W stands in for the signs and scales, never read
            tenant ? scales!.View<float>() : y.View<float>(), tenant ? slot : -1,
            y.View<float>(), inDim, outDim, accumulate ? 1 : 0);
    }

    static void GemvOneKernel(ArrayView<Vec16> w16, int code, ArrayView<Vec16> x16, ArrayView<uint> signs, long signOffset,
                              ArrayView<float> scales, int slot, ArrayView<float> y, int inDim, int outDim, int accumulate)
    {
        GridDependency.Release();   // the next linear's blocks may start theirs as ours finish (DependentLaunch.cs)
        int o = Grid.IdxX * Warps + Warp.WarpIdx;
        if (o >= outDim) return;   // the whole warp leaves together
        int lane = Warp.LaneIdx;
        var w = w16.AsAligned(16);
        var x = x16.AsAligned(16);
        int chunks = inDim / 8;
        long row = (long)o * chunks;
        GridDependency.Wait();   // x (and y, when adding to it) are the kernel ahead's: wait for its end
        long signRow = signOffset + (long)o * DTypes.SignWordsPerRow(inDim);
        // four copies of the loop, each with its flags constant: a branch inside the batch (as on the weights' type, per
        // chunk) would stop ptxas from issuing the later chunks' x loads early
        float alpha = slot >= 0 ? scales[slot] : 0f;
        float s = slot >= 0
            ? code == Elem.BF16 ? Row(w, true, x, signs, signRow, alpha, true, row, chunks, lane) : Row(w, false, x, signs, signRow, alpha, true, row, chunks, lane)
            : code == Elem.BF16 ? Row(w, true, x, signs, signRow, 0f, false, row, chunks, lane) : Row(w, false, x, signs, signRow, 0f, false, row, chunks, lane);
        s = WarpTotal(s);
        if (lane == 0) Put(y, o, s, accumulate);
    }

    /// <summary>The lane's share of one output row. <paramref name="bf16"/> and <paramref name="tenant"/> are constants at
    /// each call, so after inlining the base-only loop carries no sign loads and no loop a branch on the type.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Row(ArrayView<Vec16> w, bool bf16, ArrayView<Vec16> x, ArrayView<uint> signs, long signRow, float alpha, bool tenant,
                     long row, int chunks, int lane)
    {
        float a0 = 0f, a1 = 0f;
        int last = chunks - 1;
        for (int b = lane; b - lane < chunks; b += 32 * Batch)
        {
            int c0 = b, c1 = b + 32, c2 = b + 64, c3 = b + 96, c4 = b + 128, c5 = b + 160, c6 = b + 192, c7 = b + 224;
            int k0 = Math.Min(c0, last), k1 = Math.Min(c1, last), k2 = Math.Min(c2, last), k3 = Math.Min(c3, last);
            int k4 = Math.Min(c4, last), k5 = Math.Min(c5, last), k6 = Math.Min(c6, last), k7 = Math.Min(c7, last);
            var q0 = w[row + k0]; var q1 = w[row + k1]; var q2 = w[row + k2]; var q3 = w[row + k3];
            var q4 = w[row + k4]; var q5 = w[row + k5]; var q6 = w[row + k6]; var q7 = w[row + k7];
            uint s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
            if (tenant)
            {
                s0 = signs[signRow + (k0 >> 2)]; s1 = signs[signRow + (k1 >> 2)]; s2 = signs[signRow + (k2 >> 2)]; s3 = signs[signRow + (k3 >> 2)];
                s4 = signs[signRow + (k4 >> 2)]; s5 = signs[signRow + (k5 >> 2)]; s6 = signs[signRow + (k6 >> 2)]; s7 = signs[signRow + (k7 >> 2)];
            }
            a0 += Chunk(q0, bf16, x, k0, s0, alpha, tenant, c0 <= last);
            a1 += Chunk(q1, bf16, x, k1, s1, alpha, tenant, c1 <= last);
            a0 += Chunk(q2, bf16, x, k2, s2, alpha, tenant, c2 <= last);
            a1 += Chunk(q3, bf16, x, k3, s3, alpha, tenant, c3 <= last);
            a0 += Chunk(q4, bf16, x, k4, s4, alpha, tenant, c4 <= last);
            a1 += Chunk(q5, bf16, x, k5, s5, alpha, tenant, c5 <= last);
            a0 += Chunk(q6, bf16, x, k6, s6, alpha, tenant, c6 <= last);
            a1 += Chunk(q7, bf16, x, k7, s7, alpha, tenant, c7 <= last);
        }
        return a0 + a1;
    }

    /// <summary>Two rows' sums, and the per-row constants of a two-row call (fields, not arrays: registers).</summary>
    struct Two
    {
        public float R0, R1;
    }

    struct TwoRows
    {
        public long S0, S1;    // each row's first sign word of this output
        public float A0, A1;   // each row's α (0 for a base row)
    }

    static void GemvFewKernel(ArrayView<Vec16> w16, int code, ArrayView<Vec16> x16, ArrayView<uint> signs, ArrayView<float> scales,
                              ArrayView<int> slots, int tenant, ArrayView<float> y, int inDim, int outDim, int accumulate)
    {
        GridDependency.Release();
        int o = Grid.IdxX * Warps + Warp.WarpIdx;
        if (o >= outDim) return;
        int lane = Warp.LaneIdx;
        var w = w16.AsAligned(16);
        var x = x16.AsAligned(16);
        int chunks = inDim / 8, words = DTypes.SignWordsPerRow(inDim);
        long row = (long)o * chunks, slotWords = (long)outDim * words;
        GridDependency.Wait();
        TwoRows c = default;
        if (tenant != 0)
        {
            // a base row (slot −1) reads slot 0's signs with α = 0: its products stay W's alone, with no branch per row
            int t0 = slots[0], t1 = slots[1];
            c.S0 = Math.Max(t0, 0) * slotWords + (long)o * words; c.A0 = t0 >= 0 ? scales[t0] : 0f;
            c.S1 = Math.Max(t1, 0) * slotWords + (long)o * words; c.A1 = t1 >= 0 ? scales[t1] : 0f;
        }
        long xs = inDim / 4;   // one row of x in 16-byte units
        bool bf = code == Elem.BF16, t = tenant != 0;
        // each (type, tenant) its own copy of the loop, all constant inside it (see GemvOneKernel). Two rows only
        // (FewRows): copies for 3 and 4 rows took the kernel to 142 registers and lost to the streamed form
        Two a = bf ? (t ? Few(w, true, x, xs, signs, c, true, row, chunks, lane) : Few(w, true, x, xs, signs, c, false, row, chunks, lane))
                   : (t ? Few(w, false, x, xs, signs, c, true, row, chunks, lane) : Few(w, false, x, xs, signs, c, false, row, chunks, lane));
        float s0 = WarpTotal(a.R0), s1 = WarpTotal(a.R1);
        if (lane == 0) { Put(y, o, s0, accumulate); Put(y, outDim + o, s1, accumulate); }
    }

    /// <summary>The lane's share of one output for two rows: 4 chunks of W a batch, each unpacked once and, with a tenant,
    /// folded per row with that row's sign byte and α.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Two Few(ArrayView<Vec16> w, bool bf16, ArrayView<Vec16> x, long xs, ArrayView<uint> signs, TwoRows c, bool tenant,
                   long row, int chunks, int lane)
    {
        Two a = default;
        int last = chunks - 1;
        for (int b = lane; b - lane < chunks; b += 32 * 4)
        {
            int c0 = b, c1 = b + 32, c2 = b + 64, c3 = b + 96;
            int k0 = Math.Min(c0, last), k1 = Math.Min(c1, last), k2 = Math.Min(c2, last), k3 = Math.Min(c3, last);
            var q0 = w[row + k0]; var q1 = w[row + k1]; var q2 = w[row + k2]; var q3 = w[row + k3];
            a = FewChunk(a, q0, bf16, x, xs, signs, c, tenant, k0, c0 <= last);
            a = FewChunk(a, q1, bf16, x, xs, signs, c, tenant, k1, c1 <= last);
            a = FewChunk(a, q2, bf16, x, xs, signs, c, tenant, k2, c2 <= last);
            a = FewChunk(a, q3, bf16, x, xs, signs, c, tenant, k3, c3 <= last);
        }
        return a;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Two FewChunk(Two a, Vec16 q, bool bf16, ArrayView<Vec16> x, long xs, ArrayView<uint> signs, TwoRows c, bool tenant, int k, bool valid)
    {
        int word = k >> 2;
        var w8 = Weights8(q, bf16);
        a.R0 += Dot(w8, x, 0, k, tenant ? signs[c.S0 + word] : 0u, c.A0, tenant, valid);
        a.R1 += Dot(w8, x, xs, k, tenant ? signs[c.S1 + word] : 0u, c.A1, tenant, valid);
        return a;
    }

    /// <summary>Chunk k's 8 weights (α·S folded in when <paramref name="tenant"/>) times x[8k .. 8k+7]; 0 for a chunk past
    /// the row's end (a select after the loads, not a branch around them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Chunk(Vec16 q, bool bf16, ArrayView<Vec16> x, int k, uint word, float alpha, bool tenant, bool valid) =>
        Dot(Weights8(q, bf16), x, 0, k, word, alpha, tenant, valid);

    /// <summary>MatMul's unpacking with the type constant at each call: inlined, its branch on the type folds away.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static W8 Weights8(Vec16 q, bool bf16) => Unpack(q, bf16 ? Elem.BF16 : Elem.F16);

    /// <summary>8 weights, α·S folded in with the chunk's sign byte when <paramref name="tenant"/>, times x[8k .. 8k+7] of
    /// the row that starts at 16-byte unit <paramref name="xo"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Dot(W8 w8, ArrayView<Vec16> x, long xo, int k, uint word, float alpha, bool tenant, bool valid)
    {
        if (tenant) w8 = Fold(w8, word, k, alpha);
        float d = Dot8(w8, x[xo + 2L * k], x[xo + 2L * k + 1], 0f);
        return valid ? d : 0f;
    }

    /// <summary>W + α·S for chunk k's 8 weights, its signs byte k % 4 of <paramref name="word"/> (word k / 4 of the row,
    /// least significant bit first), in f32 as the twin adds them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static W8 Fold(W8 w8, uint word, int k, float alpha)
    {
        uint bits = word >> ((k & 3) * 8);
        float na = -alpha;
        w8.A0 += (bits & 1u) != 0 ? alpha : na;
        w8.A1 += (bits & 2u) != 0 ? alpha : na;
        w8.A2 += (bits & 4u) != 0 ? alpha : na;
        w8.A3 += (bits & 8u) != 0 ? alpha : na;
        w8.A4 += (bits & 16u) != 0 ? alpha : na;
        w8.A5 += (bits & 32u) != 0 ? alpha : na;
        w8.A6 += (bits & 64u) != 0 ? alpha : na;
        w8.A7 += (bits & 128u) != 0 ? alpha : na;
        return w8;
    }

    // ---- audit ----

    /// <summary>W f16 or bf16; 1 or 2 rows (one row: <see cref="Run"/>, more: <see cref="RunFew"/>), with tenants' signs
    /// (each row slot −1 … 2 of a 3-slot pool, at random) or without; accumulate on or off; the error against Σ|x·w| of
    /// each output (<see cref="Check.ErrorOfDots"/>); in a multiple of 8 up to 8·600 = 4800 (one and more batches of
    /// chunks, ragged: 8·257 is one chunk past a batch of the one-row loop), out up to 70 (a partial last block of 4 warps).</summary>
    public static AuditCase Case => new("gemv one", Check.F32Bound, (dev, rng) =>
    {
        var wt = rng.Next(2) == 0 ? DType.F16 : DType.BF16;
        int rows = 1 + rng.Next(2), inDim = 8 * Check.Size(rng, 600), outDim = Check.Size(rng, 70);
        bool tenant = rng.Next(3) > 0, accumulate = rng.Next(2) == 0;
        int capacity = 3, words = DTypes.SignWordsPerRow(inDim);
        var slots = Enumerable.Range(0, rows).Select(_ => tenant ? rng.Next(-1, capacity) : -1).ToArray();
        if (tenant && slots.All(t => t < 0)) slots[rng.Next(rows)] = rng.Next(capacity);
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
        var signs = Check.Signs(rng, capacity * outDim, inDim);
        var scales = Enumerable.Range(0, capacity).Select(_ => Check.Value(rng, 0.05f)).ToArray();
        var want = accumulate ? Check.Values(rng, (long)rows * outDim, 3f) : new float[rows * outDim];
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, wt);
        using var ts = Tensor.From(signs, [capacity, outDim, inDim], dev);
        using var ta = Tensor.From(scales, [capacity], dev);
        using var tslots = Tensor.From(slots, [rows], dev);
        using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
        if (rows == 1 ? !Takes(tx, tw) : !TakesFew(tx, tw, rows))
            throw new InvalidOperationException($"gemv one: the kernel did not take [{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ {wt} on {dev}");
        if (rows == 1) Run(tx, tw, tenant ? ts : null, tenant ? ta : null, slots[0], ty, accumulate);
        else RunFew(tx, tw, tenant ? ts : null, tenant ? ta : null, tenant ? tslots : null, ty, accumulate);
        // one output whose dot product cancels would fail |want|'s measure on f32 summation alone: measured against
        // Σ|x·w| instead, as the error bound of a sum is
        var magnitude = new double[rows * outDim];
        for (int r = 0; r < rows; r++)
        {
            int t = slots[r];
            var own = t >= 0 ? signs.AsSpan(t * outDim * words, outDim * words) : [];
            GemvOne.Twin(x.AsSpan(r * inDim, inDim), w, own, t >= 0 ? scales[t] : 0f, want.AsSpan(r * outDim, outDim), inDim, outDim, accumulate);
            for (int o = 0; o < outDim; o++)
                for (int i = 0; i < inDim; i++)
                    magnitude[r * outDim + o] += Math.Abs((double)x[r * inDim + i] * (w[o * inDim + i] + (t >= 0 ? scales[t] * BitLinear.Sign(own, words, o, i) : 0f)));
        }
        return (Check.ErrorOfDots(ty.ToFloatArray(), want, magnitude),
                $"[{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ w {wt}{(tenant ? $" + α·S slots {string.Join(",", slots)}" : "")}{(accumulate ? " +=" : "")}");
    });
}

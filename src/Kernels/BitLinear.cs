using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The BitDelta term of a compressed linear layer (Liu et al., arXiv 2402.10193, §3.1): y += α · x·Sᵀ, where S is
/// the ±1 sign matrix [out, in] of the fine-tune's delta, packed 32 signs per word along the input dimension,
/// least significant bit first (<see cref="DType.Sign1"/>; bit 1 is +1), and α is the matrix's one scale. Run after
/// the base matmul y = x·W_baseᵀ, it gives y = x·(W_base + α·S)ᵀ without ever forming the f16 sum, so the
/// compressed fine-tune costs 1 bit per weight beside the shared base: the reference's
/// <c>x @ base + coeff * binary_bmm(x, mask)</c>. x and y are f32 [rows, in] and [rows, out].
/// This is the one-tenant form; <see cref="TenantLinear"/> runs many tenants in one batch.
/// </summary>
public static class BitLinear
{
    /// <summary>S[o, i] as ±1: bit i % 32 of word i / 32 of row o (<paramref name="words"/> words a row); bit 1 is +1.
    /// The one reader of the packed layout on the host: the twins here, <c>BitDelta</c>'s tests and the backward twin use it.</summary>
    public static float Sign(ReadOnlySpan<uint> signs, int words, int o, int i) => ((signs[o * words + i / 32] >> (i % 32)) & 1) != 0 ? 1f : -1f;

    /// <summary>The spec: f64 sum of ±x, then y += α·sum rounded to f32.</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<uint> signs, float scale, Span<float> y, int rows, int inDim, int outDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
            {
                double s = 0;
                for (int i = 0; i < inDim; i++) s += Sign(signs, words, o, i) * (double)x[r * inDim + i];
                y[r * outDim + o] = (float)(y[r * outDim + o] + (double)scale * s);
            }
    }

    public static void Run(Tensor x, Tensor signs, float scale, Tensor y)
    {
        Need.SameDevice(x, signs, y);
        if (signs.DType != DType.Sign1 || signs.Rank != 2) throw new ArgumentException($"bitlinear signs: expected Sign1 [out, in], got {signs}");
        int outDim = signs.Dim(0), inDim = signs.Dim(1);
        long rows = Need.DeltaRows("bitlinear", x, y, inDim, outDim);
        if (rows == 0 || outDim == 0) return;
        if (!y.Device.IsIlgpu)
        {
            Host(x.Host<float>(), signs.Host<uint>(), scale, y.Host<float>(), (int)rows, inDim, outDim);
            return;
        }
        if (MatMul.TakesMmaSigns(x, (int)rows, inDim))
        {
            MatMul.GemmSigns(x, signs.View<uint>(), 0, y.View<float>(), -1, scale, y, (int)rows, inDim, outDim);   // slot −1: the scales view is not read
            return;
        }
        long outputs = rows * outDim;
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<uint>, float, ArrayView<float>, int, int, int>>(Kernel)(
            new KernelConfig((int)((outputs + Threads - 1) / Threads), Threads), x.View<float>(), signs.View<uint>(), scale, y.View<float>(),
            (int)rows, inDim, outDim);
    }

    const int Threads = 128;

    /// <summary>
    /// One thread per output (row r, column o), neighbouring threads on neighbouring columns of the same row: every
    /// thread of a warp reads the same x[r, i] (a broadcast) and its own row's sign word, one load per 32 weights.
    /// No shuffles or barriers, which also keeps it cheap on ILGPU's CPU accelerator in tests. Reading each sign
    /// word once for many rows and many tenants is <see cref="TenantLinear"/>'s job.
    /// </summary>
    static void Kernel(ArrayView<float> x, ArrayView<uint> signs, float scale, ArrayView<float> y, int rows, int inDim, int outDim)
    {
        long t = Grid.GlobalIndex.X;
        if (t >= (long)rows * outDim) return;
        int r = (int)(t / outDim), o = (int)(t % outDim);
        int words = (inDim + 31) / 32;
        long xRow = (long)r * inDim, sRow = (long)o * words;
        float acc = 0;
        for (int w = 0; w < words; w++)
        {
            uint bits = signs[sRow + w];
            int n = Math.Min(32, inDim - w * 32);
            long at = xRow + w * 32;
            for (int b = 0; b < n; b++)
            {
                float v = x[at + b];
                acc += ((bits >> b) & 1) != 0 ? v : -v;
            }
        }
        y[t] += scale * acc;
    }

    /// <summary>
    /// The managed-CPU path: per output, the signs are expanded once to ±1 floats and dotted with every row of x
    /// (SIMD), using Σ xᵢsᵢ over f32 partial sums; checked against <see cref="Twin"/> like a kernel.
    /// </summary>
    public static void Host(ReadOnlySpan<float> x, ReadOnlySpan<uint> signs, float scale, Span<float> y, int rows, int inDim, int outDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        var xs = x.ToArray();
        var ss = signs.ToArray();
        var ys = new float[(long)rows * outDim];
        Parallel.For(0, outDim, () => new float[inDim], (o, _, pm) =>
        {
            for (int i = 0; i < inDim; i++) pm[i] = Sign(ss, words, o, i);
            for (int r = 0; r < rows; r++)
                ys[(long)r * outDim + o] = System.Numerics.Tensors.TensorPrimitives.Dot(xs.AsSpan(r * inDim, inDim), pm);
            return pm;
        }, _ => { });
        for (long k = 0; k < ys.Length; k++) y[(int)k] += scale * ys[k];
    }

    /// <summary>The spec of <see cref="Materialize"/>: W = W_base + α·S in f32, one element at a time.</summary>
    public static void MaterializeTwin(ReadOnlySpan<float> wBase, ReadOnlySpan<uint> signs, float scale, Span<float> w, int outDim, int inDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
                w[o * inDim + i] = wBase[o * inDim + i] + scale * Sign(signs, words, o, i);
    }

    /// <summary>
    /// W = W_base + α·S as an f32 matrix [out, in], for the matmul to take whole: y = x·Wᵀ is then exactly the base
    /// term plus the delta term up to f32 summation order, and the reference's f32 binarized model besides. On a GPU
    /// the model runs a compressed linear this way (materialize, then one GEMM/GEMV over the f32 matrix): it costs
    /// about 5× the bytes of the f16 base matmul in decode and next to nothing beside a prefill GEMM, against the
    /// per-output <see cref="Run"/>, whose sign reads are uncoalesced (measured on the H100 at 7B shapes: 47 s per
    /// 1536-token window, 292 ms per decode step; bench/NOTES.md). The engine runs <see cref="TenantLinear"/> instead, which folds the signs where it reads W.
    /// </summary>
    public static void Materialize(Tensor wBase, Tensor signs, float scale, Tensor w)
    {
        Need.SameDevice(wBase, signs, w);
        Need.Float("materialize base weight", wBase);
        Need.F32("materialize output", w);
        if (signs.DType != DType.Sign1 || signs.Rank != 2) throw new ArgumentException($"materialize signs: expected Sign1 [out, in], got {signs}");
        int outDim = signs.Dim(0), inDim = signs.Dim(1);
        Need.Shape("materialize base weight", wBase, outDim, inDim);
        Need.Shape("materialize output", w, outDim, inDim);
        long n = (long)outDim * inDim;
        if (n == 0) return;
        if (!w.Device.IsIlgpu)
        {
            MaterializeTwin(Need.HostF32(wBase), signs.Host<uint>(), scale, w.Host<float>(), outDim, inDim);
            return;
        }
        w.Device.GroupedKernel<Action<KernelConfig, ArrayView<ushort>, int, ArrayView<uint>, float, ArrayView<float>, int, long>>(MaterializeKernel)(
            new KernelConfig((int)((n + 255) / 256), 256), Elem.View(wBase), Elem.Code(wBase.DType), signs.View<uint>(), scale, w.View<float>(), inDim, n);
    }

    /// <summary>
    /// y (+)= x·(W_base + α·S)ᵀ, a compressed linear's forward, the way each device runs it best: on a GPU, for many rows
    /// over an f16 base, the base GEMM and then the delta term, both on tensor cores (MatMulMma.cs); otherwise on a GPU the
    /// f32 weight is formed (<see cref="Materialize"/>) and taken by one <see cref="MatMul"/>; on the CPU the base matmul
    /// runs on the checkpoint's weight and the delta term follows (<see cref="Run"/>), with no [out, in] f32 copy.
    /// (Forming the weight on the CPU too was tried for the demo's 512-row distillation steps: 0.55 → 0.54 s a step,
    /// noise, so not kept.)
    /// </summary>
    public static void Apply(Tensor x, Tensor wBase, Tensor signs, float scale, Tensor y, bool accumulate = false)
    {
        int inDim = wBase.Dim(1);
        if (y.Device.IsIlgpu && MatMul.TakesMmaGemm(x, wBase, inDim) && MatMul.TakesMmaSigns(x, (int)(x.ElementCount / Math.Max(1, inDim)), inDim))
        {
            MatMul.Run(x, wBase, y, accumulate);
            Run(x, signs, scale, y);
            return;
        }
        if (y.Device.IsIlgpu)
        {
            using var wEff = Tensor.Empty(wBase.Shape, DType.F32, y.Device);
            Materialize(wBase, signs, scale, wEff);
            MatMul.Run(x, wEff, y, accumulate);
            return;
        }
        MatMul.Run(x, wBase, y, accumulate);
        Run(x, signs, scale, y);
    }

    /// <summary>One thread per weight; neighbouring threads read neighbouring weights and the same sign word.</summary>
    static void MaterializeKernel(ArrayView<ushort> wBase, int code, ArrayView<uint> signs, float scale, ArrayView<float> w, int inDim, long n)
    {
        long e = Grid.GlobalIndex.X;
        if (e >= n) return;
        long o = e / inDim;
        int i = (int)(e - o * inDim);
        uint word = signs[o * ((inDim + 31) / 32) + i / 32];
        w[e] = Elem.Load(wBase, e, code) + (((word >> (i % 32)) & 1) != 0 ? scale : -scale);
    }

    /// <summary>The spec of <see cref="SignsT"/>: st[i, o] = S[o, i] as ±1, f32 [in, out].</summary>
    public static void SignsTTwin(ReadOnlySpan<uint> signs, Span<float> st, int outDim, int inDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        for (int i = 0; i < inDim; i++)
            for (int o = 0; o < outDim; o++) st[i * outDim + o] = Sign(signs, words, o, i);
    }

    /// <summary>
    /// Sᵀ as ±1 floats: signs is Sign1 [out, in] (the shape it is stored with, as <see cref="Run"/> takes it), st f32
    /// [in, out], st[i, o] = S[o, i]. The backward of the delta term needs dy·S (<c>BitLinearGrad</c>), which
    /// <see cref="MatMul"/> computes as dy·(Sᵀ)ᵀ; ±1 is exact, so so is this. <paramref name="inDim"/> must equal
    /// signs.Dim(1) (the packed words alone do not say how many of the last word's bits count).
    /// </summary>
    public static void SignsT(Tensor signs, int inDim, Tensor st)
    {
        Need.SameDevice(signs, st);
        if (signs.DType != DType.Sign1 || signs.Rank != 2) throw new ArgumentException($"bitlinear signs-t: expected Sign1 [out, in], got {signs}");
        if (signs.Dim(1) != inDim) throw new ArgumentException($"bitlinear signs-t: in is {inDim} but the signs are {signs}");
        int outDim = signs.Dim(0);
        Need.F32("bitlinear signs-t output", st);
        Need.Shape("bitlinear signs-t output", st, inDim, outDim);
        if (st.ElementCount == 0) return;
        if (!st.Device.IsIlgpu)
        {
            SignsTHost(signs.Host<uint>(), st.Host<float>(), outDim, inDim);
            return;
        }
        int words = DTypes.SignWordsPerRow(inDim);
        long groups = (long)words * ((outDim + 31) / 32);
        st.Device.GroupedKernel<Action<KernelConfig, ArrayView<uint>, ArrayView<float>, int, int>>(SignsTKernel)(
            new KernelConfig((int)groups, 32 * SignsTRows), signs.View<uint>(), st.View<float>(), outDim, inDim);
    }

    /// <summary>Rows of threads per <see cref="SignsTKernel"/> group: 32 outputs × 8, 4 input rows each.</summary>
    const int SignsTRows = 8;

    /// <summary>
    /// One group per (sign word column w, 32 outputs o): thread (lane, y) loads the one word S[o0 + lane, 32w …
    /// 32w + 31] and writes its bits y, y + 8, … as ±1 into st rows 32w + bit, column o0 + lane. A warp writes 32
    /// consecutive floats of one st row (coalesced); the word reads are strided by a sign row, but they are 1/32
    /// of the bytes written. No shared memory or barriers (cheap on ILGPU's CPU accelerator too).
    /// </summary>
    static void SignsTKernel(ArrayView<uint> signs, ArrayView<float> st, int outDim, int inDim)
    {
        int words = (inDim + 31) / 32, oTiles = (outDim + 31) / 32;
        int w = Grid.IdxX / oTiles, o = Grid.IdxX % oTiles * 32 + Group.IdxX % 32;
        if (o >= outDim) return;
        uint bits = signs[(long)o * words + w];
        int n = Math.Min(32, inDim - w * 32);
        for (int b = Group.IdxX / 32; b < n; b += SignsTRows)
            st[(long)(w * 32 + b) * outDim + o] = ((bits >> b) & 1) != 0 ? 1f : -1f;
    }

    /// <summary>The managed-CPU path: columns of 32 inputs (one sign word) in parallel.</summary>
    public static unsafe void SignsTHost(ReadOnlySpan<uint> signs, Span<float> st, int outDim, int inDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        fixed (uint* ps = signs)
        fixed (float* pt = st)
        {
            nint S = (nint)ps, T = (nint)pt;
            void Column(int w)
            {
                uint* s = (uint*)S;
                float* t = (float*)T;
                int n = Math.Min(32, inDim - w * 32);
                for (int o = 0; o < outDim; o++)
                {
                    uint bits = s[(long)o * words + w];
                    for (int b = 0; b < n; b++) t[(long)(w * 32 + b) * outDim + o] = ((bits >> b) & 1) != 0 ? 1f : -1f;
                }
            }
            if (words == 1 || (long)outDim * inDim < 1 << 16)
                for (int w = 0; w < words; w++) Column(w);
            else
                Parallel.For(0, words, Column);
        }
    }

    public static AuditCase SignsTCase => new("bitlinear signs-t", 0, (dev, rng) =>
    {
        int outDim = Check.Size(rng, 70), inDim = Check.Size(rng, 300);
        // padding bits past in set, so a kernel that writes them (out of st's rows) or reads them is caught
        var signs = Check.Signs(rng, outDim, inDim);
        using var ts = Tensor.From(signs, [outDim, inDim], dev);
        using var tt = Check.Poisoned([inDim, outDim], DType.F32, dev);
        SignsT(ts, inDim, tt);
        var want = new float[(long)inDim * outDim];
        SignsTTwin(signs, want, outDim, inDim);
        return (Check.RelativeError(tt.ToFloatArray(), want), $"[{outDim}, {inDim}]");
    });

    public static AuditCase MaterializeCase => new("bitlinear materialize", 0, (dev, rng) =>
    {
        int outDim = Check.Size(rng, 70), inDim = Check.Size(rng, 300);
        var wt = Check.FloatType(rng);
        var wb = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
        var signs = new uint[outDim * DTypes.SignWordsPerRow(inDim)];
        for (int i = 0; i < signs.Length; i++) signs[i] = (uint)rng.NextInt64(0, 1L << 32);
        float scale = Check.Value(rng, 0.05f);
        using var tb = Tensor.From(wb, [outDim, inDim], dev, wt);
        using var ts = Tensor.From(signs, [outDim, inDim], dev);
        using var tw = Check.Poisoned([outDim, inDim], DType.F32, dev);
        Materialize(tb, ts, scale, tw);
        var want = new float[wb.Length];
        MaterializeTwin(wb, signs, scale, want, outDim, inDim);
        return (Check.RelativeError(tw.ToFloatArray(), want), $"[{outDim}, {inDim}] base {wt}");
    });

    public static AuditCase Case => new("bitlinear", Check.F32Bound, (dev, rng) =>
    {
        // in: ragged around whole words (1, 31, 33, 65…) and up to a few hundred; rows as in decode and prefill. A third
        // of the cases have the GEMM's rows and, half of those, in a multiple of 8: the tensor-core form (MatMul.GemmSigns).
        bool many = rng.Next(3) == 0;
        int rows = many ? MatMul.ChunkedGemvMaxRows + Check.Size(rng, 70) : Check.Size(rng, 20);
        int inDim = many && rng.Next(2) == 0 ? 8 * Check.Size(rng, 30) : Check.Size(rng, 300), outDim = Check.Size(rng, many ? 140 : 70);
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var signs = Check.Signs(rng, outDim, inDim);   // padding bits past in must not count
        float scale = Check.Value(rng, 0.05f);
        // y starts from a base matmul's output: random, so a forgotten add shows.
        var want = Check.Values(rng, (long)rows * outDim, 3f);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var ts = Tensor.From(signs, [outDim, inDim], dev);
        using var ty = Tensor.From(want, [rows, outDim], dev);
        Run(tx, ts, scale, ty);
        Twin(x, signs, scale, want, rows, inDim, outDim);
        string form = dev.IsIlgpu && MatMul.TakesMmaSigns(tx, rows, inDim) ? " tensor cores" : "";
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ·{scale:G3} +={form}");
    });
}

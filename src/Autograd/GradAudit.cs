using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Autograd;

/// <summary>
/// The backward ops' checks, the counterpart of <see cref="Audit.All"/> (which cannot list them: this assembly is
/// above it). Each draws a random ragged shape (sizes from <see cref="Check.Size"/>: 1, primes, a tile ± 1) and
/// never-zero values, runs the op's Run on the device (outputs poisoned, or holding random values where the op
/// adds), runs the twin on the same inputs, and returns the relative error. On <see cref="Device.Cpu"/> the same
/// cases check the host paths. Sizes are small because ILGPU's CPU accelerator pays for every barrier with OS
/// thread switches.
/// </summary>
public static class GradAudit
{
    public static IReadOnlyList<AuditCase> Cases =>
    [
        LinearCase, BitLinearCase, RmsNormCase, RopeCase, SwiGluCase, AttentionCase, MseCase, CrossEntropyCase, EmbeddingCase, SoftmaxCase,
    ];

    /// <summary>The backward ops' ILGPU kernels (for PTX checks: <see cref="Ptx.AllKernels"/> lists the forward ones).</summary>
    public static IReadOnlyList<System.Reflection.MethodInfo> Kernels => Ptx.KernelsIn(typeof(GradAudit).Assembly);

    /// <summary>The worst of several relative errors (one per output).</summary>
    static double Worst(params double[] errors) => errors.Max();

    /// <summary>Relative error of a scalar; NaN matching NaN counts as exact (the all-ignored cross-entropy).</summary>
    static double Scalar(float got, double want)
    {
        if (double.IsNaN(want)) return float.IsNaN(got) ? 0 : double.PositiveInfinity;
        if (!float.IsFinite(got)) return double.PositiveInfinity;
        return got == want ? 0 : Math.Abs(got - want) / Math.Abs(want);
    }

    /// <summary>GEMV (≤ 8 rows), chunked GEMV (9–32) and GEMM (33+) rows; W in any float dtype; dx overwritten or
    /// added to. Bound: f32 sums of f32 products, as <see cref="MatMul"/>'s.</summary>
    static AuditCase LinearCase => new("grad linear", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 40), inDim = Check.Size(rng, 130), outDim = Check.Size(rng, 130);
        var wt = Check.FloatType(rng);
        bool accumulate = rng.Next(2) == 0;
        var dy = Check.Values(rng, (long)rows * outDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
        var want = accumulate ? Check.Values(rng, (long)rows * inDim, 3f) : new float[rows * inDim];
        using var tdy = Tensor.From(dy, [rows, outDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, wt);
        using var tdx = accumulate ? Tensor.From(want, [rows, inDim], dev) : Check.Poisoned([rows, inDim], DType.F32, dev);
        LinearGrad.Run(tdy, tw, tdx, accumulate);
        LinearGrad.Twin(dy, w, want, rows, inDim, outDim, accumulate);
        return (Check.RelativeError(tdx.ToFloatArray(), want), $"dy [{rows}, {outDim}]·W [{outDim}, {inDim}] {wt}{(accumulate ? " +=" : "")}");
    });

    /// <summary>
    /// dx (absent a quarter of the time; overwritten or added to) and dα added into a random slot of a random
    /// scales vector, whose other slots must not move. dα is measured against |dα₀| + Σ|x ⊙ G| (G = dy·S), the
    /// scale of what its dot product sums (as the "dot" check does): x·G cancels, and a near-zero dα would make a
    /// correct f32 sum look wrong. Padding bits past in are set, so a rule that reads them is caught.
    /// </summary>
    static AuditCase BitLinearCase => new("grad bitlinear", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 20), inDim = Check.Size(rng, 160), outDim = Check.Size(rng, 70);
        int words = DTypes.SignWordsPerRow(inDim), slots = Check.Size(rng, 5), index = rng.Next(slots);
        var wt = Check.FloatType(rng);
        bool withDx = rng.Next(4) != 0, accumulate = rng.Next(2) == 0;
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim, 0.1f), wt);
        var signs = Check.Signs(rng, outDim, inDim);
        float scale = Check.Value(rng, 0.05f);
        var dy = Check.Values(rng, (long)rows * outDim);
        var dScale0 = Check.Values(rng, slots);
        var dx0 = accumulate ? Check.Values(rng, (long)rows * inDim, 3f) : null;

        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, wt);
        using var ts = Tensor.From(signs, [outDim, inDim], dev);
        using var tdy = Tensor.From(dy, [rows, outDim], dev);
        using var tds = Tensor.From(dScale0, [slots], dev);
        using var tdx = !withDx ? null : accumulate ? Tensor.From(dx0!, [rows, inDim], dev) : Check.Poisoned([rows, inDim], DType.F32, dev);
        BitLinearGrad.Run(tx, tw, ts, scale, tdy, tdx, accumulate, tds, index);

        var dx = new float[withDx ? rows * inDim : 0];
        float dAlpha = BitLinearGrad.Twin(x, w, signs, scale, dy, dx, rows, inDim, outDim);
        var wantScales = (float[])dScale0.Clone();
        wantScales[index] = (float)((double)dScale0[index] + dAlpha);
        double magnitude = Math.Abs(dScale0[index]);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < inDim; i++)
            {
                double g = 0;
                for (int o = 0; o < outDim; o++) g += dy[r * outDim + o] * (double)BitLinear.Sign(signs, words, o, i);
                magnitude += Math.Abs(x[r * inDim + i] * g);
            }
        double err = Dot.Error(tds.ToFloatArray(), wantScales, index, magnitude);
        if (withDx)
        {
            if (accumulate)
                for (int i = 0; i < dx.Length; i++) dx[i] += dx0![i];
            err = Worst(err, Check.RelativeError(tdx!.ToFloatArray(), dx));
        }
        return (err, $"x [{rows}, {inDim}], out {outDim}, base {wt}, α {scale:G3}{(withDx ? accumulate ? ", dx +=" : ", dx" : ", no dx")}");
    });

    /// <summary>eps is large beside mean(x²) half the time, so its term counts; with one element it always is: there
    /// dx ≈ eps·ρ³·w·dy is what is left of two nearly equal terms, which f32 cannot resolve with a small eps.</summary>
    static AuditCase RmsNormCase => new("grad rmsnorm", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 9), dim = Check.Size(rng, 2000);
        var wt = Check.FloatType(rng);
        float eps = dim > 1 && rng.Next(2) == 0 ? 1e-5f : 0.3f;
        bool accumulate = rng.Next(2) == 0;
        var x = Check.Values(rng, (long)rows * dim, 3f);
        var w = Check.Rounded(Check.Values(rng, dim), wt);
        var dy = Check.Values(rng, (long)rows * dim);
        var want = accumulate ? Check.Values(rng, (long)rows * dim) : new float[rows * dim];
        using var tx = Tensor.From(x, [rows, dim], dev);
        using var tw = Tensor.From(w, [dim], dev, wt);
        using var tdy = Tensor.From(dy, [rows, dim], dev);
        using var tdx = accumulate ? Tensor.From(want, [rows, dim], dev) : Check.Poisoned([rows, dim], DType.F32, dev);
        RmsNormGrad.Run(tx, tw, tdy, tdx, eps, accumulate);
        RmsNormGrad.Twin(x, w, dy, want, rows, dim, eps, accumulate);
        return (Check.RelativeError(tdx.ToFloatArray(), want), $"[{rows}, {dim}] w {wt} eps {eps:G2}{(accumulate ? " +=" : "")}");
    });

    static AuditCase RopeCase => new("grad rope", Check.F32Bound, (dev, rng) =>
    {
        int tokens = Check.Size(rng, 17), heads = Check.Size(rng, 9), d = 2 * Check.Size(rng, 80), maxPos = Check.Size(rng, 3000);
        var scaling = rng.Next(2) == 0 ? null : new Llama3RopeScaling(8, 1, 4, Check.Size(rng, 8192));
        using var table = RopeTable.Create(d, 500_000, scaling, maxPos, dev);
        var pos = new int[tokens];
        for (int t = 0; t < tokens; t++) pos[t] = rng.Next(maxPos);
        var dy = Check.Values(rng, (long)tokens * heads * d, 2f);
        using var tdy = Tensor.From(dy, [tokens, heads, d], dev);
        using var tp = Tensor.From(pos, [tokens], dev);
        RopeGrad.Run(tdy, tp, table);
        var want = (float[])dy.Clone();
        RopeGrad.Twin(want, pos, table.Cos.ToFloatArray(), table.Sin.ToFloatArray(), heads, d);
        return (Check.RelativeError(tdy.ToFloatArray(), want), $"[{tokens}, {heads}, {d}] max pos {maxPos}{(scaling == null ? "" : " llama3")}");
    });

    static AuditCase SwiGluCase => new("grad swiglu", Check.F32Bound, (dev, rng) =>
    {
        int n = Check.Size(rng, 70_000);
        var g = Check.Values(rng, n, 6f);
        var u = Check.Values(rng, n, 2f);
        var dh = Check.Values(rng, n);
        using var tg = Tensor.From(g, [n], dev);
        using var tu = Tensor.From(u, [n], dev);
        using var tdh = Tensor.From(dh, [n], dev);
        using var tdg = Check.Poisoned([n], DType.F32, dev);
        using var tdu = Check.Poisoned([n], DType.F32, dev);
        SwiGluGrad.Run(tg, tu, tdh, tdg, tdu);
        var dg = new float[n];
        var du = new float[n];
        SwiGluGrad.Twin(g, u, dh, dg, du);
        return (Worst(Check.RelativeError(tdg.ToFloatArray(), dg), Check.RelativeError(tdu.ToFloatArray(), du)), $"[{n}]");
    });

    /// <summary>
    /// 1–2 sequences of 2–40 tokens (past one 32-thread chunk of keys and of (query, head) rows on ILGPU's CPU
    /// accelerator), GQA groups of 1–4, head sizes as the forward's checks draw them, a window half the time (never
    /// 1: with one key per query dq and dk are all zero and a relative error has nothing to measure against).
    /// q and k up to 2 so the softmax is far from uniform. Error: the worst of dq's, dk's and dv's.
    /// </summary>
    static AuditCase AttentionCase => new("grad attention", Check.F32Bound, (dev, rng) =>
    {
        int sequences = Check.Size(rng, 2), T = Math.Max(2, Check.Size(rng, 40));
        int kv = Check.Size(rng, 2), group = Check.Size(rng, 4), heads = kv * group, d = HeadDims.Draw(rng);
        int window = rng.Next(2) == 0 ? 0 : Math.Max(2, Check.Size(rng, T + 3));
        float scale = 1f / MathF.Sqrt(d);
        int n = sequences * T;
        var q = Check.Values(rng, (long)n * heads * d, 2f);
        var k = Check.Values(rng, (long)n * kv * d, 2f);
        var v = Check.Values(rng, (long)n * kv * d);
        var dOut = Check.Values(rng, (long)n * heads * d);
        using var tq = Tensor.From(q, [n, heads, d], dev);
        using var tk = Tensor.From(k, [n, kv, d], dev);
        using var tv = Tensor.From(v, [n, kv, d], dev);
        using var tdo = Tensor.From(dOut, [n, heads, d], dev);
        using var tdq = Check.Poisoned([n, heads, d], DType.F32, dev);
        using var tdk = Check.Poisoned([n, kv, d], DType.F32, dev);
        using var tdv = Check.Poisoned([n, kv, d], DType.F32, dev);
        AttentionGrad.Run(tq, tk, tv, tdo, tdq, tdk, tdv, sequences, window, scale);
        var dq = new float[q.Length];
        var dk = new float[k.Length];
        var dv = new float[v.Length];
        AttentionGrad.BatchTwin(q, k, v, dOut, dq, dk, dv, sequences, T, heads, kv, d, window, scale);
        return (Worst(Check.RelativeError(tdq.ToFloatArray(), dq), Check.RelativeError(tdk.ToFloatArray(), dk), Check.RelativeError(tdv.ToFloatArray(), dv)),
                $"{sequences}×T {T}, heads {heads}/{kv}, D {d}, window {window}");
    });

    /// <summary>Error: the worst of dStudent's and the loss's (the loss is a sum of positive terms: no cancellation,
    /// so plain relative error).</summary>
    static AuditCase MseCase => new("grad mse", Check.F32Bound, (dev, rng) =>
    {
        int n = Check.Size(rng, 20_000);
        var s = Check.Values(rng, n, 3f);
        var t = Check.Values(rng, n, 3f);
        using var ts = Tensor.From(s, [n], dev);
        using var tt = Tensor.From(t, [n], dev);
        using var tds = Check.Poisoned([n], DType.F32, dev);
        using var tl = Check.Poisoned([1], DType.F32, dev);
        LossGrad.MseRun(ts, tt, tds, tl);
        var ds = new float[n];
        double loss = 0;
        for (int i = 0; i < n; i++) loss += ((double)s[i] - t[i]) * ((double)s[i] - t[i]);
        LossGrad.Mse(s, t, ds);
        return (Worst(Check.RelativeError(tds.ToFloatArray(), ds), Scalar(tl.ToFloatArray()[0], loss / n)), $"[{n}]");
    });

    /// <summary>A fifth of the rows ignored (all of them now and then: the loss is NaN, dLogits zero); logits up to
    /// ±8, so some rows are confident, where p_t − 1 must not be taken by subtraction.</summary>
    static AuditCase CrossEntropyCase => new("grad cross-entropy", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 17), vocab = Check.Size(rng, 5000);
        var x = Check.Values(rng, (long)rows * vocab, 8f);
        var targets = new int[rows];
        for (int r = 0; r < rows; r++) targets[r] = rng.Next(5) == 0 ? CrossEntropy.IgnoreIndex : rng.Next(vocab);
        using var tx = Tensor.From(x, [rows, vocab], dev);
        using var tt = Tensor.From(targets, [rows], dev);
        using var tdx = Check.Poisoned([rows, vocab], DType.F32, dev);
        using var tl = Check.Poisoned([1], DType.F32, dev);
        LossGrad.CrossEntropyRun(tx, tt, tdx, tl);
        var dx = new float[x.Length];
        float loss = LossGrad.CrossEntropyMean(x, targets, dx, vocab);
        return (Worst(Check.RelativeError(tdx.ToFloatArray(), dx), Scalar(tl.ToFloatArray()[0], loss)),
                $"[{rows}, {vocab}], {targets.Count(t => t == CrossEntropy.IgnoreIndex)} ignored");
    });

    /// <summary>A small vocabulary, so ids repeat and their rows meet; dTable starts random (the op adds).</summary>
    static AuditCase EmbeddingCase => new("grad embedding", Check.F32Bound, (dev, rng) =>
    {
        int vocab = Check.Size(rng, 40), dim = Check.Size(rng, 300), tokens = Check.Size(rng, 65);
        var ids = new int[tokens];
        for (int t = 0; t < tokens; t++) ids[t] = rng.Next(vocab);
        var dy = Check.Values(rng, (long)tokens * dim);
        var want = Check.Values(rng, (long)vocab * dim);
        using var ti = Tensor.From(ids, [tokens], dev);
        using var tdy = Tensor.From(dy, [tokens, dim], dev);
        using var tdt = Tensor.From(want, [vocab, dim], dev);
        EmbeddingGrad.Run(ti, tdy, tdt);
        EmbeddingGrad.Twin(ids, dy, want, dim);
        return (Check.RelativeError(tdt.ToFloatArray(), want), $"{tokens} ids into [{vocab}, {dim}]");
    });

    /// <summary>y is a real softmax output (rows summing to 1); half the time dx is dy itself (in place). dx = y·(dy − Σ dy·y)
    /// is a difference: where dy_i is close to the row's Σ dy·y, f32 leaves an error of the size of the terms, not of
    /// their difference. So the error is measured against the terms, ‖got − want‖ / ‖y·(|dy| + |Σ dy·y|)‖: with the plain
    /// relative error a small row (n = 3) whose outputs all nearly cancel failed the audit on the H200 (4.2e-4).</summary>
    static AuditCase SoftmaxCase => new("grad softmax", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 9), n = Check.Size(rng, 5000);
        bool inPlace = rng.Next(2) == 0;
        var y = new float[(long)rows * n];
        Softmax.Twin(Check.Values(rng, y.Length, 8f), y, rows, n);
        var dy = Check.Values(rng, y.Length);
        using var ty = Tensor.From(y, [rows, n], dev);
        using var tdy = Tensor.From(dy, [rows, n], dev);
        using var tdx = inPlace ? null : Check.Poisoned([rows, n], DType.F32, dev);
        SoftmaxGrad.Run(ty, tdy, tdx ?? tdy);
        var want = new float[y.Length];
        SoftmaxGrad.Twin(y, dy, want, rows, n);
        var scale = new float[y.Length];
        for (int r = 0; r < rows; r++)
        {
            double dot = 0;
            for (int i = 0; i < n; i++) dot += (double)dy[r * n + i] * y[r * n + i];
            for (int i = 0; i < n; i++) scale[r * n + i] = (float)(y[r * n + i] * (Math.Abs(dy[r * n + i]) + Math.Abs(dot)));
        }
        var got = (tdx ?? tdy).ToFloatArray();
        double err = Check.RelativeError(got, want);
        if (double.IsFinite(err))
        {
            double num = 0, den = 0;
            for (int i = 0; i < got.Length; i++)
            {
                num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
                den += (double)scale[i] * scale[i];
            }
            err = den == 0 ? (num == 0 ? 0 : double.PositiveInfinity) : Math.Sqrt(num / den);
        }
        return (err, $"[{rows}, {n}]{(inPlace ? " in place" : "")}");
    });
}

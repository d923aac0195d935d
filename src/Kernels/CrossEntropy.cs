using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Per-row negative log-likelihood for perplexity: nll[r] = logsumexp(logits[r]) − logits[r, target[r]],
/// i.e. torch.nn.functional.cross_entropy(logits, targets, reduction="none", ignore_index=-100), the loss
/// of Hugging Face's causal LMs (which upcast logits to f32, shift labels left by one and average over the
/// non-ignored rows: that shift and the mean are the caller's). logits f32 [rows, vocab], targets I32
/// [rows], nll f32 [rows]. A target of −100 (HF's ignore_index) gives 0.
/// <para>Other targets outside [0, vocab): the op throws when targets are on the host; on a device the
/// kernel writes NaN for that row.</para>
/// </summary>
public static class CrossEntropy
{
    public const int IgnoreIndex = -100;

    public static void Twin(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, Span<float> nll, int vocab)
    {
        for (int r = 0; r < targets.Length; r++)
        {
            if (targets[r] == IgnoreIndex) { nll[r] = 0; continue; }
            var x = logits.Slice(r * vocab, vocab);
            double m = double.NegativeInfinity;
            for (int i = 0; i < vocab; i++) m = Math.Max(m, x[i]);
            double s = 0;
            for (int i = 0; i < vocab; i++) s += Math.Exp(x[i] - m);
            nll[r] = (float)((m - x[targets[r]]) + Math.Log(s));   // the difference first: exact in f64
        }
    }

    /// <summary>
    /// One group per row: max, then Σ exp(x − max) (strided, coalesced), then one thread writes
    /// (max − x[target]) + log Σ, which keeps the difference exact before adding the log.
    /// <para>Why Σ is kept as count + rest: when the target is a confident right answer, nll = log Σ with
    /// Σ = 1 + (a tiny rest). In f32, 1 + rest loses the rest, and the GPU's lg2.approx has an absolute,
    /// not relative, error near 1; so the elements equal to the max are counted apart (n ≥ 1, exact) and
    /// log Σ = log n + log1p(rest / n), with log1p from its series where the argument is small.</para>
    /// </summary>
    static void Kernel(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> nll, int vocab)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        int r = Grid.IdxX;
        int target = targets[r];
        // The target is the same for the whole group, so the group leaves together (no barrier is skipped).
        if (target == IgnoreIndex || (uint)target >= (uint)vocab)
        {
            if (Group.IdxX == 0) nll[r] = target == IgnoreIndex ? 0f : float.NaN;
            return;
        }
        long row = (long)r * vocab;
        float m = float.NegativeInfinity;
        for (int i = Group.IdxX; i < vocab; i += Group.DimX) m = MathF.Max(m, logits[row + i]);
        m = Reduce.GroupMax(m, scratch);
        float n = 0, rest = 0;
        for (int i = Group.IdxX; i < vocab; i += Group.DimX)
        {
            float d = logits[row + i] - m;
            if (d == 0) n += 1;
            else rest += MathF.Exp(d);
        }
        n = Reduce.GroupSum(n, scratch);
        rest = Reduce.GroupSum(rest, scratch);
        if (Group.IdxX == 0) nll[r] = (m - logits[row + target]) + (MathF.Log(n) + Log1P(rest / n));
    }

    /// <summary>log(1 + y) for y ≥ 0: below 0.1 by the series 2·atanh(t), t = y/(2 + y) ≤ 0.048 (five
    /// terms leave &lt; 1e-13 relative), above it log itself (there ≥ 0.095, so its absolute error is small
    /// relative to it).</summary>
    static float Log1P(float y)
    {
        if (y >= 0.1f) return MathF.Log(1 + y);
        float t = y / (2 + y), t2 = t * t;
        return 2 * t * (1 + t2 * (1f / 3 + t2 * (1f / 5 + t2 * (1f / 7 + t2 * (1f / 9)))));
    }

    public static void Run(Tensor logits, Tensor targets, Tensor nll)
    {
        Need.SameDevice(logits, targets, nll);
        Need.F32("cross-entropy logits", logits);
        Need.F32("cross-entropy nll", nll);
        if (logits.Rank != 2) throw new ArgumentException($"cross-entropy logits: expected [rows, vocab], got {logits}");
        int rows = logits.Dim(0), vocab = logits.Dim(1);
        if (targets.DType != DType.I32) throw new ArgumentException($"cross-entropy targets: expected I32, got {targets}");
        Need.Shape("cross-entropy targets", targets, rows);
        Need.Shape("cross-entropy nll", nll, rows);
        if (rows == 0) return;
        if (!nll.Device.IsIlgpu)
        {
            var t = targets.Host<int>();
            foreach (var v in t)
                if (v != IgnoreIndex && (uint)v >= (uint)vocab)
                    throw new ArgumentException($"cross-entropy: target {v} outside [0, {vocab}) and not the ignore index {IgnoreIndex}");
            Twin(logits.Host<float>(), t, nll.Host<float>(), vocab);
            return;
        }
        nll.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>>(Kernel)(
            new KernelConfig(rows, Softmax.GroupSize(vocab, nll.Device)), logits.View<float>(), targets.View<int>(), nll.View<float>(), vocab);
    }

    public static AuditCase Case => new("cross-entropy", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 17), vocab = Check.Size(rng, 5000);
        var x = Check.Values(rng, (long)rows * vocab, 8f);
        var t = new int[rows];
        for (int r = 0; r < rows; r++) t[r] = rng.Next(5) == 0 ? IgnoreIndex : rng.Next(vocab);
        using var tx = Tensor.From(x, [rows, vocab], dev);
        using var tt = Tensor.From(t, [rows], dev);
        using var tn = Check.Poisoned([rows], DType.F32, dev);
        Run(tx, tt, tn);
        var want = new float[rows];
        Twin(x, t, want, vocab);
        return (Check.RelativeError(tn.ToFloatArray(), want), $"[{rows}, {vocab}]");
    });
}

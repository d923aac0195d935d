namespace BitDeltaNative.Autograd;

/// <summary>
/// AdamW (Loshchilov and Hutter 2019, arXiv 1711.05101) with torch.optim.AdamW's semantics (amsgrad off,
/// maximize off; the single-tensor update of torch/optim/adamw.py), for step t = 1, 2, …:
/// <code>
/// p ← p·(1 − lr·wd)                              decoupled weight decay, before the moments
/// m ← β₁·m + (1 − β₁)·g
/// v ← β₂·v + (1 − β₂)·g²
/// p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)   i.e. p − lr·m̂/(√v̂ + eps)
/// </code>
/// Defaults are torch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2. The parameters, m and v are
/// f32 as torch keeps them for f32 parameters; each element's update is computed in f64 and rounded once, where
/// torch rounds after every f32 operation (a difference of a few ulps per step). In BitDelta scale distillation
/// the parameters are the per-matrix scales α (arXiv 2402.10193 §3.2).
/// </summary>
public sealed class AdamW
{
    public double Beta1 = 0.9, Beta2 = 0.999, Eps = 1e-8, WeightDecay = 1e-2;
    /// <summary>First and second moments, one per parameter, zero at the start.</summary>
    public float[] M, V;
    /// <summary>Steps taken so far (torch's state["step"]).</summary>
    public int Steps;

    public AdamW(int parameters)
    {
        M = new float[parameters];
        V = new float[parameters];
    }

    /// <summary>One step on <paramref name="p"/> with gradient <paramref name="g"/> and this step's learning rate
    /// (e.g. from <see cref="LrSchedule.Cosine"/>).</summary>
    public void Step(Span<float> p, ReadOnlySpan<float> g, double lr)
    {
        if (p.Length != M.Length || g.Length != M.Length)
            throw new ArgumentException($"adamw: {M.Length} parameters, got {p.Length} values and {g.Length} gradients");
        Steps++;
        double bc1 = 1 - Math.Pow(Beta1, Steps), bc2Sqrt = Math.Sqrt(1 - Math.Pow(Beta2, Steps));
        for (int i = 0; i < p.Length; i++)
        {
            double pi = p[i] * (1 - lr * WeightDecay);
            double m = Beta1 * M[i] + (1 - Beta1) * g[i];
            double v = Beta2 * V[i] + (1 - Beta2) * (double)g[i] * g[i];
            M[i] = (float)m;
            V[i] = (float)v;
            p[i] = (float)(pi - lr / bc1 * m / (Math.Sqrt(v) / bc2Sqrt + Eps));
        }
    }
}

/// <summary>Learning-rate schedules.</summary>
public static class LrSchedule
{
    /// <summary>
    /// The learning rate for optimizer step <paramref name="step"/> (0-based) of <paramref name="total"/>:
    /// linear warmup from 0, then cosine annealing to 0. This is transformers' get_cosine_schedule_with_warmup
    /// (num_cycles 0.5): step &lt; warmup: base·step/warmup; else, with progress = (step − warmup)/(total − warmup),
    /// base·½·(1 + cos(π·progress)). With no warmup it is torch.optim.lr_scheduler.CosineAnnealingLR(T_max = total,
    /// eta_min = 0) in its closed form base·½·(1 + cos(π·step/T_max)), stepping the scheduler once after each
    /// optimizer step: step 0 runs at base, step total would run at 0. Past total (which a run of total steps never
    /// reaches) this returns 0, where both libraries' cosines rise again.
    /// <para>The BitDelta reference (bitdelta/train.py) trains the scales with torch.optim.AdamW(lr) at torch's
    /// other defaults and CosineAnnealingLR(optimizer, num_steps), scheduler.step() after each optimizer.step():
    /// this schedule with warmup 0 and total = num_steps. (torch's step() uses a recursive form equal to the closed
    /// form up to rounding.)</para>
    /// </summary>
    public static double Cosine(double baseLr, int step, int total, int warmup = 0)
    {
        if (total < 1 || warmup < 0 || warmup > total || step < 0)
            throw new ArgumentException($"cosine schedule: step {step}, total {total}, warmup {warmup}");
        if (step < warmup) return baseLr * step / warmup;
        if (step >= total) return 0;
        double progress = (double)(step - warmup) / Math.Max(1, total - warmup);
        return baseLr * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}

using BitDeltaNative.Kernels;

namespace BitDeltaNative.Autograd;

/// <summary>Losses with their gradients with respect to the logits.</summary>
public static class LossGrad
{
    /// <summary>
    /// BitDelta's scale-distillation loss (arXiv 2402.10193 §3.2, eq. 3: ‖Z_fine − Z_bin‖² of the logits; the
    /// reference code, bitdelta/train.py, uses <c>F.mse_loss(teacher_logits, student_logits)</c>, which takes the mean): L = (1/N)·Σ_i (s_i − t_i)² over all N
    /// elements, dL/ds_i = 2·(s_i − t_i)/N. Writes dStudent, returns L (f64 sum rounded once).
    /// </summary>
    public static float Mse(ReadOnlySpan<float> student, ReadOnlySpan<float> teacher, Span<float> dStudent)
    {
        int n = student.Length;
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            double e = (double)student[i] - teacher[i];
            sum += e * e;
            dStudent[i] = (float)(2 * e / n);
        }
        return (float)(sum / n);
    }

    /// <summary>
    /// Cross-entropy with torch's defaults (<c>F.cross_entropy(reduction="mean", ignore_index=-100)</c>): rows
    /// whose target is <see cref="CrossEntropy.IgnoreIndex"/> count for nothing; L = (1/N)·Σ_r nll_r over the N
    /// other rows, nll_r = logsumexp(x_r) − x_r[t_r]; dL/dx_r = (softmax(x_r) − onehot(t_r))/N, zero on ignored
    /// rows. With every row ignored torch's mean is 0/0 = NaN: so is L here, and dlogits is all zero.
    /// logits and dLogits are [rows, vocab].
    /// </summary>
    public static float CrossEntropyMean(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, Span<float> dLogits, int vocab)
    {
        int counted = 0;
        foreach (int t in targets) if (t != CrossEntropy.IgnoreIndex) counted++;
        double total = 0;
        for (int r = 0; r < targets.Length; r++)
        {
            var dx = dLogits.Slice(r * vocab, vocab);
            int target = targets[r];
            if (target == CrossEntropy.IgnoreIndex) { dx.Clear(); continue; }
            if ((uint)target >= (uint)vocab) throw new ArgumentException($"cross-entropy: target {target} outside [0, {vocab})");
            var x = logits.Slice(r * vocab, vocab);
            double m = double.NegativeInfinity;
            for (int i = 0; i < vocab; i++) m = Math.Max(m, x[i]);
            double s = 0;
            for (int i = 0; i < vocab; i++) s += Math.Exp(x[i] - m);
            total += (m - x[target]) + Math.Log(s);
            for (int i = 0; i < vocab; i++)
                dx[i] = (float)((Math.Exp(x[i] - m) / s - (i == target ? 1 : 0)) / counted);
        }
        return counted == 0 ? float.NaN : (float)(total / counted);
    }
}

using BitDeltaNative.Kernels;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of causal attention over one sequence of T tokens at positions 0…T−1 (the forward is
/// <see cref="Attention.Twin"/> over a cache holding exactly these keys and values). q and o are [T, H, D], k
/// and v [T, KV, D]; query head h reads kv head h/(H/KV) (GQA); query t sees keys j in
/// [<see cref="Attention.FirstKey"/>(t, window), t]. With s_j = scale·q·k_j, P = softmax(s), o = Σ_j P_j·v_j:
/// <list type="bullet">
/// <item>dv_j += P_j·do;</item>
/// <item>dP_j = do·v_j, and through the softmax dS_j = P_j·(dP_j − Σ_l P_l·dP_l), where Σ_l P_l·dP_l = do·o;</item>
/// <item>dq = scale·Σ_j dS_j·k_j; dk_j += scale·dS_j·q.</item>
/// </list>
/// P is recomputed here from q and k rather than stored by the forward (as FlashAttention's backward does,
/// Dao et al. 2022, arXiv 2205.14135 §3.1): it is T² per head, the forward's only large intermediate.
/// dk and dv sum over the query heads of a group and over the queries that see each key.
/// </summary>
public static class AttentionGrad
{
    /// <summary>The spec, f64 throughout; dq, dk, dv are overwritten.</summary>
    public static void Twin(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dOut,
                            Span<float> dq, Span<float> dk, Span<float> dv,
                            int tokens, int nHeads, int nKvHeads, int headDim, int slidingWindow, float scale)
    {
        int group = nHeads / nKvHeads, D = headDim;
        var dkAcc = new double[(long)tokens * nKvHeads * D];
        var dvAcc = new double[dkAcc.Length];
        var p = new double[tokens];
        var dp = new double[tokens];
        var dqRow = new double[D];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < nHeads; h++)
            {
                int kvh = h / group, first = Attention.FirstKey(t, slidingWindow);
                int qa = (t * nHeads + h) * D;
                double max = double.NegativeInfinity;
                for (int j = first; j <= t; j++)
                {
                    int ka = (j * nKvHeads + kvh) * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)q[qa + d] * k[ka + d];
                    p[j] = scale * s;
                    max = Math.Max(max, p[j]);
                }
                double sum = 0;
                for (int j = first; j <= t; j++) sum += p[j] = Math.Exp(p[j] - max);
                double pdp = 0;
                for (int j = first; j <= t; j++)
                {
                    p[j] /= sum;
                    int va = (j * nKvHeads + kvh) * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)dOut[qa + d] * v[va + d];
                    dp[j] = s;
                    pdp += p[j] * s;
                }
                Array.Clear(dqRow);
                for (int j = first; j <= t; j++)
                {
                    int ka = (j * nKvHeads + kvh) * D;
                    double ds = p[j] * (dp[j] - pdp) * scale;
                    for (int d = 0; d < D; d++)
                    {
                        dqRow[d] += ds * k[ka + d];
                        dkAcc[ka + d] += ds * q[qa + d];
                        dvAcc[ka + d] += p[j] * dOut[qa + d];
                    }
                }
                for (int d = 0; d < D; d++) dq[qa + d] = (float)dqRow[d];
            }
        for (int i = 0; i < dkAcc.Length; i++)
        {
            dk[i] = (float)dkAcc[i];
            dv[i] = (float)dvAcc[i];
        }
    }
}

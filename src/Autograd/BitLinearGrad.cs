using BitDeltaNative.Kernels;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of a BitDelta linear layer (arXiv 2402.10193 §3.1), y = x·W_baseᵀ + α·x·Sᵀ, with S the ±1 signs of
/// Δ packed as <see cref="DType.Sign1"/> (32 per word along the input dimension, least significant bit first,
/// bit 1 = +1; the forward is <see cref="MatMul"/> then <see cref="BitLinear"/>). x [rows, in], y [rows, out].
/// <list type="bullet">
/// <item>dx = dy·(W_base + α·S): dx[r,i] = Σ_o dy[r,o]·(W_base[o,i] + α·S[o,i]).</item>
/// <item>dα = Σ_{r,o} dy[r,o]·(x·Sᵀ)[r,o] = Σ_{r,o} dy[r,o]·Σ_i S[o,i]·x[r,i]: y is linear in α with
/// coefficient x·Sᵀ. This is the only gradient scale distillation trains on (§3.2); W_base and S are frozen.</item>
/// </list>
/// </summary>
public static class BitLinearGrad
{
    /// <summary>The spec: writes dx (omit it with an empty span, e.g. for a first layer whose input needs no
    /// gradient) and returns dα; f64 sums, each result rounded to f32 once.</summary>
    public static float Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> wBase, ReadOnlySpan<uint> signs, float scale,
                             ReadOnlySpan<float> dy, Span<float> dx, int rows, int inDim, int outDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        if (!dx.IsEmpty)
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < inDim; i++)
                {
                    double s = 0;
                    for (int o = 0; o < outDim; o++)
                        s += (double)dy[r * outDim + o] * ((double)wBase[o * inDim + i] + (double)scale * BitLinear.Sign(signs, words, o, i));
                    dx[r * inDim + i] = (float)s;
                }
        double dScale = 0;
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
            {
                double xs = 0;
                for (int i = 0; i < inDim; i++) xs += BitLinear.Sign(signs, words, o, i) * (double)x[r * inDim + i];
                dScale += dy[r * outDim + o] * xs;
            }
        return (float)dScale;
    }
}

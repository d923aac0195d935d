namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of a linear layer with a frozen weight, y = x·Wᵀ (x [rows, in], W [out, in], y [rows, out]; the
/// forward is <see cref="Kernels.MatMul"/>). ∂y[r,o]/∂x[r,i] = W[o,i], so dx = dy·W:
/// dx[r,i] = Σ_o dy[r,o]·W[o,i]. No dW: in BitDelta scale distillation (arXiv 2402.10193 §3.2) every base
/// weight is frozen and only the per-matrix scales train.
/// </summary>
public static class LinearGrad
{
    /// <summary>The spec: f64 sums rounded to f32. With <paramref name="accumulate"/> dx += dy·W (a tensor used
    /// twice, e.g. the residual stream, sums the gradients of its uses).</summary>
    public static void Twin(ReadOnlySpan<float> dy, ReadOnlySpan<float> w, Span<float> dx, int rows, int inDim, int outDim, bool accumulate = false)
    {
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < inDim; i++)
            {
                double s = accumulate ? dx[r * inDim + i] : 0;
                for (int o = 0; o < outDim; o++) s += (double)dy[r * outDim + o] * w[o * inDim + i];
                dx[r * inDim + i] = (float)s;
            }
    }
}

using BitDeltaNative.Kernels;

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

    /// <summary>
    /// dx = dy·W, or dx += dy·W with <paramref name="accumulate"/>: dy f32 [rows, out] (any leading dimensions),
    /// W [out, in] in f16, bf16 or f32, dx f32 [rows, in]. Composed of tested ops: W is transposed into a temporary
    /// f32 [in, out] (<see cref="Transpose"/>), then dx (+)= dy·(Wᵀ)ᵀ is a <see cref="MatMul"/>. The same composition
    /// runs on <see cref="Device.Cpu"/> through the ops' host paths. A caller that takes the same W backward many
    /// times can keep Wᵀ and call MatMul itself.
    /// </summary>
    public static void Run(Tensor dy, Tensor w, Tensor dx, bool accumulate = false)
    {
        Need.SameDevice(dy, w, dx);
        if (w.Rank != 2) throw new ArgumentException($"linear backward weight: expected [out, in], got {w}");
        if (dy.Rank == 0 || dy.Dim(-1) != w.Dim(0)) throw new ArgumentException($"linear backward dy: expected last dimension {w.Dim(0)} (weight {w}), got {dy}");
        Need.Disjoint("linear backward", dy, dx);
        using var wt = Tensor.Empty([w.Dim(1), w.Dim(0)], DType.F32, w.Device);
        Transpose.Run(w, wt);
        MatMul.Run(dy, wt, dx, accumulate);
    }
}

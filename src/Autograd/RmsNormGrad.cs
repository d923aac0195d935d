namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of RMSNorm with a frozen weight (forward: <see cref="Kernels.RmsNorm"/>), per row of n elements:
/// y_i = w_i·x_i·ρ with ρ = (Σ_k x_k²/n + eps)^(−1/2). Since ∂ρ/∂x_j = −ρ³·x_j/n,
/// dx_j = ρ·w_j·dy_j − (ρ³/n)·x_j·Σ_i dy_i·w_i·x_i.
/// No dw: norms are not trained in BitDelta scale distillation (arXiv 2402.10193 §3.2).
/// </summary>
public static class RmsNormGrad
{
    /// <summary>The spec: f64 throughout (ρ from the f64 mean of squares), each dx rounded to f32 once.</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> dy, Span<float> dx, int rows, int dim, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            int at = r * dim;
            double ss = 0, dot = 0;
            for (int i = 0; i < dim; i++)
            {
                double xi = x[at + i];
                ss += xi * xi;
                dot += (double)dy[at + i] * w[i] * xi;
            }
            double rho = 1 / Math.Sqrt(ss / dim + eps);
            double c = rho * rho * rho / dim * dot;
            for (int i = 0; i < dim; i++) dx[at + i] = (float)(rho * w[i] * dy[at + i] - c * x[at + i]);
        }
    }
}

using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of RMSNorm with a frozen weight (forward: <see cref="Kernels.RmsNorm"/>), per row of n elements:
/// y_i = w_i·x_i·ρ with ρ = (Σ_k x_k²/n + eps)^(−1/2). Since ∂ρ/∂x_j = −ρ³·x_j/n,
/// dx_j = ρ·w_j·dy_j − (ρ³/n)·x_j·Σ_i dy_i·w_i·x_i.
/// No dw: norms are not trained in BitDelta scale distillation (arXiv 2402.10193 §3.2).
/// </summary>
public static class RmsNormGrad
{
    /// <summary>The spec: f64 throughout (ρ from the f64 mean of squares), each dx rounded to f32 once; with
    /// <paramref name="accumulate"/> the gradient is added (in f64) to what dx holds.</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> dy, Span<float> dx, int rows, int dim, float eps,
                            bool accumulate = false)
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
            for (int i = 0; i < dim; i++)
                dx[at + i] = (float)((accumulate ? dx[at + i] : 0.0) + rho * w[i] * dy[at + i] - c * x[at + i]);
        }
    }

    /// <summary>
    /// One group per row: one strided (coalesced) pass sums x² and dy·w·x, the group reduces both
    /// (<see cref="Reduce.GroupSum"/>), a second pass writes dx. Each element of dx is read (when accumulating) and
    /// written by the thread that reads its x and dy, so dx may be x or dy.
    /// </summary>
    static void Kernel(ArrayView<float> x, ArrayView<ushort> w, int wCode, ArrayView<float> dy, ArrayView<float> dx, int dim, float eps, int accumulate)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        long row = (long)Grid.IdxX * dim;
        float ss = 0, dot = 0;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            float v = x[row + i];
            ss += v * v;
            dot += dy[row + i] * Elem.Load(w, i, wCode) * v;
        }
        ss = Reduce.GroupSum(ss, scratch);
        dot = Reduce.GroupSum(dot, scratch);
        float rho = 1f / MathF.Sqrt(ss / dim + eps);
        float c = rho * rho * rho / dim * dot;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            float g = rho * Elem.Load(w, i, wCode) * dy[row + i] - c * x[row + i];
            dx[row + i] = accumulate != 0 ? dx[row + i] + g : g;
        }
    }

    /// <summary>dx (+)= the gradient: x, dy, dx f32 [rows, dim] (any leading dimensions), w [dim] in f16, bf16 or
    /// f32 as <see cref="RmsNorm.Run"/> takes it; eps as in the forward.</summary>
    public static void Run(Tensor x, Tensor w, Tensor dy, Tensor dx, float eps, bool accumulate = false)
    {
        Need.SameDevice(x, w, dy, dx);
        Need.F32("rmsnorm backward x", x);
        Need.F32("rmsnorm backward dy", dy);
        Need.F32("rmsnorm backward dx", dx);
        Need.Float("rmsnorm backward weight", w);
        int dim = x.Rank == 0 ? 1 : x.Dim(-1);
        Need.Count("rmsnorm backward weight", w, dim);
        Need.Count("rmsnorm backward dy", dy, x.ElementCount);
        Need.Count("rmsnorm backward dx", dx, x.ElementCount);
        if (x.ElementCount == 0) return;
        int rows = (int)(x.ElementCount / dim);
        if (!dx.Device.IsIlgpu)
        {
            Twin(x.Host<float>(), Need.HostF32(w), dy.Host<float>(), dx.Host<float>(), rows, dim, eps, accumulate);
            return;
        }
        dx.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, ArrayView<float>, int, float, int>>(Kernel)(
            new KernelConfig(rows, Softmax.GroupSize(dim, dx.Device)), x.View<float>(), Elem.View(w), Elem.Code(w.DType), dy.View<float>(), dx.View<float>(),
            dim, eps, accumulate ? 1 : 0);
    }
}

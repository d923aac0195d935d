using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of the row softmax y = softmax(x) (forward: <see cref="Softmax"/>), from its output: the Jacobian is
/// ∂y_i/∂x_j = y_i·([i = j] − y_j), so dx_i = Σ_j dy_j·y_j·([i = j] − y_i) = y_i·(dy_i − Σ_j dy_j·y_j).
/// </summary>
public static class SoftmaxGrad
{
    /// <summary>The spec, f64 per row, each dx rounded once. y, dy, dx f32 [rows, n]; dx may be dy.</summary>
    public static void Twin(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> dx, int rows, int n)
    {
        for (int r = 0; r < rows; r++)
        {
            int at = r * n;
            double dot = 0;
            for (int i = 0; i < n; i++) dot += (double)dy[at + i] * y[at + i];
            for (int i = 0; i < n; i++) dx[at + i] = (float)(y[at + i] * (dy[at + i] - dot));
        }
    }

    /// <summary>One group per row: Σ dy·y by a strided pass and a group sum, then dx in a second pass. Every
    /// element of dx is written by the thread that read its dy, so dx may be dy.</summary>
    static void Kernel(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, int n)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        long row = (long)Grid.IdxX * n;
        float dot = 0;
        for (int i = Group.IdxX; i < n; i += Group.DimX) dot += dy[row + i] * y[row + i];
        dot = Reduce.GroupSum(dot, scratch);
        for (int i = Group.IdxX; i < n; i += Group.DimX) dx[row + i] = y[row + i] * (dy[row + i] - dot);
    }

    public static void Run(Tensor y, Tensor dy, Tensor dx)
    {
        Need.SameDevice(y, dy, dx);
        Need.F32("softmax backward y", y);
        Need.F32("softmax backward dy", dy);
        Need.F32("softmax backward dx", dx);
        Need.Count("softmax backward dy", dy, y.ElementCount);
        Need.Count("softmax backward dx", dx, y.ElementCount);
        if (y.ElementCount == 0) return;
        int n = y.Rank == 0 ? 1 : y.Dim(-1), rows = (int)(y.ElementCount / n);
        if (!dx.Device.IsIlgpu)
        {
            Twin(y.Host<float>(), dy.Host<float>(), dx.Host<float>(), rows, n);
            return;
        }
        dx.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>>(Kernel)(
            new KernelConfig(rows, Softmax.GroupSize(n, dx.Device)), y.View<float>(), dy.View<float>(), dx.View<float>(), n);
    }
}

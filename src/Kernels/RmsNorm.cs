using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// RMSNorm with the weight multiply fused (Zhang and Sennrich 2019; Llama's LlamaRMSNorm):
/// y = x / sqrt(mean(x²) + eps) · w, over the last dimension, computed in f32 as Hugging Face does
/// (it upcasts to f32 for the variance). x and y are f32 [rows, dim]; w is [dim] in f16, bf16 or f32.
/// </summary>
public static class RmsNorm
{
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int rows, int dim, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * dim, dim);
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
            float inv = 1f / MathF.Sqrt((float)(ss / dim) + eps);
            for (int i = 0; i < dim; i++) y[r * dim + i] = w[i] * (xr[i] * inv);
        }
    }

    const int Threads = 256;

    /// <summary>One group per row: each thread sums squares over a strided slice (coalesced), the group
    /// reduces, then each thread scales its slice.</summary>
    static void Kernel(ArrayView<float> x, ArrayView<ushort> w, int wCode, ArrayView<float> y, int dim, float eps)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        long row = (long)Grid.IdxX * dim;
        float ss = 0;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            float v = x[row + i];
            ss += v * v;
        }
        ss = Reduce.GroupSum(ss, scratch);
        float inv = 1f / MathF.Sqrt(ss / dim + eps);
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
            y[row + i] = Elem.Load(w, i, wCode) * (x[row + i] * inv);
    }

    public static void Run(Tensor x, Tensor w, Tensor y, float eps)
    {
        Need.SameDevice(x, w, y);
        Need.F32("rmsnorm x", x);
        Need.F32("rmsnorm y", y);
        Need.Float("rmsnorm weight", w);
        int dim = x.Dim(-1);
        int rows = (int)(x.ElementCount / Math.Max(dim, 1));
        Need.Count("rmsnorm weight", w, dim);
        Need.Count("rmsnorm y", y, x.ElementCount);
        if (rows == 0 || dim == 0) return;
        if (!y.Device.IsIlgpu)
        {
            Twin(x.Host<float>(), Need.HostF32(w), y.Host<float>(), rows, dim, eps);
            return;
        }
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, int, float>>(Kernel)(
            new KernelConfig(rows, Threads), x.View<float>(), Elem.View(w), Elem.Code(w.DType), y.View<float>(), dim, eps);
    }

    public static AuditCase Case => new("rmsnorm", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 9), dim = Check.Size(rng, 5000);
        var wt = Check.FloatType(rng);
        var x = Check.Values(rng, (long)rows * dim, 3f);
        var w = Check.Rounded(Check.Values(rng, dim), wt);
        using var tx = Tensor.From(x, [rows, dim], dev);
        using var tw = Tensor.From(w, [dim], dev, wt);
        using var ty = Check.Poisoned([rows, dim], DType.F32, dev);
        Run(tx, tw, ty, 1e-5f);
        var want = new float[x.Length];
        Twin(x, w, want, rows, dim, 1e-5f);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {dim}] w {wt}");
    });
}

using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Row-wise softmax over the last dimension (torch.softmax(x, dim=-1)), f32 in and out:
/// y = exp(x − max) / Σ exp(x − max). Subtracting the row max first keeps exp from overflowing
/// (the usual stable form; Hugging Face's attention and sampling call torch's softmax, which does the same).
/// x and y are f32 [rows, n]; y may be x.
/// </summary>
public static class Softmax
{
    public static void Twin(ReadOnlySpan<float> x, Span<float> y, int rows, int n)
    {
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * n, n);
            float m = float.NegativeInfinity;
            for (int i = 0; i < n; i++) m = MathF.Max(m, xr[i]);
            double s = 0;
            for (int i = 0; i < n; i++) s += Math.Exp((double)xr[i] - m);
            var yr = y.Slice(r * n, n);
            for (int i = 0; i < n; i++) yr[i] = (float)(Math.Exp((double)xr[i] - m) / s);
        }
    }

    /// <summary>Threads for a group that owns one row of <paramref name="n"/> elements: whole warps, enough
    /// to cover short rows in one step, at most 1024 (CUDA's limit) for long ones. ILGPU's CPU accelerator
    /// runs every thread of a group as an OS thread meeting at each barrier, so there a 1024-thread group
    /// costs seconds; it gets at most 2 warps, which still exercises every cross-warp path of the kernels
    /// (they are written for any whole number of warps).</summary>
    internal static int GroupSize(int n, Device dev) =>
        Math.Clamp((int)(((long)n + 31) / 32 * 32), 32, dev.Kind == DeviceKind.IlgpuCpu ? 64 : 1024);

    /// <summary>One group per row, three strided (coalesced) passes: max, then exp and its sum (exp is
    /// stored in y so it is computed once), then the scaling.</summary>
    static void Kernel(ArrayView<float> x, ArrayView<float> y, int n)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        long row = (long)Grid.IdxX * n;
        float m = float.NegativeInfinity;
        for (int i = Group.IdxX; i < n; i += Group.DimX) m = MathF.Max(m, x[row + i]);
        m = Reduce.GroupMax(m, scratch);
        float s = 0;
        for (int i = Group.IdxX; i < n; i += Group.DimX)
        {
            float e = MathF.Exp(x[row + i] - m);
            y[row + i] = e;
            s += e;
        }
        s = Reduce.GroupSum(s, scratch);
        float inv = 1f / s;
        for (int i = Group.IdxX; i < n; i += Group.DimX) y[row + i] *= inv;
    }

    public static void Run(Tensor x, Tensor y)
    {
        Need.SameDevice(x, y);
        Need.F32("softmax x", x);
        Need.F32("softmax y", y);
        Need.Count("softmax y", y, x.ElementCount);
        int n = x.Rank == 0 ? 1 : x.Dim(-1);
        if (x.ElementCount == 0) return;
        int rows = (int)(x.ElementCount / n);
        if (!y.Device.IsIlgpu)
        {
            Twin(x.Host<float>(), y.Host<float>(), rows, n);
            return;
        }
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, int>>(Kernel)(
            new KernelConfig(rows, GroupSize(n, y.Device)), x.View<float>(), y.View<float>(), n);
    }

    public static AuditCase Case => new("softmax", Check.F32Bound, (dev, rng) =>
    {
        int rows = Check.Size(rng, 9), n = Check.Size(rng, 5000);
        var x = Check.Values(rng, (long)rows * n, 8f);
        using var tx = Tensor.From(x, [rows, n], dev);
        using var ty = Check.Poisoned([rows, n], DType.F32, dev);
        Run(tx, ty);
        var want = new float[x.Length];
        Twin(x, want, rows, n);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {n}]");
    });
}

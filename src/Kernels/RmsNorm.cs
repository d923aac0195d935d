using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// RMSNorm with the weight multiply fused (Zhang and Sennrich 2019; Llama's LlamaRMSNorm):
/// y = x / sqrt(mean(x²) + eps) · w, over the last dimension, computed in f32 as Hugging Face does
/// (it upcasts to f32 for the variance). x and y are f32 [rows, dim]; w is [dim] in f16, bf16 or f32.
/// With a pick (I32 [rows]), w is a table [n, dim] and row r is scaled by its row pick[r]: the multi-tenant batch,
/// where each tenant may bring its own norm weights (one launch for the whole batch, not one per tenant).
/// </summary>
public static class RmsNorm
{
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int rows, int dim, float eps, ReadOnlySpan<int> pick = default)
    {
        for (int r = 0; r < rows; r++)
        {
            var wr = pick.IsEmpty ? w : w.Slice(pick[r] * dim, dim);
            var xr = x.Slice(r * dim, dim);
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
            float inv = 1f / MathF.Sqrt((float)(ss / dim) + eps);
            for (int i = 0; i < dim; i++) y[r * dim + i] = wr[i] * (xr[i] * inv);
        }
    }

    /// <summary>Threads a row: a quarter of the row (4 elements a step), rounded up to a warp, at most 1024 on CUDA. ILGPU's
    /// CPU accelerator runs a group's threads as OS threads that meet at every barrier, so there the group stays at most
    /// 256, what it was before: 1024-thread groups made the CI's test run on 2 cores far longer.</summary>
    static int Threads(int dim, Device dev) => Math.Clamp((dim / 4 + 31) / 32 * 32, 32, dev.Kind == DeviceKind.Cuda ? 1024 : 256);

    static float Unit(bool b) => b ? 1f : 0f;

    /// <summary>One group per row: each thread sums squares over a strided slice (coalesced), the group reduces, then
    /// each thread scales its slice. A thread takes 4 elements a step, read without branches (an index past the row
    /// reads its last element, weighted 0), so their loads are in flight together: a decode step's row of 4096 is one
    /// step of 1024 threads, one memory round trip a phase. With 256 threads and one load a step it was 16 round trips
    /// a phase, ~16 µs a launch on the H200 (bench/NOTES.md).</summary>
    static void Kernel(ArrayView<float> x, ArrayView<ushort> w, int wCode, ArrayView<float> y, int dim, float eps, ArrayView<int> pick, int picked)
    {
        GridDependency.Release();   // a dependent launch after it may start its blocks as ours finish (DependentLaunch.cs)
        GridDependency.Wait();      // launched dependent itself: x is the kernel's ahead
        var scratch = SharedMemory.Allocate<float>(33);
        long row = (long)Grid.IdxX * dim;
        long wRow = picked != 0 ? (long)pick[Grid.IdxX] * dim : 0;
        int n = Group.DimX, last = dim - 1;
        float ss = 0;
        for (int i = Group.IdxX; i < dim; i += 4 * n)
        {
            int i1 = Math.Min(i + n, last), i2 = Math.Min(i + 2 * n, last), i3 = Math.Min(i + 3 * n, last);
            float v0 = x[row + i], v1 = x[row + i1] * Unit(i + n < dim), v2 = x[row + i2] * Unit(i + 2 * n < dim), v3 = x[row + i3] * Unit(i + 3 * n < dim);
            ss += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3);
        }
        ss = Reduce.GroupSum(ss, scratch);
        float inv = 1f / MathF.Sqrt(ss / dim + eps);
        for (int i = Group.IdxX; i < dim; i += 4 * n)
        {
            int i1 = Math.Min(i + n, last), i2 = Math.Min(i + 2 * n, last), i3 = Math.Min(i + 3 * n, last);
            float x0 = x[row + i], x1 = x[row + i1], x2 = x[row + i2], x3 = x[row + i3];
            float w0 = Elem.Load(w, wRow + i, wCode), w1 = Elem.Load(w, wRow + i1, wCode), w2 = Elem.Load(w, wRow + i2, wCode), w3 = Elem.Load(w, wRow + i3, wCode);
            y[row + i] = w0 * (x0 * inv);
            if (i + n < dim) y[row + i1] = w1 * (x1 * inv);
            if (i + 2 * n < dim) y[row + i2] = w2 * (x2 * inv);
            if (i + 3 * n < dim) y[row + i3] = w3 * (x3 * inv);
        }
    }

    public static void Run(Tensor x, Tensor w, Tensor y, float eps, Tensor? pick = null)
    {
        Need.SameDevice(x, w, y);
        Need.F32("rmsnorm x", x);
        Need.F32("rmsnorm y", y);
        Need.Float("rmsnorm weight", w);
        int dim = x.Dim(-1);
        int rows = (int)(x.ElementCount / Math.Max(dim, 1));
        Need.Count("rmsnorm y", y, x.ElementCount);
        if (pick == null) Need.Count("rmsnorm weight", w, dim);
        else
        {
            Need.SameDevice(x, pick);
            if (pick.DType != DType.I32 || pick.ElementCount != rows) throw new ArgumentException($"rmsnorm pick: expected I32 [{rows}], got {pick}");
            if (w.Rank != 2 || w.Dim(1) != dim) throw new ArgumentException($"rmsnorm weight table: expected [n, {dim}], got {w}");
        }
        if (rows == 0 || dim == 0) return;
        if (!y.Device.IsIlgpu)
        {
            var p = pick == null ? default : pick.Host<int>();
            foreach (var v in p)
                if ((uint)v >= (uint)w.Dim(0)) throw new ArgumentException($"rmsnorm pick: row {v} outside the table's {w.Dim(0)}");
            Twin(x.Host<float>(), Need.HostF32(w), y.Host<float>(), rows, dim, eps, p);
            return;
        }
        // Without a pick, x's storage stands in for the pick view, which is then never read.
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, int, float, ArrayView<int>, int>>(Kernel)(
            new KernelConfig(rows, Threads(dim, y.Device)), x.View<float>(), Elem.View(w), Elem.Code(w.DType), y.View<float>(), dim, eps,
            pick?.View<int>() ?? x.View<int>(), pick != null ? 1 : 0);
    }

    public static AuditCase Case => new("rmsnorm", Check.F32Bound, (dev, rng) => Audit(dev, rng, picked: false));

    /// <summary>The picked form: a table of 1–4 weight rows, each x row scaled by a random one of them.</summary>
    public static AuditCase PickCase => new("rmsnorm picked", Check.F32Bound, (dev, rng) => Audit(dev, rng, picked: true));

    static (double, string) Audit(Device dev, Random rng, bool picked)
    {
        int rows = Check.Size(rng, 9), dim = Check.Size(rng, 5000), table = picked ? Check.Size(rng, 4) : 1;
        var wt = Check.FloatType(rng);
        var x = Check.Values(rng, (long)rows * dim, 3f);
        var w = Check.Rounded(Check.Values(rng, (long)table * dim), wt);
        var pick = picked ? Enumerable.Range(0, rows).Select(_ => rng.Next(table)).ToArray() : null;
        using var tx = Tensor.From(x, [rows, dim], dev);
        using var tw = picked ? Tensor.From(w, [table, dim], dev, wt) : Tensor.From(w, [dim], dev, wt);
        using var tp = pick != null ? Tensor.From(pick, [rows], dev) : null;
        using var ty = Check.Poisoned([rows, dim], DType.F32, dev);
        Run(tx, tw, ty, 1e-5f, tp);
        var want = new float[x.Length];
        Twin(x, w, want, rows, dim, 1e-5f, pick);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {dim}] w {wt}{(picked ? $" table of {table}" : "")}");
    }
}

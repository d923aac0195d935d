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

    const int Threads = 256;

    /// <summary>One group per row: each thread sums squares over a strided slice (coalesced), the group
    /// reduces, then each thread scales its slice.</summary>
    static void Kernel(ArrayView<float> x, ArrayView<ushort> w, int wCode, ArrayView<float> y, int dim, float eps, ArrayView<int> pick, int picked)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        long row = (long)Grid.IdxX * dim;
        long wRow = picked != 0 ? (long)pick[Grid.IdxX] * dim : 0;
        float ss = 0;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            float v = x[row + i];
            ss += v * v;
        }
        ss = Reduce.GroupSum(ss, scratch);
        float inv = 1f / MathF.Sqrt(ss / dim + eps);
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
            y[row + i] = Elem.Load(w, wRow + i, wCode) * (x[row + i] * inv);
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
            new KernelConfig(rows, Threads), x.View<float>(), Elem.View(w), Elem.Code(w.DType), y.View<float>(), dim, eps,
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

using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Row-wise argmax over the last dimension to I32 [rows], as torch.argmax(x, dim=-1) (greedy decoding in
/// Hugging Face's generate): ties go to the lowest index, and NaN counts as the largest value (torch's
/// max propagates NaN, so the first NaN of a row is its argmax).
/// </summary>
public static class Argmax
{
    /// <summary>Whether (a, ia) beats (b, ib); an index of −1 is "nothing yet".</summary>
    static bool Better(float a, int ia, float b, int ib)
    {
        if (ia < 0) return false;
        if (ib < 0) return true;
        bool an = float.IsNaN(a), bn = float.IsNaN(b);
        if (an || bn) return an && (!bn || ia < ib);
        return a > b || (a == b && ia < ib);
    }

    public static void Twin(ReadOnlySpan<float> x, Span<int> idx, int rows, int n)
    {
        for (int r = 0; r < rows; r++)
        {
            int best = -1;
            for (int i = 0; i < n; i++)
                if (best < 0 || Better(x[r * n + i], i, x[r * n + best], best)) best = i;
            idx[r] = best;
        }
    }

    /// <summary>One group per row: each thread scans a strided slice (coalesced), then (value, index) pairs
    /// are reduced by warp shuffles and across warps through shared memory.</summary>
    static void Kernel(ArrayView<float> x, ArrayView<int> idx, int n)
    {
        var values = SharedMemory.Allocate<float>(32);
        var indices = SharedMemory.Allocate<int>(32);
        long row = (long)Grid.IdxX * n;
        float bv = float.NegativeInfinity;
        int bi = -1;
        for (int i = Group.IdxX; i < n; i += Group.DimX)
        {
            float v = x[row + i];
            if (Better(v, i, bv, bi)) { bv = v; bi = i; }
        }
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2)
        {
            float ov = Warp.ShuffleDown(bv, o);
            int oi = Warp.ShuffleDown(bi, o);
            if (Better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        if (Warp.LaneIdx == 0)
        {
            values[Warp.WarpIdx] = bv;
            indices[Warp.WarpIdx] = bi;
        }
        Group.Barrier();
        if (Warp.WarpIdx == 0)
        {
            int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
            bv = Warp.LaneIdx < warps ? values[Warp.LaneIdx] : float.NegativeInfinity;
            bi = Warp.LaneIdx < warps ? indices[Warp.LaneIdx] : -1;
            for (int o = Warp.WarpSize / 2; o > 0; o /= 2)
            {
                float ov = Warp.ShuffleDown(bv, o);
                int oi = Warp.ShuffleDown(bi, o);
                if (Better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
            }
            if (Warp.LaneIdx == 0) idx[Grid.IdxX] = bi;
        }
    }

    /// <summary>idx[r] = argmax of row r of x (f32 [rows, n], n ≥ 1); idx is I32 [rows].</summary>
    public static void Run(Tensor x, Tensor idx)
    {
        Need.SameDevice(x, idx);
        Need.F32("argmax x", x);
        if (idx.DType != DType.I32) throw new ArgumentException($"argmax idx: expected I32, got {idx}");
        int n = x.Rank == 0 ? 1 : x.Dim(-1);
        if (n == 0) throw new ArgumentException($"argmax of empty rows: {x}");
        int rows = (int)(x.ElementCount / n);
        Need.Count("argmax idx", idx, rows);
        if (rows == 0) return;
        if (!idx.Device.IsIlgpu)
        {
            Twin(x.Host<float>(), idx.Host<int>(), rows, n);
            return;
        }
        idx.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, int>>(Kernel)(
            new KernelConfig(rows, Softmax.GroupSize(n, idx.Device)), x.View<float>(), idx.View<int>(), n);
    }

    /// <summary>Random rows, often with the maximum repeated (ties) and sometimes a NaN; the result is
    /// an index, so it must equal the twin's exactly (error 0, else +∞).</summary>
    public static AuditCase Case => new("argmax", 0, (dev, rng) =>
    {
        int rows = Check.Size(rng, 9), n = Check.Size(rng, 5000);
        var x = Check.Values(rng, (long)rows * n, 8f);
        int mode = rng.Next(4);
        for (int r = 0; r < rows; r++)
        {
            var xr = x.AsSpan(r * n, n);
            if (mode == 1)   // ties: copy the row's max to random later places
            {
                float m = float.NegativeInfinity;
                foreach (var v in xr) m = MathF.Max(m, v);
                for (int j = 0; j < 3; j++) xr[rng.Next(n)] = m;
            }
            else if (mode == 2) xr[rng.Next(n)] = float.NaN;
            else if (mode == 3)   // a coarse grid: many ties everywhere
                for (int i = 0; i < n; i++) xr[i] = MathF.Round(xr[i]);
        }
        using var tx = Tensor.From(x, [rows, n], dev);
        using var ti = Tensor.Empty([rows], DType.I32, dev);
        ti.Fill(Check.Poison);
        Run(tx, ti);
        var want = new int[rows];
        Twin(x, want, rows, n);
        return (ti.ToArray<int>().SequenceEqual(want) ? 0 : double.PositiveInfinity, $"[{rows}, {n}]{(mode == 1 ? " ties" : mode == 2 ? " NaN" : mode == 3 ? " grid" : "")}");
    });
}

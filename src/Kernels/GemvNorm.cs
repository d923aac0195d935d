using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// One decode row's RMSNorm fused into the linears that read its output, in one launch: h = x / sqrt(mean(x²) + eps) · g
/// (RmsNorm.cs), then y_m = h·(W_m + α_m·S_m)ᵀ for one to three linears (Llama's q, k and v), or, for the MLP's pair,
/// y = silu(h·(W_g + α·S_g)ᵀ) · h·(W_u + α·S_u)ᵀ (SwiGLU, Shazeer 2020) with both rows of an output read by one warp.
/// Issue 9 asks for exactly these fusions (RMSNorm into the next matmul, QKV as one matmul, SwiGLU fused) and fewer
/// launches a token: a 7B decode step of one sequence was 389 launches, 12 a layer, and the norms alone took 65 of them at
/// ~7.5 µs each (bench/RESULTS.md, "A decode step, kernel by kernel"), most of it the gap a launch leaves.
///
/// The kernel is GemvOne's (one warp an output row, 16-byte loads of W issued a batch ahead, no shared memory, no
/// barrier; GemvOne.cs), with two additions a lane does from the x it loads anyway: Σx² over its chunks, and x·g. Every
/// warp walks the whole of x, so each finds mean(x²) itself with one more warp sum, and h is never written:
/// y = inv·Σ_i (W + α·S)_i·(x_i·g_i), inv = 1/sqrt(Σx²/in + eps). Against the norm then the linear this moves inv out
/// of the sum, a change of rounding only (the twin composes RmsNorm's and GemvOne's specs; the audit measures against
/// Σ|h·w| as GemvOne's does). Two versions that made h once a block in shared memory and ran GemvOne's own loop over it
/// took fewer registers (82, then 56, against 110) and were slower (bench/NOTES.md).
///
/// The model takes it for rows of the base alone (the plain model, a pool's base rows, the head): with a tenant's
/// signs the fused launch was no faster than the separate ones on the H200 (the fold makes the loop issue-bound), so a
/// tenant's row keeps GemvOne's launches. The tenant path stays, tested, for that comparison.
/// </summary>
public static class GemvNorm
{
    /// <summary>Take the fused form where it applies (the bench turns it off to compare).</summary>
    public static bool Use { get; set; } = true;

    const int Warps = 4;

    /// <summary>One linear of a fused call: W f16 or bf16 [out, in]; with a tenant its signs, Sign1 [capacity, out, in]
    /// (or [out, in] for slot 0), and its scales F32 [capacity].</summary>
    public readonly record struct Linear(Tensor W, Tensor? Signs, Tensor? Scales);

    /// <summary>The spec: h = RmsNorm.Twin(x, g), then each linear's y = GemvOne.Twin(h, W_m, S_m, α_m); with
    /// <paramref name="swiGlu"/> two linears and y = silu(y_0)·y_1 into <paramref name="ys"/>[0].</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> g, float eps, float[][] ws, uint[]?[] signs, float[] alphas,
                            bool swiGlu, float[][] ys, int inDim)
    {
        var h = new float[inDim];
        if (g.IsEmpty) x[..inDim].CopyTo(h);   // x already normed (a tenant's call without norm weights)
        else RmsNorm.Twin(x, g, h, 1, inDim, eps);
        var outs = new float[ws.Length][];
        for (int m = 0; m < ws.Length; m++)
        {
            int outDim = ws[m].Length / inDim;
            outs[m] = new float[outDim];
            GemvOne.Twin(h, ws[m], signs[m] ?? [], alphas[m], outs[m], inDim, outDim, false);
        }
        if (!swiGlu)
        {
            for (int m = 0; m < ws.Length; m++) outs[m].CopyTo(ys[m], 0);
            return;
        }
        SwiGlu.Twin(outs[0], outs[1], ys[0]);
    }

    /// <summary>Whether the kernel takes x (one row, f32) through norm weights g (F32 [in]) and the linears: W f16 or
    /// bf16, one type, [*, in] with in a multiple of 8, every view 16-byte aligned, on an ILGPU device. Without g
    /// (null) x is already the norm's output h, and only a tenant's call takes it (<see cref="TenantPlainKernel"/>).</summary>
    public static bool Takes(Tensor x, Tensor? g, params Tensor[] ws) =>
        Use && GemvOne.Use && x.Device.IsIlgpu && x.DType == DType.F32 && ws.Length is >= 1 and <= 3
        && ws.All(w => w.DType == ws[0].DType && w.Rank == 2 && w.Dim(1) == ws[0].Dim(1) && GemvOne.Takes(x, w))
        && (g == null || (g.DType == DType.F32 && g.ElementCount == ws[0].Dim(1) && Aligned16(g)));

    /// <summary>Up to three linears' views and outputs, one kernel parameter (ILGPU takes at most 15). A linear's signs
    /// and scale are views that start at its slot (row o's words at o·words, α at [0]); without a tenant, stand-ins.</summary>
    public struct Parts
    {
        public ArrayView<Vec16> W0, W1, W2;
        public ArrayView<uint> S0, S1, S2;
        public ArrayView<float> A0, A1, A2;
        public ArrayView<float> Y0, Y1, Y2;
        public int Out0, Out1, Out2;
    }

    /// <summary>ys[m] = rmsnorm(x; g, eps)·(W_m + α_m·S_m)ᵀ for each linear (1–3), α·S where <paramref name="slot"/> ≥ 0
    /// (each linear then brings its signs and scales). One launch. The caller checked <see cref="Takes"/>.</summary>
    public static void Run(Tensor x, Tensor? g, float eps, Linear[] linears, int slot, Tensor[] ys)
    {
        if (linears.Length != ys.Length) throw new ArgumentException("gemv norm: one output a linear");
        for (int m = 0; m < ys.Length; m++) Need.Count("gemv norm y", ys[m], linears[m].W.Dim(0));
        Launch(x, g, eps, linears, slot, ys, swiGlu: false);
    }

    /// <summary>y = silu(h·(W_g + α_g·S_g)ᵀ)·(h·(W_u + α_u·S_u)ᵀ), h = rmsnorm(x; g, eps): the MLP's input to its down
    /// projection in one launch (gate, up and SwiGLU). The caller checked <see cref="Takes"/>.</summary>
    public static void RunSwiGlu(Tensor x, Tensor? g, float eps, Linear gate, Linear up, int slot, Tensor y)
    {
        if (gate.W.Dim(0) != up.W.Dim(0)) throw new ArgumentException($"gemv norm: gate {gate.W} and up {up.W} differ in outputs");
        Need.Count("gemv norm y", y, gate.W.Dim(0));
        Launch(x, g, eps, [gate, up], slot, [y, y], swiGlu: true);
    }

    static void Launch(Tensor x, Tensor? g, float eps, Linear[] linears, int slot, Tensor[] ys, bool swiGlu)
    {
        int inDim = linears[0].W.Dim(1);
        bool tenant = slot >= 0;
        if (g == null && !tenant) throw new ArgumentException("gemv norm: without norm weights only a tenant's call (a base row takes its norm inside)");
        var p = new Parts();
        for (int m = 0; m < 3; m++)
        {
            var l = linears[Math.Min(m, linears.Length - 1)];
            int outDim = m < linears.Length ? l.W.Dim(0) : 0;
            var w = l.W.View<Vec16>();
            ArrayView<uint> s = l.W.View<uint>();   // no tenant: W stands in for the signs and scales, never read
            ArrayView<float> a = ys[0].View<float>();
            if (tenant)
            {
                if (l.Signs == null || l.Scales == null) throw new ArgumentException("gemv norm: a tenant's call needs every linear's signs and scales");
                long words = (long)l.W.Dim(0) * DTypes.SignWordsPerRow(inDim);
                s = l.Signs.View<uint>().SubView(slot * words, words);
                a = l.Scales.View<float>().SubView(slot, 1);
            }
            var y = ys[Math.Min(m, ys.Length - 1)].View<float>();
            switch (m)
            {
                case 0: p.W0 = w; p.S0 = s; p.A0 = a; p.Y0 = y; p.Out0 = outDim; break;
                case 1: p.W1 = w; p.S1 = s; p.A1 = a; p.Y1 = y; p.Out1 = outDim; break;
                default: p.W2 = w; p.S2 = s; p.A2 = a; p.Y2 = y; p.Out2 = outDim; break;
            }
        }
        int warps = swiGlu ? p.Out0 : p.Out0 + p.Out1 + p.Out2;
        if (warps == 0) return;
        x.Device.GroupedKernel<Action<KernelConfig, Parts, ArrayView<Vec16>, ArrayView<Vec16>, float, int, int, int>>(
            g == null ? TenantPlainKernel : tenant ? TenantKernel : Kernel)(
            new KernelConfig((warps + Warps - 1) / Warps, Warps * 32), p, x.View<Vec16>(), (g ?? x).View<Vec16>(), eps, inDim,
            Elem.Code(linears[0].W.DType), swiGlu ? 1 : 0);
    }

    /// <summary>Rows of the base alone: a kernel of its own, so the tenant loops' registers do not count against it.</summary>
    static void Kernel(Parts p, ArrayView<Vec16> x16, ArrayView<Vec16> g16, float eps, int inDim, int code, int swiGlu) =>
        Body(p, x16, g16, eps, inDim, code, false, swiGlu, true);

    /// <summary>A tenant's row: each linear's α·S folded into its weights.</summary>
    static void TenantKernel(Parts p, ArrayView<Vec16> x16, ArrayView<Vec16> g16, float eps, int inDim, int code, int swiGlu) =>
        Body(p, x16, g16, eps, inDim, code, true, swiGlu, true);

    /// <summary>A tenant's row already normed (x is h; g16 a stand-in, never read): the linears' launches in one, without
    /// the norm's work in every warp, which with the fold made the fused tenant loop issue-bound (bench/NOTES.md).</summary>
    static void TenantPlainKernel(Parts p, ArrayView<Vec16> x16, ArrayView<Vec16> g16, float eps, int inDim, int code, int swiGlu) =>
        Body(p, x16, g16, eps, inDim, code, true, swiGlu, false);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Body(Parts p, ArrayView<Vec16> x16, ArrayView<Vec16> g16, float eps, int inDim, int code, bool t, int swiGlu, bool norm)
    {
        GridDependency.Release();   // the next kernel's blocks may start theirs as ours finish (DependentLaunch.cs)
        int o = Grid.IdxX * Warps + Warp.WarpIdx;
        if (o >= (swiGlu != 0 ? p.Out0 : p.Out0 + p.Out1 + p.Out2)) return;   // the whole warp leaves together
        int lane = Warp.LaneIdx;
        var x = x16.AsAligned(16);
        var g = g16.AsAligned(16);
        int chunks = inDim / 8, words = DTypes.SignWordsPerRow(inDim);
        bool bf = code == Elem.BF16;
        Sums s;
        var y = p.Y0;
        if (swiGlu != 0)
        {
            long row = (long)o * chunks, signRow = (long)o * words;
            GridDependency.Wait();   // x is the kernel ahead's: wait for its end (DependentLaunch.cs)
            float a0 = t ? p.A0[0] : 0f, a1 = t ? p.A1[0] : 0f;
            var w0 = p.W0.AsAligned(16);
            var w1 = p.W1.AsAligned(16);
            // each (type, tenant) its own copy of the loop, all constant inside it (GemvOne.cs has why)
            s = bf ? (t ? Pair(w0, w1, true, p.S0, p.S1, a0, a1, true, x, g, row, signRow, chunks, lane, norm)
                        : Pair(w0, w1, true, p.S0, p.S1, 0f, 0f, false, x, g, row, signRow, chunks, lane, norm))
                   : (t ? Pair(w0, w1, false, p.S0, p.S1, a0, a1, true, x, g, row, signRow, chunks, lane, norm)
                        : Pair(w0, w1, false, p.S0, p.S1, 0f, 0f, false, x, g, row, signRow, chunks, lane, norm));
        }
        else
        {
            // which linear this warp's output belongs to: the same for all its lanes
            int m = o < p.Out0 ? 0 : o < p.Out0 + p.Out1 ? 1 : 2;
            int r = m == 0 ? o : m == 1 ? o - p.Out0 : o - p.Out0 - p.Out1;
            var w = (m == 0 ? p.W0 : m == 1 ? p.W1 : p.W2).AsAligned(16);
            var signs = m == 0 ? p.S0 : m == 1 ? p.S1 : p.S2;
            float alpha = t ? (m == 0 ? p.A0 : m == 1 ? p.A1 : p.A2)[0] : 0f;
            long row = (long)r * chunks, signRow = (long)r * words;
            GridDependency.Wait();
            s = bf ? (t ? One(w, true, signs, alpha, true, x, g, row, signRow, chunks, lane, norm) : One(w, true, signs, 0f, false, x, g, row, signRow, chunks, lane, norm))
                   : (t ? One(w, false, signs, alpha, true, x, g, row, signRow, chunks, lane, norm) : One(w, false, signs, 0f, false, x, g, row, signRow, chunks, lane, norm));
            o = r;
            y = m == 0 ? p.Y0 : m == 1 ? p.Y1 : p.Y2;
        }
        float d0 = WarpTotal(s.D0), d1 = WarpTotal(s.D1), ss = WarpTotal(s.Ss);
        if (lane != 0) return;
        float inv = norm ? 1f / MathF.Sqrt(ss / inDim + eps) : 1f;   // as RmsNorm's kernel forms it
        float y0 = d0 * inv;
        if (swiGlu != 0)
        {
            float u = d1 * inv;
            y0 = y0 / (1f + MathF.Exp(-y0)) * u;
        }
        y[o] = y0;
    }

    /// <summary>A lane's sums: one or two outputs' dot products with x·g, and Σx² over its chunks.</summary>
    struct Sums
    {
        public float D0, D1, Ss;
    }

    /// <summary>x·g of a chunk's 8 inputs, and their Σx² (0 past the row's end).</summary>
    struct Scaled
    {
        public W8 H;
        public float Ss;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Scaled Load(ArrayView<Vec16> x, ArrayView<Vec16> g, int k, bool valid, bool norm)
    {
        Vec16 xa = x[2L * k], xb = x[2L * k + 1];
        float x0 = Interop.IntAsFloat(xa.X), x1 = Interop.IntAsFloat(xa.Y), x2 = Interop.IntAsFloat(xa.Z), x3 = Interop.IntAsFloat(xa.W);
        float x4 = Interop.IntAsFloat(xb.X), x5 = Interop.IntAsFloat(xb.Y), x6 = Interop.IntAsFloat(xb.Z), x7 = Interop.IntAsFloat(xb.W);
        Scaled c;
        if (!norm)
        {
            // x is h already: no norm weights read, no Σx²
            c.H.A0 = x0; c.H.A1 = x1; c.H.A2 = x2; c.H.A3 = x3; c.H.A4 = x4; c.H.A5 = x5; c.H.A6 = x6; c.H.A7 = x7;
            c.Ss = 0f;
            return c;
        }
        Vec16 ga = g[2L * k], gb = g[2L * k + 1];
        c.H.A0 = x0 * Interop.IntAsFloat(ga.X); c.H.A1 = x1 * Interop.IntAsFloat(ga.Y);
        c.H.A2 = x2 * Interop.IntAsFloat(ga.Z); c.H.A3 = x3 * Interop.IntAsFloat(ga.W);
        c.H.A4 = x4 * Interop.IntAsFloat(gb.X); c.H.A5 = x5 * Interop.IntAsFloat(gb.Y);
        c.H.A6 = x6 * Interop.IntAsFloat(gb.Z); c.H.A7 = x7 * Interop.IntAsFloat(gb.W);
        float ss = (x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3) + (x4 * x4 + x5 * x5) + (x6 * x6 + x7 * x7);
        c.Ss = valid ? ss : 0f;
        return c;
    }

    /// <summary>Chunk k's 8 weights, α·S folded in when <paramref name="tenant"/>, times h; 0 past the row's end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Dot(Vec16 q, bool bf16, uint word, int k, float alpha, bool tenant, W8 h, bool valid)
    {
        var w = GemvOne.Weights8(q, bf16);
        if (tenant) w = GemvOne.Fold(w, word, k, alpha);
        float d = w.A0 * h.A0;
        d += w.A1 * h.A1; d += w.A2 * h.A2; d += w.A3 * h.A3;
        d += w.A4 * h.A4; d += w.A5 * h.A5; d += w.A6 * h.A6; d += w.A7 * h.A7;
        return valid ? d : 0f;
    }

    /// <summary>One output row: 8 chunks of W (and their sign words) loaded before any is used, as GemvOne's loop;
    /// <paramref name="bf16"/> and <paramref name="tenant"/> constant at each call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Sums One(ArrayView<Vec16> w, bool bf16, ArrayView<uint> signs, float alpha, bool tenant, ArrayView<Vec16> x, ArrayView<Vec16> g,
                    long row, long signRow, int chunks, int lane, bool norm)
    {
        float a0 = 0f, a1 = 0f, s0 = 0f, s1 = 0f;
        int last = chunks - 1;
        for (int b = lane; b - lane < chunks; b += 32 * 8)
        {
            int c0 = b, c1 = b + 32, c2 = b + 64, c3 = b + 96, c4 = b + 128, c5 = b + 160, c6 = b + 192, c7 = b + 224;
            int k0 = Math.Min(c0, last), k1 = Math.Min(c1, last), k2 = Math.Min(c2, last), k3 = Math.Min(c3, last);
            int k4 = Math.Min(c4, last), k5 = Math.Min(c5, last), k6 = Math.Min(c6, last), k7 = Math.Min(c7, last);
            var q0 = w[row + k0]; var q1 = w[row + k1]; var q2 = w[row + k2]; var q3 = w[row + k3];
            var q4 = w[row + k4]; var q5 = w[row + k5]; var q6 = w[row + k6]; var q7 = w[row + k7];
            uint e0 = 0, e1 = 0, e2 = 0, e3 = 0, e4 = 0, e5 = 0, e6 = 0, e7 = 0;
            if (tenant)
            {
                e0 = signs[signRow + (k0 >> 2)]; e1 = signs[signRow + (k1 >> 2)]; e2 = signs[signRow + (k2 >> 2)]; e3 = signs[signRow + (k3 >> 2)];
                e4 = signs[signRow + (k4 >> 2)]; e5 = signs[signRow + (k5 >> 2)]; e6 = signs[signRow + (k6 >> 2)]; e7 = signs[signRow + (k7 >> 2)];
            }
            var h0 = Load(x, g, k0, c0 <= last, norm); a0 += Dot(q0, bf16, e0, k0, alpha, tenant, h0.H, c0 <= last); s0 += h0.Ss;
            var h1 = Load(x, g, k1, c1 <= last, norm); a1 += Dot(q1, bf16, e1, k1, alpha, tenant, h1.H, c1 <= last); s1 += h1.Ss;
            var h2 = Load(x, g, k2, c2 <= last, norm); a0 += Dot(q2, bf16, e2, k2, alpha, tenant, h2.H, c2 <= last); s0 += h2.Ss;
            var h3 = Load(x, g, k3, c3 <= last, norm); a1 += Dot(q3, bf16, e3, k3, alpha, tenant, h3.H, c3 <= last); s1 += h3.Ss;
            var h4 = Load(x, g, k4, c4 <= last, norm); a0 += Dot(q4, bf16, e4, k4, alpha, tenant, h4.H, c4 <= last); s0 += h4.Ss;
            var h5 = Load(x, g, k5, c5 <= last, norm); a1 += Dot(q5, bf16, e5, k5, alpha, tenant, h5.H, c5 <= last); s1 += h5.Ss;
            var h6 = Load(x, g, k6, c6 <= last, norm); a0 += Dot(q6, bf16, e6, k6, alpha, tenant, h6.H, c6 <= last); s0 += h6.Ss;
            var h7 = Load(x, g, k7, c7 <= last, norm); a1 += Dot(q7, bf16, e7, k7, alpha, tenant, h7.H, c7 <= last); s1 += h7.Ss;
        }
        Sums s;
        s.D0 = a0 + a1; s.D1 = 0f; s.Ss = s0 + s1;
        return s;
    }

    /// <summary>Output row o of the gate and the up linear: 4 chunks of each loaded before any is used (8 loads in
    /// flight, as <see cref="One"/>), x·g made once a chunk for both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Sums Pair(ArrayView<Vec16> w0, ArrayView<Vec16> w1, bool bf16, ArrayView<uint> signs0, ArrayView<uint> signs1, float alpha0, float alpha1,
                     bool tenant, ArrayView<Vec16> x, ArrayView<Vec16> g, long row, long signRow, int chunks, int lane, bool norm)
    {
        float a0 = 0f, a1 = 0f, s0 = 0f;
        int last = chunks - 1;
        for (int b = lane; b - lane < chunks; b += 32 * 4)
        {
            int c0 = b, c1 = b + 32, c2 = b + 64, c3 = b + 96;
            int k0 = Math.Min(c0, last), k1 = Math.Min(c1, last), k2 = Math.Min(c2, last), k3 = Math.Min(c3, last);
            var p0 = w0[row + k0]; var p1 = w0[row + k1]; var p2 = w0[row + k2]; var p3 = w0[row + k3];
            var q0 = w1[row + k0]; var q1 = w1[row + k1]; var q2 = w1[row + k2]; var q3 = w1[row + k3];
            uint e0 = 0, e1 = 0, e2 = 0, e3 = 0, f0 = 0, f1 = 0, f2 = 0, f3 = 0;
            if (tenant)
            {
                e0 = signs0[signRow + (k0 >> 2)]; e1 = signs0[signRow + (k1 >> 2)]; e2 = signs0[signRow + (k2 >> 2)]; e3 = signs0[signRow + (k3 >> 2)];
                f0 = signs1[signRow + (k0 >> 2)]; f1 = signs1[signRow + (k1 >> 2)]; f2 = signs1[signRow + (k2 >> 2)]; f3 = signs1[signRow + (k3 >> 2)];
            }
            var h0 = Load(x, g, k0, c0 <= last, norm);
            a0 += Dot(p0, bf16, e0, k0, alpha0, tenant, h0.H, c0 <= last); a1 += Dot(q0, bf16, f0, k0, alpha1, tenant, h0.H, c0 <= last); s0 += h0.Ss;
            var h1 = Load(x, g, k1, c1 <= last, norm);
            a0 += Dot(p1, bf16, e1, k1, alpha0, tenant, h1.H, c1 <= last); a1 += Dot(q1, bf16, f1, k1, alpha1, tenant, h1.H, c1 <= last); s0 += h1.Ss;
            var h2 = Load(x, g, k2, c2 <= last, norm);
            a0 += Dot(p2, bf16, e2, k2, alpha0, tenant, h2.H, c2 <= last); a1 += Dot(q2, bf16, f2, k2, alpha1, tenant, h2.H, c2 <= last); s0 += h2.Ss;
            var h3 = Load(x, g, k3, c3 <= last, norm);
            a0 += Dot(p3, bf16, e3, k3, alpha0, tenant, h3.H, c3 <= last); a1 += Dot(q3, bf16, f3, k3, alpha1, tenant, h3.H, c3 <= last); s0 += h3.Ss;
        }
        Sums s;
        s.D0 = a0; s.D1 = a1; s.Ss = s0;
        return s;
    }

    // ---- audit ----

    /// <summary>One row, in a multiple of 8 up to 8·600 (ragged against the batch of 8·256 inputs); 1–3 linears of up to
    /// 70 outputs each, or a gate/up pair through SwiGLU; f16 or bf16; with a tenant (slot 0–2 of a 3-slot pool, half the
    /// time on an x already normed, without norm weights) or without. Error against Σ|h·w| of each output (<see cref="Check.ErrorOfDots"/>); through SwiGLU that magnitude is
    /// carried as its derivative carries an error: |silu'(a)|·|u|·M_a + |silu(a)|·M_u.</summary>
    public static AuditCase Case => new("gemv norm", Check.F32Bound, (dev, rng) =>
    {
        var wt = rng.Next(2) == 0 ? DType.F16 : DType.BF16;
        int inDim = 8 * Check.Size(rng, 600), capacity = 3, words = DTypes.SignWordsPerRow(inDim);
        bool swiGlu = rng.Next(3) == 0, tenant = rng.Next(3) > 0;
        int count = swiGlu ? 2 : 1 + rng.Next(3), slot = tenant ? rng.Next(capacity) : -1;
        bool norm = !tenant || rng.Next(2) == 0;   // a tenant's call also without norm weights (x is h: TenantPlainKernel)
        var outs = Enumerable.Range(0, count).Select(_ => Check.Size(rng, 70)).ToArray();
        if (swiGlu) outs[1] = outs[0];
        float eps = 1e-5f;
        var x = Check.Values(rng, inDim, 2f);
        var g = Check.Values(rng, inDim, 1.5f);
        var ws = outs.Select(n => Check.Rounded(Check.Values(rng, (long)n * inDim), wt)).ToArray();
        var signs = outs.Select(n => Check.Signs(rng, capacity * n, inDim)).ToArray();
        var scales = outs.Select(_ => Enumerable.Range(0, capacity).Select(_ => Check.Value(rng, 0.05f)).ToArray()).ToArray();
        var ys = Enumerable.Range(0, swiGlu ? 1 : count).Select(m => new float[outs[m]]).ToArray();
        using var tx = Tensor.From(x, [1, inDim], dev);
        using var tg = Tensor.From(g, [inDim], dev);
        var tensors = new List<Tensor>();
        Tensor Keep(Tensor t) { tensors.Add(t); return t; }
        try
        {
            var linears = Enumerable.Range(0, count).Select(m => new Linear(Keep(Tensor.From(ws[m], [outs[m], inDim], dev, wt)),
                Keep(Tensor.From(signs[m], [capacity, outs[m], inDim], dev)), Keep(Tensor.From(scales[m], [capacity], dev)))).ToArray();
            var tys = ys.Select(y => Keep(Check.Poisoned([y.Length], DType.F32, dev))).ToArray();
            var gi = norm ? tg : null;
            if (!Takes(tx, gi, linears.Select(l => l.W).ToArray()))
                throw new InvalidOperationException($"gemv norm: the kernel did not take [1, {inDim}] through {count} linears of {wt} on {dev}");
            if (swiGlu) RunSwiGlu(tx, gi, eps, linears[0], linears[1], slot, tys[0]);
            else Run(tx, gi, eps, linears, slot, tys);
            var own = Enumerable.Range(0, count).Select(m => tenant ? signs[m].AsSpan(slot * outs[m] * words, outs[m] * words).ToArray() : null).ToArray();
            var alphas = Enumerable.Range(0, count).Select(m => tenant ? scales[m][slot] : 0f).ToArray();
            Twin(x, norm ? g : [], eps, ws, own, alphas, swiGlu, ys, inDim);
            // each output's Σ|h·(w + α·s)| and, through SwiGLU, the linears' own values
            var h = new float[inDim];
            if (norm) RmsNorm.Twin(x, g, h, 1, inDim, eps);
            else x.CopyTo(h, 0);
            var mags = new double[count][];
            var plain = new float[count][];
            for (int m = 0; m < count; m++)
            {
                mags[m] = new double[outs[m]];
                plain[m] = new float[outs[m]];
                GemvOne.Twin(h, ws[m], own[m] ?? [], alphas[m], plain[m], inDim, outs[m], false);
                for (int o = 0; o < outs[m]; o++)
                    for (int i = 0; i < inDim; i++)
                        mags[m][o] += Math.Abs((double)h[i] * (ws[m][o * inDim + i] + (tenant ? alphas[m] * BitLinear.Sign(own[m], words, o, i) : 0f)));
            }
            var got = tys.SelectMany(t => t.ToFloatArray()).ToArray();
            var want = ys.SelectMany(y => y).ToArray();
            double[] magnitude;
            if (!swiGlu) magnitude = mags.SelectMany(v => v).ToArray();
            else
            {
                magnitude = new double[outs[0]];
                for (int o = 0; o < outs[0]; o++)
                {
                    double a = plain[0][o], u = plain[1][o], sig = 1 / (1 + Math.Exp(-a));
                    double silu = a * sig, dsilu = sig * (1 + a * (1 - sig));
                    magnitude[o] = Math.Abs(dsilu) * Math.Abs(u) * mags[0][o] + Math.Abs(silu) * mags[1][o];
                }
            }
            return (Check.ErrorOfDots(got, want, magnitude),
                    $"{(norm ? "rmsnorm " : "normed ")}[1, {inDim}] → {(swiGlu ? "swiglu " : "")}[{string.Join(", ", outs)}] w {wt}{(tenant ? $" + α·S slot {slot}" : "")}");
        }
        finally
        {
            foreach (var t in tensors) t.Dispose();
        }
    });
}

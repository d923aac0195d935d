using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// y = x·Wᵀ (or y += x·Wᵀ), the linear layer of a Hugging Face checkpoint: W is stored row-major
/// [out, in] (nn.Linear's weight) in f16, bf16 or f32; x is f32 [rows, in]; y is f32 [rows, out];
/// products are accumulated in f32.
///
/// Two kernels, picked by the number of rows:
/// - GEMV (rows ≤ <see cref="GemvMaxRows"/>, decode): memory-bound, so W is streamed once for all rows,
///   one warp per output row, each lane reading 16 bytes of W at a time.
/// - GEMM (prefill): 64×64 output tiles through shared memory, a 4×4 register micro-tile per thread,
///   fp32 FMA (tensor cores come later).
/// On the managed CPU device both go to <see cref="Host"/> (MatMulHost.cs): SIMD, all cores, checked
/// against <see cref="Twin"/> like the kernels.
/// </summary>
public static partial class MatMul
{
    /// <summary>The spec: f64 accumulation, one output at a time.</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int rows, int inDim, int outDim, bool accumulate = false)
    {
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * inDim, inDim);
            for (int o = 0; o < outDim; o++)
            {
                var wo = w.Slice(o * inDim, inDim);
                double s = accumulate ? y[r * outDim + o] : 0;
                for (int i = 0; i < inDim; i++) s += (double)xr[i] * wo[i];
                y[r * outDim + o] = (float)s;
            }
        }
    }

    /// <summary>
    /// Up to this many rows go to the GEMV. Per 16-byte f16 chunk of W (8 weights) a lane reads 32 bytes
    /// of x per row from L1, so x traffic is 2·rows times the W traffic: at 8 rows the L1 carries 16× the
    /// DRAM stream, about where L1 bandwidth (~128 B/clock/SM) and not DRAM becomes the limit. The GEMM
    /// at 8 rows still fills 64-row tiles with 56 rows of padding and does 8× the useful FMAs, so up to 8
    /// the GEMV should stay ahead. To be checked on the H100 (bench gemv --rows 8 against the GEMM).
    /// </summary>
    public const int GemvMaxRows = 8;

    /// <summary>
    /// Up to this many rows, <see cref="Run"/> runs the GEMV over chunks of <see cref="GemvMaxRows"/> rows (W read
    /// once per chunk) instead of the GEMM. Measured on the H100 (bench/RESULTS.md, 2026-11-24): a 7B decode step
    /// at batch 16 took 246 ms through the GEMM, whose 64-row tiles leave 48 of 64 rows idle and give only
    /// out/64 groups; an 8-row GEMV pass over 11008×4096 takes 128 µs. Predicted: batch-16 steps ≈ 2 GEMV passes,
    /// about 4× faster. On CUDA, where the tenant linear's base form applies (f16 W, in a multiple of 64, out of 16), it
    /// takes 1–32 rows instead and reads W once (<see cref="TenantLinear.TryBase"/>; the lm_head of a 32-row decode step
    /// went from 4 × 330 µs to ~240 µs on the H200; 1–3 rows in the streamed form's one launch).
    /// </summary>
    public const int ChunkedGemvMaxRows = 32;

    /// <summary>y = x·Wᵀ, or y += x·Wᵀ when <paramref name="accumulate"/>. W is [out, in]; x has in
    /// as its last dimension and any number of rows; y holds rows·out f32 with out last.</summary>
    public static void Run(Tensor x, Tensor w, Tensor y, bool accumulate = false)
    {
        var (rows, inDim, outDim) = Shapes(x, w, y);
        if (rows == 1 && GemvOne.Takes(x, w))
        {
            GemvOne.Run(x, w, null, null, -1, y, accumulate);
            return;
        }
        if (GemvOne.TakesFew(x, w, rows))
        {
            GemvOne.RunFew(x, w, null, null, null, y, accumulate);
            return;
        }
        if (rows >= 1 && rows <= ChunkedGemvMaxRows && y.Device.Kind == DeviceKind.Cuda)
        {
            // W read once for all rows, on tensor cores, where the form applies. CUDA only: on ILGPU's CPU accelerator its
            // emulated products are far slower than the GEMV, and its tests call it directly (MatMulMmaTests).
            using var xb = x.Reshape(rows, inDim);
            using var yb = y.Reshape(rows, outDim);
            if (TenantLinear.TryBase(xb, w, yb, accumulate)) return;
        }
        if (rows <= GemvMaxRows || rows > ChunkedGemvMaxRows || !y.Device.IsIlgpu)
        {
            Launch(x, w, y, accumulate, rows, inDim, outDim, gemv: rows <= GemvMaxRows);
            return;
        }
        using var x2 = x.Reshape(rows, inDim);
        using var y2 = y.Reshape(rows, outDim);
        for (int r = 0; r < rows; r += GemvMaxRows)
        {
            int n = Math.Min(GemvMaxRows, rows - r);
            using var xs = x2.Slice(r, n);
            using var ys = y2.Slice(r, n);
            Launch(xs, w, ys, accumulate, n, inDim, outDim, gemv: true);
        }
    }

    /// <summary>The GEMV path of <see cref="Run"/>, for tests and benchmarks (1 to <see cref="GemvMaxRows"/> rows).</summary>
    public static void Gemv(Tensor x, Tensor w, Tensor y, bool accumulate = false)
    {
        var (rows, inDim, outDim) = Shapes(x, w, y);
        if (rows > GemvMaxRows) throw new ArgumentException($"gemv: at most {GemvMaxRows} rows, got {x}");
        Launch(x, w, y, accumulate, rows, inDim, outDim, gemv: true);
    }

    /// <summary>The GEMM path of <see cref="Run"/>, for tests and benchmarks (any number of rows).</summary>
    public static void Gemm(Tensor x, Tensor w, Tensor y, bool accumulate = false)
    {
        var (rows, inDim, outDim) = Shapes(x, w, y);
        Launch(x, w, y, accumulate, rows, inDim, outDim, gemv: false);
    }

    static (int Rows, int In, int Out) Shapes(Tensor x, Tensor w, Tensor y)
    {
        Need.SameDevice(x, w, y);
        Need.F32("matmul x", x);
        Need.F32("matmul y", y);
        Need.Float("matmul weight", w);
        if (w.Rank != 2) throw new ArgumentException($"matmul weight: expected [out, in], got {w}");
        int outDim = w.Dim(0), inDim = w.Dim(1);
        if (x.Rank == 0 || x.Dim(-1) != inDim) throw new ArgumentException($"matmul x: expected last dimension {inDim} (weight {w}), got {x}");
        long rows = 1;   // the leading dimensions (this way in = 0 still has rows)
        for (int i = 0; i < x.Rank - 1; i++) rows *= x.Dim(i);
        if (y.Rank == 0 || y.Dim(-1) != outDim) throw new ArgumentException($"matmul y: expected last dimension {outDim} (weight {w}), got {y}");
        Need.Count("matmul y", y, rows * outDim);
        if (rows > int.MaxValue) throw new ArgumentException($"matmul x: too many rows in {x}");
        return ((int)rows, inDim, outDim);
    }

    static void Launch(Tensor x, Tensor w, Tensor y, bool accumulate, int rows, int inDim, int outDim, bool gemv)
    {
        if (rows == 0 || outDim == 0) return;
        if (!y.Device.IsIlgpu)
        {
            Host(x.Host<float>(), w.HostBytes, w.DType, y.Host<float>(), rows, inDim, outDim, accumulate);
            return;
        }
        int code = Elem.Code(w.DType);
        if (gemv)
        {
            bool vector = VectorPath(x, w, inDim);
            y.Device.GroupedKernel<Action<KernelConfig, ArrayView<ushort>, ArrayView<Vec16>, int, ArrayView<float>, ArrayView<Vec16>, ArrayView<float>, int, int, int, int, int>>(GemvKernel)(
                new KernelConfig((outDim + GemvWarps - 1) / GemvWarps, GemvWarps * 32),
                Elem.View(w), w.View<Vec16>(), code, x.View<float>(), x.View<Vec16>(), y.View<float>(),
                rows, inDim, outDim, accumulate ? 1 : 0, vector ? 1 : 0);
        }
        else
        {
            if (TakesMmaGemm(x, w, inDim))
            {
                GemmMma(x, w, y, accumulate, rows, inDim, outDim);
                return;
            }
            // No delta: slot −1, and y's storage stands in for the sign and scale views, which are then never read.
            GemmLaunch(x, w, y.View<uint>(), y.View<float>(), -1, y, accumulate, rows, inDim, outDim);
        }
    }

    /// <summary>The 16-byte path needs every row of W and x to start on a 16-byte boundary: in a multiple
    /// of 8 (f16/bf16) or 4 (f32), and both tensors' storage 16-byte aligned (a slice may not be).
    /// Every Llama shape qualifies (4096, 11008, 14336, 5120, 13824…).</summary>
    public static bool VectorPath(Tensor x, Tensor w, int inDim) =>
        inDim % (w.DType == DType.F32 ? 4 : 8) == 0 && Aligned16(x) && Aligned16(w);

    internal static bool Aligned16(Tensor t)
    {
        var v = t.View<byte>();
        long address = ((IArrayView)v).Buffer.NativePtr.ToInt64() + ((IContiguousArrayView)v).IndexInBytes;
        return address % 16 == 0;
    }

    // ---- GEMV ----

    /// <summary>16 bytes, read in one <c>ld.global.v4.b32</c> through a view marked <c>AsAligned(16)</c>
    /// (ILGPU-NOTES.md): 8 f16/bf16 weights, 4 f32 weights, or 4 f32 activations.</summary>
    public struct Vec16
    {
        public uint X, Y, Z, W;
    }

    /// <summary>One f32 accumulator per row of x (rows ≤ 8). Named fields, not an array, so they live
    /// in registers: a local array would go to local memory.</summary>
    internal struct Acc8
    {
        public float R0, R1, R2, R3, R4, R5, R6, R7;
    }

    internal struct W8
    {
        public float A0, A1, A2, A3, A4, A5, A6, A7;
    }

    const int GemvWarps = 4;

    /// <summary>16-byte chunks a lane requests before it uses any: 4 × 512 bytes in flight per warp.
    /// Little's law on the H100: 3 TB/s × ~0.7 µs latency ≈ 2 MB must be in flight, i.e. ~16 KB per SM;
    /// one warp per output row gives ~31 warps per SM at 4096 rows, so 4 loads each is ~60 KB.</summary>
    const int Unroll = 4;

    /// <summary>
    /// One warp per output row o (4 warps a group): lane l reads 16-byte chunks l, l+32, l+64… of W's
    /// row o (each warp request is 512 contiguous bytes, fully coalesced), converts them to f32 and
    /// multiplies them into every row of x, so W is read once whatever the number of rows. Each lane
    /// keeps one f32 partial per row of x; a warp shuffle tree sums them. <paramref name="vector"/> = 0
    /// is the plain path for ragged or unaligned shapes: 2-byte loads, still coalesced.
    /// </summary>
    static void GemvKernel(ArrayView<ushort> w, ArrayView<Vec16> w16, int code, ArrayView<float> x, ArrayView<Vec16> x16,
                           ArrayView<float> y, int rows, int inDim, int outDim, int accumulate, int vector)
    {
        int o = Grid.IdxX * GemvWarps + Warp.WarpIdx;
        if (o >= outDim) return;   // the whole warp leaves together: no shuffle is left half-full
        int lane = Warp.LaneIdx;
        Acc8 acc;
        if (vector == 0) acc = GemvScalar(w, code, x, rows, inDim, o, lane);
        else if (code == Elem.F32) acc = GemvF32(w16.AsAligned(16), x16.AsAligned(16), rows, inDim, o, lane);
        else acc = GemvHalf(w16.AsAligned(16), code, x16.AsAligned(16), rows, inDim, o, lane);

        if (rows == 1)
        {
            float s = WarpTotal(acc.R0);
            if (lane == 0) Put(y, o, s, accumulate);
            return;
        }
        // Transposing reduction: 9 shuffles for 8 sums instead of 8 × 5, and 8 lanes store at once.
        float t = WarpTotal8(acc, lane);
        int r = RowOfLane(lane);
        if ((lane & 3) == 0 && r < rows) Put(y, (long)r * outDim + o, t, accumulate);
    }

    /// <summary>Sum over the warp, valid in lane 0.</summary>
    internal static float WarpTotal(float v)
    {
        v += Warp.ShuffleDown(v, 16);   // unrolled by hand: ILGPU keeps the loop form
        v += Warp.ShuffleDown(v, 8);
        v += Warp.ShuffleDown(v, 4);
        v += Warp.ShuffleDown(v, 2);
        return v + Warp.ShuffleDown(v, 1);
    }

    /// <summary>
    /// Warp sums of 8 values at once. At each of the first three steps a lane keeps half of its values
    /// and sends the other half to the partner lane (lane ^ 16, then ^ 8, ^ 4), which keeps the opposite
    /// half: after them lane l holds a partial of row 4·bit4(l) + 2·bit3(l) + bit2(l), summed over the 8
    /// lanes that share those bits; two more steps finish it. Lanes l..l+3 (l a multiple of 4) all
    /// end with the total of that row.
    /// </summary>
    /// <summary>Which row's total <see cref="WarpTotal8"/> leaves in a lane whose index is a multiple of 4.</summary>
    internal static int RowOfLane(int lane) => (lane >> 4 & 1) * 4 + (lane >> 3 & 1) * 2 + (lane >> 2 & 1);

    /// <summary>acc.R_k += v·x[at + k·stride] for the first <paramref name="n"/> of 8 rows.</summary>
    internal static Acc8 Fma8(Acc8 acc, float v, ArrayView<float> x, long at, long stride, int n)
    {
        acc.R0 += v * x[at];
        if (n > 1) acc.R1 += v * x[at + stride];
        if (n > 2) acc.R2 += v * x[at + 2 * stride];
        if (n > 3) acc.R3 += v * x[at + 3 * stride];
        if (n > 4) acc.R4 += v * x[at + 4 * stride];
        if (n > 5) acc.R5 += v * x[at + 5 * stride];
        if (n > 6) acc.R6 += v * x[at + 6 * stride];
        if (n > 7) acc.R7 += v * x[at + 7 * stride];
        return acc;
    }

    internal static float WarpTotal8(Acc8 a, int lane)
    {
        bool hi = (lane & 16) != 0;
        float b0 = (hi ? a.R4 : a.R0) + Warp.ShuffleXor(hi ? a.R0 : a.R4, 16);
        float b1 = (hi ? a.R5 : a.R1) + Warp.ShuffleXor(hi ? a.R1 : a.R5, 16);
        float b2 = (hi ? a.R6 : a.R2) + Warp.ShuffleXor(hi ? a.R2 : a.R6, 16);
        float b3 = (hi ? a.R7 : a.R3) + Warp.ShuffleXor(hi ? a.R3 : a.R7, 16);
        hi = (lane & 8) != 0;
        float c0 = (hi ? b2 : b0) + Warp.ShuffleXor(hi ? b0 : b2, 8);
        float c1 = (hi ? b3 : b1) + Warp.ShuffleXor(hi ? b1 : b3, 8);
        hi = (lane & 4) != 0;
        float d = (hi ? c1 : c0) + Warp.ShuffleXor(hi ? c0 : c1, 4);
        d += Warp.ShuffleXor(d, 2);
        return d + Warp.ShuffleXor(d, 1);
    }

    internal static void Put(ArrayView<float> y, long i, float v, int accumulate) => y[i] = accumulate != 0 ? y[i] + v : v;

    /// <summary>f16/bf16 weights: a chunk is 8 weights; x is read as two 16-byte chunks per row.</summary>
    static Acc8 GemvHalf(ArrayView<Vec16> w16, int code, ArrayView<Vec16> x16, int rows, int inDim, int o, int lane)
    {
        int chunks = inDim / 8;
        long row = (long)o * chunks;
        long xStride = inDim / 4;   // one row of x in 16-byte units
        var acc = default(Acc8);
        int c = lane;
        for (; c + (Unroll - 1) * 32 < chunks; c += Unroll * 32)
        {
            var q0 = w16[row + c];
            var q1 = w16[row + c + 32];
            var q2 = w16[row + c + 64];
            var q3 = w16[row + c + 96];
            acc = Half8(acc, Unpack(q0, code), x16, 2L * c, xStride, rows);
            acc = Half8(acc, Unpack(q1, code), x16, 2L * (c + 32), xStride, rows);
            acc = Half8(acc, Unpack(q2, code), x16, 2L * (c + 64), xStride, rows);
            acc = Half8(acc, Unpack(q3, code), x16, 2L * (c + 96), xStride, rows);
        }
        for (; c < chunks; c += 32) acc = Half8(acc, Unpack(w16[row + c], code), x16, 2L * c, xStride, rows);
        return acc;
    }

    /// <summary>Eight f16 or bf16 weights, low half of each word first (little-endian storage).</summary>
    internal static W8 Unpack(Vec16 q, int code)
    {
        W8 w;
        if (code == Elem.BF16)
        {
            w.A0 = Interop.IntAsFloat(q.X << 16); w.A1 = Interop.IntAsFloat(q.X & 0xFFFF0000u);
            w.A2 = Interop.IntAsFloat(q.Y << 16); w.A3 = Interop.IntAsFloat(q.Y & 0xFFFF0000u);
            w.A4 = Interop.IntAsFloat(q.Z << 16); w.A5 = Interop.IntAsFloat(q.Z & 0xFFFF0000u);
            w.A6 = Interop.IntAsFloat(q.W << 16); w.A7 = Interop.IntAsFloat(q.W & 0xFFFF0000u);
        }
        else
        {
            w.A0 = (float)Interop.IntAsFloat((ushort)q.X); w.A1 = (float)Interop.IntAsFloat((ushort)(q.X >> 16));
            w.A2 = (float)Interop.IntAsFloat((ushort)q.Y); w.A3 = (float)Interop.IntAsFloat((ushort)(q.Y >> 16));
            w.A4 = (float)Interop.IntAsFloat((ushort)q.Z); w.A5 = (float)Interop.IntAsFloat((ushort)(q.Z >> 16));
            w.A6 = (float)Interop.IntAsFloat((ushort)q.W); w.A7 = (float)Interop.IntAsFloat((ushort)(q.W >> 16));
        }
        return w;
    }

    /// <summary>acc[r] += 8 weights · x[r, 8c .. 8c+7] for every row r; <paramref name="xi"/> is the
    /// chunk's first 16-byte unit in row 0. The row count is uniform across the launch, so the guards
    /// cost no divergence.</summary>
    static Acc8 Half8(Acc8 acc, W8 w, ArrayView<Vec16> x16, long xi, long xStride, int rows)
    {
        acc.R0 = Dot8(w, x16[xi], x16[xi + 1], acc.R0);
        if (rows > 1) acc.R1 = Dot8(w, x16[xi + xStride], x16[xi + xStride + 1], acc.R1);
        if (rows > 2) acc.R2 = Dot8(w, x16[xi + 2 * xStride], x16[xi + 2 * xStride + 1], acc.R2);
        if (rows > 3) acc.R3 = Dot8(w, x16[xi + 3 * xStride], x16[xi + 3 * xStride + 1], acc.R3);
        if (rows > 4) acc.R4 = Dot8(w, x16[xi + 4 * xStride], x16[xi + 4 * xStride + 1], acc.R4);
        if (rows > 5) acc.R5 = Dot8(w, x16[xi + 5 * xStride], x16[xi + 5 * xStride + 1], acc.R5);
        if (rows > 6) acc.R6 = Dot8(w, x16[xi + 6 * xStride], x16[xi + 6 * xStride + 1], acc.R6);
        if (rows > 7) acc.R7 = Dot8(w, x16[xi + 7 * xStride], x16[xi + 7 * xStride + 1], acc.R7);
        return acc;
    }

    internal static float Dot8(W8 w, Vec16 a, Vec16 b, float s)
    {
        s += w.A0 * Interop.IntAsFloat(a.X);
        s += w.A1 * Interop.IntAsFloat(a.Y);
        s += w.A2 * Interop.IntAsFloat(a.Z);
        s += w.A3 * Interop.IntAsFloat(a.W);
        s += w.A4 * Interop.IntAsFloat(b.X);
        s += w.A5 * Interop.IntAsFloat(b.Y);
        s += w.A6 * Interop.IntAsFloat(b.Z);
        s += w.A7 * Interop.IntAsFloat(b.W);
        return s;
    }

    /// <summary>f32 weights: a chunk is 4 weights and one 16-byte chunk of x per row.</summary>
    static Acc8 GemvF32(ArrayView<Vec16> w16, ArrayView<Vec16> x16, int rows, int inDim, int o, int lane)
    {
        int chunks = inDim / 4;
        long row = (long)o * chunks;
        var acc = default(Acc8);
        int c = lane;
        for (; c + (Unroll - 1) * 32 < chunks; c += Unroll * 32)
        {
            var q0 = w16[row + c];
            var q1 = w16[row + c + 32];
            var q2 = w16[row + c + 64];
            var q3 = w16[row + c + 96];
            acc = F32x4(acc, q0, x16, c, chunks, rows);
            acc = F32x4(acc, q1, x16, c + 32, chunks, rows);
            acc = F32x4(acc, q2, x16, c + 64, chunks, rows);
            acc = F32x4(acc, q3, x16, c + 96, chunks, rows);
        }
        for (; c < chunks; c += 32) acc = F32x4(acc, w16[row + c], x16, c, chunks, rows);
        return acc;
    }

    static Acc8 F32x4(Acc8 acc, Vec16 q, ArrayView<Vec16> x16, long xi, long xStride, int rows)
    {
        acc.R0 = Dot4(q, x16[xi], acc.R0);
        if (rows > 1) acc.R1 = Dot4(q, x16[xi + xStride], acc.R1);
        if (rows > 2) acc.R2 = Dot4(q, x16[xi + 2 * xStride], acc.R2);
        if (rows > 3) acc.R3 = Dot4(q, x16[xi + 3 * xStride], acc.R3);
        if (rows > 4) acc.R4 = Dot4(q, x16[xi + 4 * xStride], acc.R4);
        if (rows > 5) acc.R5 = Dot4(q, x16[xi + 5 * xStride], acc.R5);
        if (rows > 6) acc.R6 = Dot4(q, x16[xi + 6 * xStride], acc.R6);
        if (rows > 7) acc.R7 = Dot4(q, x16[xi + 7 * xStride], acc.R7);
        return acc;
    }

    static float Dot4(Vec16 w, Vec16 a, float s)
    {
        s += Interop.IntAsFloat(w.X) * Interop.IntAsFloat(a.X);
        s += Interop.IntAsFloat(w.Y) * Interop.IntAsFloat(a.Y);
        s += Interop.IntAsFloat(w.Z) * Interop.IntAsFloat(a.Z);
        s += Interop.IntAsFloat(w.W) * Interop.IntAsFloat(a.W);
        return s;
    }

    /// <summary>Any shape: lane l reads elements l, l+32, … of the row (2- or 4-byte loads, coalesced).</summary>
    static Acc8 GemvScalar(ArrayView<ushort> w, int code, ArrayView<float> x, int rows, int inDim, int o, int lane)
    {
        long row = (long)o * inDim;
        var acc = default(Acc8);
        for (int i = lane; i < inDim; i += 32)
        {
            float v = Elem.Load(w, row + i, code);
            acc.R0 += v * x[i];
            if (rows > 1) acc.R1 += v * x[(long)inDim + i];
            if (rows > 2) acc.R2 += v * x[2L * inDim + i];
            if (rows > 3) acc.R3 += v * x[3L * inDim + i];
            if (rows > 4) acc.R4 += v * x[4L * inDim + i];
            if (rows > 5) acc.R5 += v * x[5L * inDim + i];
            if (rows > 6) acc.R6 += v * x[6L * inDim + i];
            if (rows > 7) acc.R7 += v * x[7L * inDim + i];
        }
        return acc;
    }

    // ---- GEMM ----

    /// <summary>Output tile (rows and columns) and k-step. 256 threads as 16×16, each owning a 4×4
    /// micro-tile at rows ty + 16i and columns tx + 16j: a warp then reads 2 distinct x values
    /// (broadcast) and 16 consecutive W values per k from shared memory, so no bank conflicts. A k-step
    /// of 32 (rather than 16) halves the barriers per product and lets a warp load one 128-byte run.</summary>
    const int Tile = 64, TileK = 32, GemmThreads = 256;

    /// <summary>Shared rows are padded by one: a warp's k-major stores (32 k's of one row) then fall in
    /// 32 different banks instead of one.</summary>
    const int Pitch = Tile + 1;

    /// <summary>
    /// One group per 64×64 tile of y (tile index = m-tile · n-tiles + n-tile, so neighbouring groups share
    /// the same rows of x). Each k-step the group stages x[64 rows, 32 k] and W[64 cols, 32 k] in shared
    /// memory as f32, k-major (loaded with k fastest: a warp reads 32 consecutive k's of one row), then
    /// every thread does 32 × 16 FMAs into its 4×4 micro-tile. Out-of-range rows, columns and k's load as zero and are not
    /// stored, so any M, N, K works.
    /// </summary>
    static void GemmKernel(ArrayView<float> x, ArrayView<ushort> w, int code, ArrayView<uint> signs, ArrayView<float> scales, int slot,
                           ArrayView<float> y, int m, int n, int k, int accumulate)
    {
        var xs = SharedMemory.Allocate<float>(TileK * Pitch);
        var ws = SharedMemory.Allocate<float>(TileK * Pitch);
        int tilesN = (n + Tile - 1) / Tile;
        int m0 = Grid.IdxX / tilesN * Tile, n0 = Grid.IdxX % tilesN * Tile;
        int t = Group.IdxX, tx = t % 16, ty = t / 16;
        int lk = t % TileK, lr = t / TileK;   // loader: k within the step, first row (then +8, +16, … +56)

        // With a delta slot, the weight staged is w + α·s (TenantLinear's prefill form).
        int words = (k + 31) / 32;
        float alpha = slot >= 0 ? scales[slot] : 0f;
        long slotWords = (long)Math.Max(slot, 0) * n * words;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int k0 = 0; k0 < k; k0 += TileK)
        {
            int gk = k0 + lk;
            for (int j = 0; j < Tile; j += GemmThreads / TileK)
            {
                int r = lr + j, gm = m0 + r, gn = n0 + r;
                xs[lk * Pitch + r] = gm < m && gk < k ? x[(long)gm * k + gk] : 0f;
                float wv = 0f;
                if (gn < n && gk < k)
                {
                    wv = Elem.Load(w, (long)gn * k + gk, code);
                    if (slot >= 0) wv += ((signs[slotWords + (long)gn * words + gk / 32] >> (gk % 32)) & 1u) != 0 ? alpha : -alpha;
                }
                ws[lk * Pitch + r] = wv;
            }
            Group.Barrier();
            for (int q = 0; q < TileK; q++)
            {
                int b = q * Pitch;
                float a0 = xs[b + ty], a1 = xs[b + ty + 16], a2 = xs[b + ty + 32], a3 = xs[b + ty + 48];
                float b0 = ws[b + tx], b1 = ws[b + tx + 16], b2 = ws[b + tx + 32], b3 = ws[b + tx + 48];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            Group.Barrier();
        }
        Store(y, m0 + ty, n0 + tx, m, n, c00, c01, c02, c03, accumulate);
        Store(y, m0 + ty + 16, n0 + tx, m, n, c10, c11, c12, c13, accumulate);
        Store(y, m0 + ty + 32, n0 + tx, m, n, c20, c21, c22, c23, accumulate);
        Store(y, m0 + ty + 48, n0 + tx, m, n, c30, c31, c32, c33, accumulate);
    }

    static void GemmLaunch(Tensor x, Tensor w, ArrayView<uint> signs, ArrayView<float> scales, int slot, Tensor y, bool accumulate, int rows, int inDim, int outDim)
    {
        int tiles = ((rows + Tile - 1) / Tile) * ((outDim + Tile - 1) / Tile);
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, int, ArrayView<uint>, ArrayView<float>, int, ArrayView<float>, int, int, int, int>>(GemmKernel)(
            new KernelConfig(tiles, GemmThreads), x.View<float>(), Elem.View(w), Elem.Code(w.DType), signs, scales, slot, y.View<float>(), rows, outDim, inDim, accumulate ? 1 : 0);
    }

    /// <summary>
    /// The GEMM over W + α·S of pool slot <paramref name="slot"/> (<see cref="TenantLinear"/>'s prefill form): signs
    /// Sign1 [capacity, out, in], scales f32 [capacity]; the fold happens where the tile of W is staged, so the sum
    /// is the f32 weight the one-tenant path forms (<see cref="BitLinear.Materialize"/>) without writing it.
    /// </summary>
    internal static void GemmFolded(Tensor x, Tensor w, Tensor signs, Tensor scales, int slot, Tensor y, bool accumulate)
    {
        var (rows, inDim, outDim) = Shapes(x, w, y);
        if (rows == 0 || outDim == 0) return;
        GemmLaunch(x, w, signs.View<uint>(), scales.View<float>(), slot, y, accumulate, rows, inDim, outDim);   // slot −1: not read
    }

    /// <summary>One row of a micro-tile: columns gn, gn+16, gn+32, gn+48.</summary>
    static void Store(ArrayView<float> y, int gm, int gn, int m, int n, float v0, float v1, float v2, float v3, int accumulate)
    {
        if (gm >= m) return;
        long row = (long)gm * n;
        if (gn < n) Put(y, row + gn, v0, accumulate);
        if (gn + 16 < n) Put(y, row + gn + 16, v1, accumulate);
        if (gn + 32 < n) Put(y, row + gn + 32, v2, accumulate);
        if (gn + 48 < n) Put(y, row + gn + 48, v3, accumulate);
    }

    // ---- audit ----

    public static IEnumerable<AuditCase> Cases => [Case("gemv"), Case("gemm"), Case("gemm mma"), Case("matmul chunked gemv")];

    /// <summary>
    /// W is f16, bf16 or f32 and accumulate on or off, at random. GEMV: rows 1..8; in is a multiple of 8
    /// half the time (the 16-byte path, with lengths around the 4×32-chunk unroll: 8·129 = 1032 is one
    /// chunk past it) and ragged otherwise (the plain path); out up to 64 (a partial last group of
    /// 4 warps). GEMM: M, N up to 130 (1, 2 or 3 64-tiles with ragged edges; 65 and 129 one past) and
    /// K up to 200 (32-steps, 33 and 65 one past). With accumulate on, y starts from random values, so a
    /// forgotten store still shows. The sizes are small because ILGPU's CPU accelerator runs every GPU
    /// thread as an OS thread and every shuffle or barrier as an OS barrier: its cost is threads ×
    /// synchronisations, not multiply-adds.
    /// </summary>
    static AuditCase Case(string name) => new(name, Check.F32Bound, (dev, rng) =>
    {
        var wt = Check.FloatType(rng);
        int rows, inDim, outDim;
        bool gemv = !name.StartsWith("gemm", StringComparison.Ordinal), chunked = name.StartsWith("matmul", StringComparison.Ordinal);
        if (chunked)
        {
            // Run's chunked-GEMV range: 9..32 rows, views of 8-row slices.
            rows = GemvMaxRows + Check.Size(rng, ChunkedGemvMaxRows - GemvMaxRows);
            inDim = 8 * Check.Size(rng, 40);
            outDim = Check.Size(rng, 40);
        }
        else if (gemv)
        {
            rows = Check.Size(rng, GemvMaxRows);
            inDim = rng.Next(2) == 0 ? 8 * Check.Size(rng, 160) : Check.Size(rng, 1200);
            outDim = Check.Size(rng, 64);
        }
        else if (name == "gemm mma")
        {
            // the tensor-core GEMM: f16 W, in a multiple of 8 but not of its 32-wide step; 1–3 tiles of 64 rows and of 128 outputs
            wt = DType.F16;
            rows = Check.Size(rng, 130);
            inDim = 8 * Check.Size(rng, 20);
            outDim = Check.Size(rng, 260);
        }
        else
        {
            rows = Check.Size(rng, 130);
            inDim = Check.Size(rng, 200);
            outDim = Check.Size(rng, 130);
        }
        bool accumulate = rng.Next(2) == 0;
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
        var want = accumulate ? Check.Values(rng, (long)rows * outDim, 3f) : new float[rows * outDim];
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, wt);
        using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
        if (chunked) Run(tx, tw, ty, accumulate);
        else if (gemv) Gemv(tx, tw, ty, accumulate);
        else Gemm(tx, tw, ty, accumulate);
        Twin(x, w, want, rows, inDim, outDim, accumulate);
        string path = gemv ? (dev.IsIlgpu && VectorPath(tx, tw, inDim) ? " 16-byte" : " plain") : TakesMmaGemm(tx, tw, inDim) ? " tensor cores" : "";
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ w {wt}{(accumulate ? " +=" : "")}{path}");
    });
}

using System.Numerics;
using System.Runtime.CompilerServices;

namespace BitDeltaNative.Kernels;

public static partial class MatMul
{
    /// <summary>
    /// Converted W floats a block aims at: 8192 (32 KB) is about a core's L1 data cache, so the block
    /// stays there while every row of x streams past it. Set by measurement (bench/NOTES.md).
    /// </summary>
    const int HostBlockFloats = 8192;

    /// <summary>Multiply-adds under which a call runs on the calling thread. Waking a pool thread and
    /// waiting for it cost ~10 µs on the 2-core dev VM: a [1×256]·[640×256]ᵀ decode step (164K) took
    /// 8 µs on one core and 15 µs split over two, while 1M (256 → 4096) still gained from two.</summary>
    const long HostSerialMacs = 1 << 18;

    /// <summary>Each thread's W block, converted to f32; grows to the largest block it has seen and is kept,
    /// so a decode loop allocates nothing.</summary>
    [ThreadStatic] static float[]? hostScratch;

    /// <summary>
    /// y = x·Wᵀ (or y += x·Wᵀ) on the host, the path of <see cref="Run"/> on <see cref="Device.Cpu"/>.
    /// W is [out, in] in f32, f16 or bf16 (<paramref name="w"/> its bytes); x is f32 [rows, in];
    /// y is f32 [rows, out]. Products are summed in f32 (vector lanes, then the lanes), so it agrees with
    /// <see cref="Twin"/> to a relative error of about 1e-7·√in, not bit for bit.
    ///
    /// Output columns are cut into blocks of W rows (<see cref="HostBlockFloats"/>), run in parallel.
    /// A block's W rows are converted to f32 once into a thread-local buffer (f32 W is read in place), then
    /// every row of x is dotted with them, 2 rows of x × 4 rows of W at a time: 8 vector accumulators,
    /// 6 loads per 8 FMAs, which fits the 16 vector registers of AVX2. So W is converted once per call
    /// and, being small, stays in L1 while x streams from L2.
    /// </summary>
    public static unsafe void Host(ReadOnlySpan<float> x, ReadOnlySpan<byte> w, DType wType, Span<float> y,
                                   int rows, int inDim, int outDim, bool accumulate = false)
    {
        if (!wType.IsFloat()) throw new ArgumentException($"matmul weight: expected F32, F16 or BF16, got {wType}");
        if (rows < 0 || inDim < 0 || outDim < 0) throw new ArgumentException($"matmul: negative size {rows}, {inDim}, {outDim}");
        if (x.Length < (long)rows * inDim || y.Length < (long)rows * outDim || w.Length < wType.ByteCount([outDim, inDim]))
            throw new ArgumentException($"matmul: spans of {x.Length}, {w.Length} bytes, {y.Length} too short for [{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ {wType}");
        if (rows == 0 || outDim == 0) return;

        int block = HostBlock(inDim, outDim);
        int blocks = (outDim + block - 1) / block;
        fixed (float* px = x)
        fixed (byte* pw = w)
        fixed (float* py = y)
        {
            var job = new HostJob(px, pw, wType, py, rows, inDim, outDim, block, accumulate);
            if (blocks == 1 || Environment.ProcessorCount == 1 || (long)rows * inDim * outDim < HostSerialMacs)
                for (int b = 0; b < blocks; b++) job.Block(b);
            else
                Parallel.For(0, blocks, job.Block);
        }
    }

    /// <summary>W rows per block: a multiple of 4 (the micro-tile) near <see cref="HostBlockFloats"/>,
    /// but small enough to give each core about 4 blocks, so the last one to finish waits little.</summary>
    static int HostBlock(int inDim, int outDim)
    {
        int byCache = HostBlockFloats / Math.Max(inDim, 1) / 4 * 4;
        int byCores = ((outDim + 4 * Environment.ProcessorCount - 1) / (4 * Environment.ProcessorCount) + 3) / 4 * 4;
        return Math.Clamp(Math.Min(byCache, byCores), 4, 64);
    }

    /// <summary>One call's operands, shared by the blocks. Pointers, because the blocks run as a
    /// Parallel.For body, which cannot capture spans; the caller keeps them pinned until it returns.</summary>
    sealed unsafe class HostJob(float* x, byte* w, DType wType, float* y, int rows, int inDim, int outDim, int block, bool accumulate)
    {
        /// <summary>Output columns [b·block, b·block + n): W rows converted, then all rows of x.</summary>
        public void Block(int b)
        {
            int o0 = b * block, n = Math.Min(block, outDim - o0);
            if (wType == DType.F32)
            {
                Rows((float*)w + (long)o0 * inDim, o0, n);
                return;
            }
            int count = n * inDim;
            var scratch = hostScratch;
            if (scratch == null || scratch.Length < count) hostScratch = scratch = new float[Math.Max(count, block * inDim)];
            Casts.ToF32(new ReadOnlySpan<byte>(w + (long)o0 * inDim * 2, checked(count * 2)), wType, scratch.AsSpan(0, count));
            fixed (float* wb = scratch) Rows(wb, o0, n);
        }

        /// <summary>Every row of x against the n f32 W rows at <paramref name="wb"/> (output columns o0..o0+n).
        /// A last group of fewer than 4 W rows repeats its first row in the missing places and drops those sums.
        /// Optimized from the first call: at tier 0 this loop's overhead per tile was ~half the tile's time.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Rows(float* wb, int o0, int n)
        {
            for (int r = 0; r < rows; r += 2)
            {
                float* x0 = x + (long)r * inDim;
                float* y0 = y + (long)r * outDim + o0;
                for (int q = 0; q < n; q += 4)
                {
                    int m = Math.Min(4, n - q);
                    float* w0 = wb + (long)q * inDim;
                    float* w1 = m > 1 ? w0 + inDim : w0;
                    float* w2 = m > 2 ? w0 + 2L * inDim : w0;
                    float* w3 = m > 3 ? w0 + 3L * inDim : w0;
                    if (r + 1 < rows) Tile2x4(x0, x0 + inDim, w0, w1, w2, w3, inDim, y0 + q, y0 + outDim + q, m, accumulate);
                    else Tile1x4(x0, w0, w1, w2, w3, inDim, y0 + q, m, accumulate);
                }
            }
        }
    }

    /// <summary>Dot products of 2 rows of x with 4 rows of W: 8 accumulators, enough independent FMA chains
    /// to cover a 4-cycle latency on 2 FMA ports. Leftover k (in not a multiple of the vector) in scalar.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tile2x4(float* x0, float* x1, float* w0, float* w1, float* w2, float* w3, int inDim,
                               float* y0, float* y1, int m, bool accumulate)
    {
        Vector<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector<float> a10 = default, a11 = default, a12 = default, a13 = default;
        int k = 0;
        for (; k <= inDim - Vector<float>.Count; k += Vector<float>.Count)
        {
            var b0 = Vector.Load(w0 + k);
            var b1 = Vector.Load(w1 + k);
            var b2 = Vector.Load(w2 + k);
            var b3 = Vector.Load(w3 + k);
            var u = Vector.Load(x0 + k);
            a00 = Vector.FusedMultiplyAdd(u, b0, a00);
            a01 = Vector.FusedMultiplyAdd(u, b1, a01);
            a02 = Vector.FusedMultiplyAdd(u, b2, a02);
            a03 = Vector.FusedMultiplyAdd(u, b3, a03);
            u = Vector.Load(x1 + k);
            a10 = Vector.FusedMultiplyAdd(u, b0, a10);
            a11 = Vector.FusedMultiplyAdd(u, b1, a11);
            a12 = Vector.FusedMultiplyAdd(u, b2, a12);
            a13 = Vector.FusedMultiplyAdd(u, b3, a13);
        }
        float s00 = Vector.Sum(a00), s01 = Vector.Sum(a01), s02 = Vector.Sum(a02), s03 = Vector.Sum(a03);
        float s10 = Vector.Sum(a10), s11 = Vector.Sum(a11), s12 = Vector.Sum(a12), s13 = Vector.Sum(a13);
        for (; k < inDim; k++)
        {
            float u = x0[k], v = x1[k];
            s00 += u * w0[k]; s01 += u * w1[k]; s02 += u * w2[k]; s03 += u * w3[k];
            s10 += v * w0[k]; s11 += v * w1[k]; s12 += v * w2[k]; s13 += v * w3[k];
        }
        Store4(y0, s00, s01, s02, s03, m, accumulate);
        Store4(y1, s10, s11, s12, s13, m, accumulate);
    }

    /// <summary>The last row of an odd count (and every decode step): 1 row of x with 4 rows of W, k
    /// unrolled twice so there are still 8 independent accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tile1x4(float* x0, float* w0, float* w1, float* w2, float* w3, int inDim, float* y0, int m, bool accumulate)
    {
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector<float> c0 = default, c1 = default, c2 = default, c3 = default;
        int v = Vector<float>.Count, k = 0;
        for (; k <= inDim - 2 * v; k += 2 * v)
        {
            var u = Vector.Load(x0 + k);
            a0 = Vector.FusedMultiplyAdd(u, Vector.Load(w0 + k), a0);
            a1 = Vector.FusedMultiplyAdd(u, Vector.Load(w1 + k), a1);
            a2 = Vector.FusedMultiplyAdd(u, Vector.Load(w2 + k), a2);
            a3 = Vector.FusedMultiplyAdd(u, Vector.Load(w3 + k), a3);
            u = Vector.Load(x0 + k + v);
            c0 = Vector.FusedMultiplyAdd(u, Vector.Load(w0 + k + v), c0);
            c1 = Vector.FusedMultiplyAdd(u, Vector.Load(w1 + k + v), c1);
            c2 = Vector.FusedMultiplyAdd(u, Vector.Load(w2 + k + v), c2);
            c3 = Vector.FusedMultiplyAdd(u, Vector.Load(w3 + k + v), c3);
        }
        if (k <= inDim - v)
        {
            var u = Vector.Load(x0 + k);
            a0 = Vector.FusedMultiplyAdd(u, Vector.Load(w0 + k), a0);
            a1 = Vector.FusedMultiplyAdd(u, Vector.Load(w1 + k), a1);
            a2 = Vector.FusedMultiplyAdd(u, Vector.Load(w2 + k), a2);
            a3 = Vector.FusedMultiplyAdd(u, Vector.Load(w3 + k), a3);
            k += v;
        }
        float s0 = Vector.Sum(a0 + c0), s1 = Vector.Sum(a1 + c1), s2 = Vector.Sum(a2 + c2), s3 = Vector.Sum(a3 + c3);
        for (; k < inDim; k++)
        {
            float u = x0[k];
            s0 += u * w0[k]; s1 += u * w1[k]; s2 += u * w2[k]; s3 += u * w3[k];
        }
        Store4(y0, s0, s1, s2, s3, m, accumulate);
    }

    /// <summary>The first <paramref name="m"/> of four sums to y (added when accumulating).</summary>
    static unsafe void Store4(float* y, float s0, float s1, float s2, float s3, int m, bool accumulate)
    {
        if (accumulate)
        {
            y[0] += s0;
            if (m > 1) y[1] += s1;
            if (m > 2) y[2] += s2;
            if (m > 3) y[3] += s3;
        }
        else
        {
            y[0] = s0;
            if (m > 1) y[1] = s1;
            if (m > 2) y[2] = s2;
            if (m > 3) y[3] = s3;
        }
    }
}

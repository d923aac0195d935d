using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace BitDeltaNative.Kernels;

public static partial class Attention
{
    /// <summary>
    /// The managed-CPU path for an f32 cache (what <c>--device cpu</c> runs): one (token, head) per task across
    /// the cores, scores by SIMD dot products, softmax in f32 with the max subtracted, V summed by SIMD
    /// multiply-adds. Same masking as <see cref="Twin"/>; checked against it like a kernel. Other cache dtypes go
    /// to the twin.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Host(ReadOnlySpan<float> q, ReadOnlySpan<float> kCache, ReadOnlySpan<float> vCache,
                                   ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, Span<float> output,
                                   int nHeads, int nSlots, int nKvHeads, int maxSeq, int headDim, int slidingWindow, float scale)
    {
        int tokens = slots.Length, group = nHeads / nKvHeads;
        var slot = slots.ToArray();
        var pos = positions.ToArray();
        fixed (float* qp = q, kp = kCache, vp = vCache, op = output)
        {
            nint Q = (nint)qp, K = (nint)kp, V = (nint)vp, O = (nint)op;
            Parallel.For(0, tokens * nHeads, () => new float[maxSeq], (i, _, scores) =>
            {
                int t = i / nHeads, h = i % nHeads;
                var qRow = new ReadOnlySpan<float>((float*)Q + (long)i * headDim, headDim);
                var outRow = new Span<float>((float*)O + (long)i * headDim, headDim);
                if (!KvCache.InCache(slot[t], pos[t], nSlots, maxSeq)) { outRow.Clear(); return scores; }
                float* kHead = (float*)K + ((long)slot[t] * nKvHeads + h / group) * maxSeq * headDim;
                float* vHead = (float*)V + ((long)slot[t] * nKvHeads + h / group) * maxSeq * headDim;
                int first = FirstKey(pos[t], slidingWindow), n = pos[t] - first + 1;
                var s = scores.AsSpan(0, n);
                for (int j = 0; j < n; j++)
                    s[j] = scale * TensorPrimitives.Dot(qRow, new ReadOnlySpan<float>(kHead + (long)(first + j) * headDim, headDim));
                float max = TensorPrimitives.Max(s);
                TensorPrimitives.Subtract(s, max, s);
                TensorPrimitives.Exp(s, s);
                float sum = TensorPrimitives.Sum(s);
                outRow.Clear();
                for (int j = 0; j < n; j++)
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(vHead + (long)(first + j) * headDim, headDim), s[j], outRow, outRow);
                TensorPrimitives.Divide(outRow, sum, outRow);
                return scores;
            }, _ => { });
        }
    }
}

using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of causal attention over one sequence of T tokens at positions 0…T−1 (the forward is
/// <see cref="Attention.Twin"/> over a cache holding exactly these keys and values). q and o are [T, H, D], k
/// and v [T, KV, D]; query head h reads kv head h/(H/KV) (GQA); query t sees keys j in
/// [<see cref="Attention.FirstKey"/>(t, window), t]. With s_j = scale·q·k_j, P = softmax(s), o = Σ_j P_j·v_j:
/// <list type="bullet">
/// <item>dv_j += P_j·do;</item>
/// <item>dP_j = do·v_j, and through the softmax dS_j = P_j·(dP_j − Σ_l P_l·dP_l), where Σ_l P_l·dP_l = do·o;</item>
/// <item>dq = scale·Σ_j dS_j·k_j; dk_j += scale·dS_j·q.</item>
/// </list>
/// P is recomputed here from q and k rather than stored by the forward (as FlashAttention's backward does,
/// Dao et al. 2022, arXiv 2205.14135 §3.1): it is T² per head, the forward's only large intermediate.
/// dk and dv sum over the query heads of a group and over the queries that see each key.
/// <para>On tensors (<see cref="Run"/>) a batch holds several such sequences back to back; this is the backward of
/// prefilling each from position 0, the attention of a distillation step.</para>
/// </summary>
public static class AttentionGrad
{
    /// <summary>The spec, f64 throughout; dq, dk, dv are overwritten.</summary>
    public static void Twin(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dOut,
                            Span<float> dq, Span<float> dk, Span<float> dv,
                            int tokens, int nHeads, int nKvHeads, int headDim, int slidingWindow, float scale)
    {
        int group = nHeads / nKvHeads, D = headDim;
        var dkAcc = new double[(long)tokens * nKvHeads * D];
        var dvAcc = new double[dkAcc.Length];
        var p = new double[tokens];
        var dp = new double[tokens];
        var dqRow = new double[D];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < nHeads; h++)
            {
                int kvh = h / group, first = Attention.FirstKey(t, slidingWindow);
                int qa = (t * nHeads + h) * D;
                double max = double.NegativeInfinity;
                for (int j = first; j <= t; j++)
                {
                    int ka = (j * nKvHeads + kvh) * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)q[qa + d] * k[ka + d];
                    p[j] = scale * s;
                    max = Math.Max(max, p[j]);
                }
                double sum = 0;
                for (int j = first; j <= t; j++) sum += p[j] = Math.Exp(p[j] - max);
                double pdp = 0;
                for (int j = first; j <= t; j++)
                {
                    p[j] /= sum;
                    int va = (j * nKvHeads + kvh) * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)dOut[qa + d] * v[va + d];
                    dp[j] = s;
                    pdp += p[j] * s;
                }
                Array.Clear(dqRow);
                for (int j = first; j <= t; j++)
                {
                    int ka = (j * nKvHeads + kvh) * D;
                    double ds = p[j] * (dp[j] - pdp) * scale;
                    for (int d = 0; d < D; d++)
                    {
                        dqRow[d] += ds * k[ka + d];
                        dkAcc[ka + d] += ds * q[qa + d];
                        dvAcc[ka + d] += p[j] * dOut[qa + d];
                    }
                }
                for (int d = 0; d < D; d++) dq[qa + d] = (float)dqRow[d];
            }
        for (int i = 0; i < dkAcc.Length; i++)
        {
            dk[i] = (float)dkAcc[i];
            dv[i] = (float)dvAcc[i];
        }
    }

    /// <summary>The spec of <see cref="Run"/>: <see cref="Twin"/> over each of <paramref name="sequences"/> sequences
    /// of <paramref name="tokens"/> tokens, laid one after another in q, k, v (token b·T + t is position t of
    /// sequence b).</summary>
    public static void BatchTwin(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dOut,
                                 Span<float> dq, Span<float> dk, Span<float> dv,
                                 int sequences, int tokens, int nHeads, int nKvHeads, int headDim, int slidingWindow, float scale)
    {
        int qs = tokens * nHeads * headDim, ks = tokens * nKvHeads * headDim;
        for (int b = 0; b < sequences; b++)
            Twin(q.Slice(b * qs, qs), k.Slice(b * ks, ks), v.Slice(b * ks, ks), dOut.Slice(b * qs, qs),
                 dq.Slice(b * qs, qs), dk.Slice(b * ks, ks), dv.Slice(b * ks, ks), tokens, nHeads, nKvHeads, headDim, slidingWindow, scale);
    }

    /// <summary>
    /// dq, dk, dv (overwritten) of causal attention over <paramref name="sequences"/> sequences of T = N/sequences
    /// tokens each, at positions 0 … T−1: q, dOut, dq f32 [N, H, D]; k, v, dk, dv f32 [N, KV, D]; sequence b is
    /// tokens b·T … b·T + T − 1; query head h reads kv head h/(H/KV); the window as <see cref="Attention.FirstKey"/>
    /// (0: none); scale as the forward's (headDim^−½). The outputs must not share storage with anything (checked).
    /// <para>On a device, two deterministic kernels (no atomics), after FlashAttention-2's backward split
    /// (Dao 2023, arXiv 2307.08691 §3.2) but without its tiling: <see cref="QueryKernel"/> per (token, head) finds
    /// the softmax statistics, Σ_l P_l·dP_l and dq; <see cref="KeyKernel"/> per (sequence, key, kv head) sums dk and
    /// dv over the queries and heads that see the key, recomputing P from the saved statistics. On
    /// <see cref="Device.Cpu"/> the twin's math in f32, SIMD, one task per (sequence, kv head).</para>
    /// </summary>
    public static void Run(Tensor q, Tensor k, Tensor v, Tensor dOut, Tensor dq, Tensor dk, Tensor dv, int sequences, int slidingWindow, float scale)
    {
        Need.SameDevice(q, k, v, dOut, dq, dk, dv);
        foreach (var (name, t) in new[] { ("q", q), ("k", k), ("v", v), ("dout", dOut), ("dq", dq), ("dk", dk), ("dv", dv) })
            Need.F32("attention backward " + name, t);
        if (q.Rank != 3 || k.Rank != 3) throw new ArgumentException($"attention backward: expected q [N, H, D] and k [N, KV, D], got {q} and {k}");
        int n = q.Dim(0), heads = q.Dim(1), d = q.Dim(2), kvHeads = k.Dim(1);
        Need.Shape("attention backward k", k, n, kvHeads, d);
        Need.Shape("attention backward v", v, n, kvHeads, d);
        Need.Shape("attention backward dout", dOut, n, heads, d);
        Need.Shape("attention backward dq", dq, n, heads, d);
        Need.Shape("attention backward dk", dk, n, kvHeads, d);
        Need.Shape("attention backward dv", dv, n, kvHeads, d);
        if (sequences < 1 || n % sequences != 0) throw new ArgumentException($"attention backward: {n} tokens are not {sequences} sequences of equal length");
        if (kvHeads == 0 || heads % kvHeads != 0) throw new ArgumentException($"attention backward: {heads} query heads are not a multiple of {kvHeads} kv heads");
        if (d > Attention.MaxHeadDim) throw new ArgumentException($"attention backward: head size {d}; the kernels take at most {Attention.MaxHeadDim}");
        if (slidingWindow < 0) throw new ArgumentException($"attention backward: sliding window {slidingWindow} < 0");
        Need.Disjoint("attention backward", q, k, v, dOut, dq, dk, dv);
        if (dq.ElementCount == 0) return;
        var s = new Dims
        {
            Sequences = sequences, Tokens = n / sequences, Heads = heads, KvHeads = kvHeads, HeadDim = d, Window = slidingWindow, Scale = scale,
        };
        var dev = q.Device;
        if (!dev.IsIlgpu)
        {
            Host(q.Host<float>(), k.Host<float>(), v.Host<float>(), dOut.Host<float>(), dq.Host<float>(), dk.Host<float>(), dv.Host<float>(), s);
            return;
        }
        int threads = dev.Kind == DeviceKind.IlgpuCpu ? 32 : MaxThreads;
        using var stats = Tensor.Empty([3, n * heads], DType.F32, dev);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>>(QueryKernel)(
            new KernelConfig(n * heads, threads), q.View<float>(), k.View<float>(), v.View<float>(), dOut.View<float>(), dq.View<float>(), stats.View<float>(), s);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>>(KeyKernel)(
            new KernelConfig(n * kvHeads, threads), q.View<float>(), k.View<float>(), v.View<float>(), dOut.View<float>(), stats.View<float>(), dk.View<float>(), dv.View<float>(), s);
    }

    /// <summary>Sizes and scalars of a launch. Public because ILGPU's CPU accelerator emits a task type that holds
    /// it, in another assembly.</summary>
    public struct Dims
    {
        public int Sequences, Tokens, Heads, KvHeads, HeadDim, Window;
        public float Scale;
    }

    /// <summary>Threads a group on a GPU (one per element of a 128-wide head, one per key or query of a chunk).
    /// ILGPU's CPU accelerator gets one warp: its barriers cost OS thread switches (two warps made the audit 2.5×
    /// slower), and nothing in these kernels depends on the warp count but <see cref="Reduce"/>'s group sums, which
    /// the forward kernels check with two warps.</summary>
    const int MaxThreads = 128;

    /// <summary>
    /// One group per (token n, query head h), row = n·H + h, over the keys j ∈ [first, t] of its sequence.
    /// Pass 1: thread i scores keys first + i, first + i + G, … (s_j = scale·q·k_j and dP_j = dO·v_j, with q and dO
    /// in shared memory) and keeps an online softmax (Milakov and Gimelshein 2018, arXiv 1805.02867): its max m,
    /// Σ e^(s−m) and Σ e^(s−m)·dP; the group merges them into M, L = Σ_j e^(s_j−M) and δ = Σ_j P_j·dP_j.
    /// Pass 2, per chunk of G keys: each thread recomputes its key's dS_j = P_j·(dP_j − δ)·scale into shared memory,
    /// then the threads, one per element d, add Σ_j dS_j·k_j[d] (k rows read coalesced). Writes dq and (M, L, δ)
    /// into stats [3, N·H] for <see cref="KeyKernel"/>.
    /// </summary>
    static void QueryKernel(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dOut,
                            ArrayView<float> dq, ArrayView<float> stats, Dims s)
    {
        var qS = SharedMemory.Allocate<float>(Attention.MaxHeadDim);
        var doS = SharedMemory.Allocate<float>(Attention.MaxHeadDim);
        var dqS = SharedMemory.Allocate<float>(Attention.MaxHeadDim);
        var dsS = SharedMemory.Allocate<float>(MaxThreads);
        var scratch = SharedMemory.Allocate<float>(33);
        int row = Grid.IdxX, rowsAll = Grid.DimX;
        int n = row / s.Heads, h = row % s.Heads, t = n % s.Tokens, n0 = n - t;
        int kvh = h / (s.Heads / s.KvHeads), D = s.HeadDim, tid = Group.IdxX, G = Group.DimX;
        int first = s.Window > 0 ? Math.Max(0, t - s.Window + 1) : 0;
        long qa = (long)row * D;
        for (int d = tid; d < D; d += G)
        {
            qS[d] = q[qa + d];
            doS[d] = dOut[qa + d];
            dqS[d] = 0f;
        }
        Group.Barrier();

        float m = float.NegativeInfinity, l = 0f, a = 0f;
        for (int j = first + tid; j <= t; j += G)
        {
            long ka = ((long)(n0 + j) * s.KvHeads + kvh) * D;
            float sc = 0f, dp = 0f;
            for (int d = 0; d < D; d++)
            {
                sc += qS[d] * k[ka + d];
                dp += doS[d] * v[ka + d];
            }
            sc *= s.Scale;
            if (sc > m)
            {
                float c = MathF.Exp(m - sc);   // 0 on the first key (m = −∞)
                l *= c;
                a *= c;
                m = sc;
            }
            float e = MathF.Exp(sc - m);
            l += e;
            a += e * dp;
        }
        // Thread 0 always has key `first`, so M is finite; a thread with no key weighs 0.
        float M = Reduce.GroupMax(m, scratch);
        float w = m == float.NegativeInfinity ? 0f : MathF.Exp(m - M);
        float L = Reduce.GroupSum(l * w, scratch);
        float delta = Reduce.GroupSum(a * w, scratch) / L;

        for (int c = first; c <= t; c += G)   // the same trip count for the whole group: the barriers are uniform
        {
            int j = c + tid;
            if (j <= t)
            {
                long ka = ((long)(n0 + j) * s.KvHeads + kvh) * D;
                float sc = 0f, dp = 0f;
                for (int d = 0; d < D; d++)
                {
                    sc += qS[d] * k[ka + d];
                    dp += doS[d] * v[ka + d];
                }
                sc *= s.Scale;
                float p = MathF.Exp(sc - M) / L;
                dsS[tid] = p * (dp - delta) * s.Scale;
            }
            Group.Barrier();
            int nk = Math.Min(G, t - c + 1);
            for (int d = tid; d < D; d += G)
            {
                float acc = dqS[d];
                for (int kk = 0; kk < nk; kk++) acc += dsS[kk] * k[((long)(n0 + c + kk) * s.KvHeads + kvh) * D + d];
                dqS[d] = acc;
            }
            Group.Barrier();
        }
        for (int d = tid; d < D; d += G) dq[qa + d] = dqS[d];
        if (tid == 0)
        {
            stats[row] = M;
            stats[rowsAll + row] = L;
            stats[2L * rowsAll + row] = delta;
        }
    }

    /// <summary>
    /// One group per (key token n_j, kv head g), row n_j·KV + g of dk and dv. Its rows are the (query t, head h)
    /// pairs that see key j: t from j to j + W − 1 (the window) or T − 1, h over the g-th group of H/KV heads. Per
    /// chunk of G rows, each thread recomputes its row's P = e^(s − M)/L from <see cref="QueryKernel"/>'s statistics
    /// and dS = P·(dP − δ)·scale into shared memory; then the threads, one per element d, add Σ dS·q[d] into dk and
    /// Σ P·dO[d] into dv (q and dO rows read coalesced). Scores are computed in the same order as the query
    /// kernel's, so a query with one key gets P = 1 and dS = 0 exactly there too.
    /// </summary>
    static void KeyKernel(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dOut, ArrayView<float> stats,
                          ArrayView<float> dk, ArrayView<float> dv, Dims s)
    {
        var kS = SharedMemory.Allocate<float>(Attention.MaxHeadDim);
        var vS = SharedMemory.Allocate<float>(Attention.MaxHeadDim);
        var dkS = SharedMemory.Allocate<float>(Attention.MaxHeadDim);
        var dvS = SharedMemory.Allocate<float>(Attention.MaxHeadDim);
        var pS = SharedMemory.Allocate<float>(MaxThreads);
        var dsS = SharedMemory.Allocate<float>(MaxThreads);
        int idx = Grid.IdxX, nj = idx / s.KvHeads, g = idx % s.KvHeads;
        int j = nj % s.Tokens, n0 = nj - j, group = s.Heads / s.KvHeads;
        int D = s.HeadDim, tid = Group.IdxX, G = Group.DimX;
        long rowsAll = (long)Grid.DimX / s.KvHeads * s.Heads;   // N·H
        long ka = (long)idx * D;
        for (int d = tid; d < D; d += G)
        {
            kS[d] = k[ka + d];
            vS[d] = v[ka + d];
            dkS[d] = 0f;
            dvS[d] = 0f;
        }
        Group.Barrier();

        int last = s.Window > 0 ? Math.Min(s.Tokens - 1, j + s.Window - 1) : s.Tokens - 1;
        int rows = (last - j + 1) * group;
        for (int c = 0; c < rows; c += G)
        {
            int r = c + tid;
            if (r < rows)
            {
                long qrow = (long)(n0 + j + r / group) * s.Heads + g * group + r % group;
                long qa = qrow * D;
                float sc = 0f, dp = 0f;
                for (int d = 0; d < D; d++)
                {
                    sc += q[qa + d] * kS[d];
                    dp += dOut[qa + d] * vS[d];
                }
                sc *= s.Scale;
                float p = MathF.Exp(sc - stats[qrow]) / stats[rowsAll + qrow];
                pS[tid] = p;
                dsS[tid] = p * (dp - stats[2 * rowsAll + qrow]) * s.Scale;
            }
            Group.Barrier();
            int nr = Math.Min(G, rows - c);
            for (int d = tid; d < D; d += G)
            {
                float ak = dkS[d], av = dvS[d];
                for (int rr = 0; rr < nr; rr++)
                {
                    int rg = c + rr;
                    long at = ((long)(n0 + j + rg / group) * s.Heads + g * group + rg % group) * D + d;
                    ak += dsS[rr] * q[at];
                    av += pS[rr] * dOut[at];
                }
                dkS[d] = ak;
                dvS[d] = av;
            }
            Group.Barrier();
        }
        for (int d = tid; d < D; d += G)
        {
            dk[ka + d] = dkS[d];
            dv[ka + d] = dvS[d];
        }
    }

    /// <summary>
    /// The managed-CPU path (what <c>--device cpu</c> trains with): the twin's math in f32, one task per (sequence, kv
    /// head), which owns its dk and dv rows and the dq rows of its heads, so tasks never write the same element and
    /// the result does not depend on the schedule. Per (query, key) one fused SIMD pass computes s and dP, and one
    /// adds into dq, dk and dv: at head size 32 a library call per vector op cost more than its arithmetic
    /// (measured: 112 ms a layer of the demo's B 4, T 128, H 8, KV 4, D 32 through TensorPrimitives).
    /// </summary>
    static unsafe void Host(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dOut,
                            Span<float> dq, Span<float> dk, Span<float> dv, Dims s)
    {
        int T = s.Tokens, H = s.Heads, KV = s.KvHeads, D = s.HeadDim, group = H / KV;
        float scale = s.Scale;
        fixed (float* pq = q, pk = k, pv = v, pdo = dOut, pdq = dq, pdk = dk, pdv = dv)
        {
            nint Q = (nint)pq, K = (nint)pk, V = (nint)pv, DO = (nint)pdo, DQ = (nint)pdq, DK = (nint)pdk, DV = (nint)pdv;
            Parallel.For(0, s.Sequences * KV, () => (new float[T], new float[T]), (task, _, buf) =>
            {
                int b = task / KV, g = task % KV, n0 = b * T;
                var (p, dp) = buf;
                float* Row(nint basePtr, long row) => (float*)basePtr + row * D;
                for (int j = 0; j < T; j++)
                {
                    new Span<float>(Row(DK, (long)(n0 + j) * KV + g), D).Clear();
                    new Span<float>(Row(DV, (long)(n0 + j) * KV + g), D).Clear();
                }
                for (int t = 0; t < T; t++)
                    for (int h = g * group; h < (g + 1) * group; h++)
                    {
                        long qr = (long)(n0 + t) * H + h;
                        float* qRow = Row(Q, qr), doRow = Row(DO, qr), dqRow = Row(DQ, qr);
                        int first = Attention.FirstKey(t, s.Window), len = t - first + 1;
                        for (int j = first; j <= t; j++)
                        {
                            long kr = (long)(n0 + j) * KV + g;
                            (p[j - first], dp[j - first]) = Dots(qRow, Row(K, kr), doRow, Row(V, kr), D);
                            p[j - first] *= scale;
                        }
                        var ps = p.AsSpan(0, len);
                        float max = TensorPrimitives.Max(ps);
                        TensorPrimitives.Subtract(ps, max, ps);
                        TensorPrimitives.Exp(ps, ps);
                        TensorPrimitives.Divide(ps, TensorPrimitives.Sum(ps), ps);
                        float pdp = TensorPrimitives.Dot(ps, dp.AsSpan(0, len));
                        new Span<float>(dqRow, D).Clear();
                        for (int j = first; j <= t; j++)
                        {
                            long kr = (long)(n0 + j) * KV + g;
                            float pj = p[j - first];
                            Scatter(dqRow, Row(K, kr), Row(DK, kr), qRow, Row(DV, kr), doRow, pj * (dp[j - first] - pdp) * scale, pj, D);
                        }
                    }
                return buf;
            }, _ => { });
        }
    }

    /// <summary>(a·b, c·e) over n floats in one pass.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe (float, float) Dots(float* a, float* b, float* c, float* e, int n)
    {
        Vector<float> s0 = default, s1 = default;
        int i = 0;
        for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
        {
            s0 = Vector.FusedMultiplyAdd(Vector.Load(a + i), Vector.Load(b + i), s0);
            s1 = Vector.FusedMultiplyAdd(Vector.Load(c + i), Vector.Load(e + i), s1);
        }
        float x = Vector.Sum(s0), y = Vector.Sum(s1);
        for (; i < n; i++)
        {
            x += a[i] * b[i];
            y += c[i] * e[i];
        }
        return (x, y);
    }

    /// <summary>dq += ds·k, dk += ds·q, dv += p·dO over n floats in one pass.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Scatter(float* dq, float* k, float* dk, float* q, float* dv, float* dO, float ds, float p, int n)
    {
        var vds = new Vector<float>(ds);
        var vp = new Vector<float>(p);
        int i = 0;
        for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
        {
            Vector.Store(Vector.FusedMultiplyAdd(vds, Vector.Load(k + i), Vector.Load(dq + i)), dq + i);
            Vector.Store(Vector.FusedMultiplyAdd(vds, Vector.Load(q + i), Vector.Load(dk + i)), dk + i);
            Vector.Store(Vector.FusedMultiplyAdd(vp, Vector.Load(dO + i), Vector.Load(dv + i)), dv + i);
        }
        for (; i < n; i++)
        {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
            dv[i] += p * dO[i];
        }
    }
}

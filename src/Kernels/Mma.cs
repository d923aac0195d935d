using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Half = ILGPU.Half;

namespace BitDeltaNative.Kernels;

/// <summary>
/// One warp-level tensor-core product, D = A·Bᵀ + C for A f16 [16, 16], B f16 [8, 16] (rows of B are columns of the
/// product, the way x rows meet W rows in a linear) and C, D f32 [16, 8]: PTX's <c>mma.sync.aligned.m16n8k16.row.col
/// .f32.f16.f16.f32</c> (PTX ISA, "Matrix fragments for mma.m16n8k16"), emitted inline through ILGPU's
/// <see cref="CudaAsm.EmitRef"/>. The building block for tensor-core matmuls (speed issue); this file pins down the
/// fragment layout on the hardware against a scalar twin. Lane l (group g = l / 4, t = l % 4) holds
/// A[g, 2t..2t+1], A[g+8, 2t..2t+1], A[g, 2t+8..2t+9], A[g+8, 2t+8..2t+9] as four f16 pairs, B[g, 2t..2t+1] and
/// B[g, 2t+8..2t+9] as two, and D[g, 2t], D[g, 2t+1], D[g+8, 2t], D[g+8, 2t+1]. Where inline PTX cannot run (ILGPU's
/// CPU accelerator), the same fragments go through shared memory and each lane computes its four sums in f32.
/// </summary>
public static class Mma
{
    /// <summary>The spec: D[m, n] = C[m, n] + Σ_k A[m, k]·B[n, k] in f64.</summary>
    public static void Twin(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> c, Span<float> d)
    {
        for (int m = 0; m < 16; m++)
            for (int n = 0; n < 8; n++)
            {
                double s = c[m * 8 + n];
                for (int k = 0; k < 16; k++) s += (double)a[m * 16 + k] * b[n * 16 + k];
                d[m * 8 + n] = (float)s;
            }
    }

    /// <summary>a f16 [16, 16], b f16 [8, 16], c and d f32 [16, 8], all on one ILGPU device.</summary>
    public static void Run(Tensor a, Tensor b, Tensor c, Tensor d)
    {
        Need.SameDevice(a, b, c, d);
        if (a.DType != DType.F16 || b.DType != DType.F16) throw new ArgumentException($"mma: expected f16 operands, got {a} and {b}");
        Need.Shape("mma a", a, 16, 16);
        Need.Shape("mma b", b, 8, 16);
        Need.Shape("mma c", c, 16, 8);
        Need.Shape("mma d", d, 16, 8);
        Need.F32("mma c", c);
        Need.F32("mma d", d);
        if (!d.Device.IsIlgpu) throw new ArgumentException("mma: a warp-level tensor-core op runs on an ILGPU device");
        d.Device.GroupedKernel<Action<KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>>>(Kernel)(
            new KernelConfig(1, 32), a.View<uint>(), b.View<uint>(), c.View<float>(), d.View<float>());
    }

    static void Kernel(ArrayView<uint> a, ArrayView<uint> b, ArrayView<float> c, ArrayView<float> d)
    {
        var sa = SharedMemory.Allocate<float>(16 * 16);
        var sb = SharedMemory.Allocate<float>(8 * 16);
        int lane = Group.IdxX, g = lane >> 2, t = lane & 3;
        // A and B rows are 8 words (16 halves): word t holds columns 2t and 2t+1.
        uint a0 = a[g * 8 + t], a1 = a[(g + 8) * 8 + t], a2 = a[g * 8 + t + 4], a3 = a[(g + 8) * 8 + t + 4];
        uint b0 = b[g * 8 + t], b1 = b[g * 8 + t + 4];
        float c0 = c[g * 8 + 2 * t], c1 = c[g * 8 + 2 * t + 1], c2 = c[(g + 8) * 8 + 2 * t], c3 = c[(g + 8) * 8 + 2 * t + 1];
        var r = M16N8K16(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, sa, sb, lane);
        d[g * 8 + 2 * t] = r.X;
        d[g * 8 + 2 * t + 1] = r.Y;
        d[(g + 8) * 8 + 2 * t] = r.Z;
        d[(g + 8) * 8 + 2 * t + 1] = r.W;
    }

    public struct Float4
    {
        public float X, Y, Z, W;
    }

    /// <summary>The warp's product on its fragments (see the class comment); every lane of the warp must call it.
    /// <paramref name="sa"/> (256 floats) and <paramref name="sb"/> (128) are shared scratch for the emulation.</summary>
    public static Float4 M16N8K16(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, float c0, float c1, float c2, float c3,
                                  ArrayView<float> sa, ArrayView<float> sb, int lane)
    {
        Float4 r;
        if (CudaAsm.IsSupported)
        {
            Output<float> d0 = default, d1 = default, d2 = default, d3 = default;
            Input<uint> ia0 = a0, ia1 = a1, ia2 = a2, ia3 = a3, ib0 = b0, ib1 = b1;
            Input<float> ic0 = c0, ic1 = c1, ic2 = c2, ic3 = c3;
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};",
                ref d0, ref d1, ref d2, ref d3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1, ref ic0, ref ic1, ref ic2, ref ic3);
            r.X = d0.Value; r.Y = d1.Value; r.Z = d2.Value; r.W = d3.Value;
            return r;
        }
        int g = lane >> 2, t = lane & 3;
        PutPair(sa, g * 16 + 2 * t, a0);
        PutPair(sa, (g + 8) * 16 + 2 * t, a1);
        PutPair(sa, g * 16 + 2 * t + 8, a2);
        PutPair(sa, (g + 8) * 16 + 2 * t + 8, a3);
        PutPair(sb, g * 16 + 2 * t, b0);
        PutPair(sb, g * 16 + 2 * t + 8, b1);
        Group.Barrier();
        r.X = c0 + Dot16(sa, g, sb, 2 * t);
        r.Y = c1 + Dot16(sa, g, sb, 2 * t + 1);
        r.Z = c2 + Dot16(sa, g + 8, sb, 2 * t);
        r.W = c3 + Dot16(sa, g + 8, sb, 2 * t + 1);
        Group.Barrier();
        return r;
    }

    /// <summary>
    /// <see cref="M16N8K16"/> with C and D as one <see cref="Float4"/>, on f16 or (<paramref name="bf16"/>) bf16 operands
    /// (<c>mma…f32.bf16.bf16.f32</c>, the same fragment layout), and emulated without shared memory: lane (g, t) takes
    /// rows g and g + 8 of A from lanes 4g … 4g + 3 and B's rows 2t and 2t + 1 from lanes 8t … 8t + 7 by shuffles, and
    /// sums its four outputs in f32. So a kernel whose shared memory holds other things needs no scratch for it.
    /// </summary>
    public static Float4 M16N8K16Shuffled(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, Float4 c, int lane, bool bf16)
    {
        if (CudaAsm.IsSupported) return M16N8K16Asm(a0, a1, a2, a3, b0, b1, c, bf16);
        Float4 r;
        int g = lane >> 2, t = lane & 3;
        r = c;
        for (int j = 0; j < 4; j++)
        {
            // lane 4g + j holds A[g, 2j..2j+1] (a0), A[g+8, ..] (a1), A[g, 2j+8..] (a2), A[g+8, 2j+8..] (a3); B likewise
            uint ag = Warp.Shuffle(a0, 4 * g + j), ah = Warp.Shuffle(a1, 4 * g + j);
            uint ag8 = Warp.Shuffle(a2, 4 * g + j), ah8 = Warp.Shuffle(a3, 4 * g + j);
            uint bn = Warp.Shuffle(b0, 8 * t + j), bn8 = Warp.Shuffle(b1, 8 * t + j);
            uint bm = Warp.Shuffle(b0, 8 * t + 4 + j), bm8 = Warp.Shuffle(b1, 8 * t + 4 + j);
            r.X += Dot2(ag, bn, bf16) + Dot2(ag8, bn8, bf16);
            r.Y += Dot2(ag, bm, bf16) + Dot2(ag8, bm8, bf16);
            r.Z += Dot2(ah, bn, bf16) + Dot2(ah8, bn8, bf16);
            r.W += Dot2(ah, bm, bf16) + Dot2(ah8, bm8, bf16);
        }
        return r;
    }

    /// <summary>The product instruction of <see cref="M16N8K16Shuffled"/> alone, for kernels whose emulated path does its
    /// products another way (GemmHalf's, a step's fragments at once): call it only where <see cref="CudaAsm.IsSupported"/>;
    /// elsewhere it returns C. The kernel's PTX then carries no emulation it never runs.</summary>
    public static Float4 M16N8K16Asm(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, Float4 c, bool bf16)
    {
        if (!CudaAsm.IsSupported) return c;
        Output<float> d0 = default, d1 = default, d2 = default, d3 = default;
        Input<uint> ia0 = a0, ia1 = a1, ia2 = a2, ia3 = a3, ib0 = b0, ib1 = b1;
        Input<float> ic0 = c.X, ic1 = c.Y, ic2 = c.Z, ic3 = c.W;
        if (bf16)
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};",
                ref d0, ref d1, ref d2, ref d3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1, ref ic0, ref ic1, ref ic2, ref ic3);
        else
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};",
                ref d0, ref d1, ref d2, ref d3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1, ref ic0, ref ic1, ref ic2, ref ic3);
        Float4 r;
        r.X = d0.Value; r.Y = d1.Value; r.Z = d2.Value; r.W = d3.Value;
        return r;
    }

    /// <summary>One m16n8k16 product emulated from fragments the warp's lanes put in scratch, <paramref name="words"/> words
    /// a lane: A's four words at word <paramref name="a"/> of each lane, B's two at word <paramref name="b"/>. By mma's
    /// layout (<see cref="M16N8K16"/>), lane (g, t) sums rows g, g + 8 × columns 2t, 2t + 1 from lanes 4g + j (A) and
    /// 8t + j, 8t + 4 + j (B), in f32, in k order. For kernels that emulate a batch of products behind one barrier
    /// (GemmHalf.cs, AttentionMma.cs).</summary>
    internal static Float4 EmuProduct(Float4 c, ArrayView<uint> s, int words, int a, int b, int lane, bool bf16)
    {
        int g = lane >> 2, t = lane & 3;
        for (int j = 0; j < 4; j++)
        {
            int la = (4 * g + j) * words + a, ln = (8 * t + j) * words + b, lm = (8 * t + 4 + j) * words + b;
            c.X += Dot2(s[la], s[ln], bf16) + Dot2(s[la + 2], s[ln + 1], bf16);
            c.Y += Dot2(s[la], s[lm], bf16) + Dot2(s[la + 2], s[lm + 1], bf16);
            c.Z += Dot2(s[la + 1], s[ln], bf16) + Dot2(s[la + 3], s[ln + 1], bf16);
            c.W += Dot2(s[la + 1], s[lm], bf16) + Dot2(s[la + 3], s[lm + 1], bf16);
        }
        return c;
    }

    /// <summary>The two products of a pair of halves, summed in f32 (exact products: 11 or 8 bits times as many).</summary>
    internal static float Dot2(uint p, uint q, bool bf16) => HalfOf(p, bf16) * HalfOf(q, bf16) + HalfOf(p >> 16, bf16) * HalfOf(q >> 16, bf16);

    static float HalfOf(uint bits, bool bf16) =>
        bf16 ? Interop.IntAsFloat((bits & 0xFFFFu) << 16) : (float)Interop.IntAsFloat((ushort)bits);

    /// <summary>Two f32 inputs as f16 pairs for two products that together carry them to f32 accuracy: hi = f16(x),
    /// lo = f16(x − hi), so x = hi + lo to 2⁻²² relative (for |x| within f16's range), and an f16 weight times each, summed
    /// in f32, gives the f32 product (the tensor-core linears' x operand).</summary>
    public static (uint Hi, uint Lo) SplitPair(float a, float b)
    {
        Half ha = (Half)a, hb = (Half)b;
        Half la = (Half)(a - (float)ha), lb = (Half)(b - (float)hb);
        return (Interop.FloatAsInt(ha) | (uint)Interop.FloatAsInt(hb) << 16, Interop.FloatAsInt(la) | (uint)Interop.FloatAsInt(lb) << 16);
    }

    static void PutPair(ArrayView<float> s, int at, uint pair)
    {
        s[at] = (float)Interop.IntAsFloat((ushort)pair);
        s[at + 1] = (float)Interop.IntAsFloat((ushort)(pair >> 16));
    }

    static float Dot16(ArrayView<float> sa, int m, ArrayView<float> sb, int n)
    {
        float s = 0;
        for (int k = 0; k < 16; k++) s += sa[m * 16 + k] * sb[n * 16 + k];
        return s;
    }

    public struct Int4
    {
        public int X, Y, Z, W;
    }

    /// <summary>The spec of the binary product: D[m, n] = C[m, n] + popc(A[m] ∧ B[n]) over 256 bits, A [16, 8 words],
    /// B [8, 8 words], C and D [16, 8].</summary>
    public static void TwinB1(ReadOnlySpan<uint> a, ReadOnlySpan<uint> b, ReadOnlySpan<int> c, Span<int> d)
    {
        for (int m = 0; m < 16; m++)
            for (int n = 0; n < 8; n++)
            {
                int s = c[m * 8 + n];
                for (int w = 0; w < 8; w++) s += System.Numerics.BitOperations.PopCount(a[m * 8 + w] & b[n * 8 + w]);
                d[m * 8 + n] = s;
            }
    }

    /// <summary>
    /// The binary tensor-core product, D = popc(A ∧ Bᵀ) + C for A b1 [16, 256], B b1 [8, 256] (rows of B are columns of
    /// the product) and C, D s32 [16, 8]: PTX's <c>mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc</c>. A row
    /// is 8 words; lane (g, t) holds words t and t + 4 of A's rows g (a0, a2) and g + 8 (a1, a3) and of B's row g (b0,
    /// b1), and D as <see cref="M16N8K16"/> does. Which bit of a word is which k does not matter to a popcount as long
    /// as A and B agree. Where inline PTX cannot run, the lanes trade fragments by shuffles (no shared memory, so warps
    /// need not call it together).
    /// </summary>
    public static Int4 M16N8K256And(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, int c0, int c1, int c2, int c3, int lane)
    {
        Int4 r;
        if (CudaAsm.IsSupported)
        {
            Output<int> d0 = default, d1 = default, d2 = default, d3 = default;
            Input<uint> ia0 = a0, ia1 = a1, ia2 = a2, ia3 = a3, ib0 = b0, ib1 = b1;
            Input<int> ic0 = c0, ic1 = c1, ic2 = c2, ic3 = c3;
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};",
                ref d0, ref d1, ref d2, ref d3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1, ref ic0, ref ic1, ref ic2, ref ic3);
            r.X = d0.Value; r.Y = d1.Value; r.Z = d2.Value; r.W = d3.Value;
            return r;
        }
        int g = lane >> 2, t = lane & 3;
        r.X = c0; r.Y = c1; r.Z = c2; r.W = c3;
        for (int j = 0; j < 4; j++)
        {
            // Row g's words j and j + 4 sit in lane 4g + j; B's row n in lane 4n + j.
            uint ag = Warp.Shuffle(a0, 4 * g + j), ag4 = Warp.Shuffle(a2, 4 * g + j);
            uint ah = Warp.Shuffle(a1, 4 * g + j), ah4 = Warp.Shuffle(a3, 4 * g + j);
            uint bn = Warp.Shuffle(b0, 8 * t + j), bn4 = Warp.Shuffle(b1, 8 * t + j);
            uint bm = Warp.Shuffle(b0, 8 * t + 4 + j), bm4 = Warp.Shuffle(b1, 8 * t + 4 + j);
            r.X += IntrinsicMath.BitOperations.PopCount(ag & bn) + IntrinsicMath.BitOperations.PopCount(ag4 & bn4);
            r.Y += IntrinsicMath.BitOperations.PopCount(ag & bm) + IntrinsicMath.BitOperations.PopCount(ag4 & bm4);
            r.Z += IntrinsicMath.BitOperations.PopCount(ah & bn) + IntrinsicMath.BitOperations.PopCount(ah4 & bn4);
            r.W += IntrinsicMath.BitOperations.PopCount(ah & bm) + IntrinsicMath.BitOperations.PopCount(ah4 & bm4);
        }
        return r;
    }

    /// <summary>a [16·8] and b [8·8] words of bits, c and d [16·8] counts, all I32 on one ILGPU device.</summary>
    public static void RunB1(Tensor a, Tensor b, Tensor c, Tensor d)
    {
        Need.SameDevice(a, b, c, d);
        if (!d.Device.IsIlgpu) throw new ArgumentException("mma b1: a warp-level tensor-core op runs on an ILGPU device");
        foreach (var (what, t, n) in new[] { ("a", a, 128), ("b", b, 64), ("c", c, 128), ("d", d, 128) })
            if (t.DType != DType.I32 || t.ElementCount != n) throw new ArgumentException($"mma b1 {what}: expected {n} I32 words, got {t}");
        d.Device.GroupedKernel<Action<KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<int>, ArrayView<int>>>(KernelB1)(
            new KernelConfig(1, 32), a.View<uint>(), b.View<uint>(), c.View<int>(), d.View<int>());
    }

    static void KernelB1(ArrayView<uint> a, ArrayView<uint> b, ArrayView<int> c, ArrayView<int> d)
    {
        int lane = Group.IdxX, g = lane >> 2, t = lane & 3;
        var r = M16N8K256And(a[g * 8 + t], a[(g + 8) * 8 + t], a[g * 8 + t + 4], a[(g + 8) * 8 + t + 4], b[g * 8 + t], b[g * 8 + t + 4],
                             c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1], lane);
        d[g * 8 + 2 * t] = r.X;
        d[g * 8 + 2 * t + 1] = r.Y;
        d[(g + 8) * 8 + 2 * t] = r.Z;
        d[(g + 8) * 8 + 2 * t + 1] = r.W;
    }

    public static AuditCase CaseB1 => new("mma m16n8k256 b1", 0, (dev, rng) =>
    {
        var a = Enumerable.Range(0, 128).Select(_ => (uint)rng.NextInt64(1L << 32)).ToArray();
        var b = Enumerable.Range(0, 64).Select(_ => (uint)rng.NextInt64(1L << 32)).ToArray();
        var c = Enumerable.Range(0, 128).Select(_ => rng.Next(-1000, 1000)).ToArray();
        using var ta = Tensor.From(a, [128], dev, DType.I32);
        using var tb = Tensor.From(b, [64], dev, DType.I32);
        using var tc = Tensor.From(c, [128], dev);
        using var td = Tensor.From(new int[128], [128], dev);
        RunB1(ta, tb, tc, td);
        var want = new int[128];
        TwinB1(a, b, c, want);
        var got = td.ToArray<int>();
        int wrong = Enumerable.Range(0, 128).Count(i => got[i] != want[i]);
        return (wrong, CudaAsm.IsSupported || dev.Kind == DeviceKind.Cuda ? "tensor cores" : "emulated");
    });

    /// <summary><see cref="M16N8K16Shuffled"/> on f16 or bf16 operands, one warp, against the twin.</summary>
    public static AuditCase CaseShuffled => new("mma m16n8k16 f16/bf16", Check.F32Bound, (dev, rng) =>
    {
        var dt = rng.Next(2) == 0 ? DType.F16 : DType.BF16;
        var a = Check.Rounded(Check.Values(rng, 256), dt);
        var b = Check.Rounded(Check.Values(rng, 128), dt);
        var c = Check.Values(rng, 128, 2f);
        using var ta = Tensor.From(a, [16, 16], dev, dt);
        using var tb = Tensor.From(b, [8, 16], dev, dt);
        using var tc = Tensor.From(c, [16, 8], dev);
        using var td = Check.Poisoned([16, 8], DType.F32, dev);
        if (!dev.IsIlgpu) throw new ArgumentException("mma: a warp-level tensor-core op runs on an ILGPU device");
        dev.GroupedKernel<Action<KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, int>>(KernelShuffled)(
            new KernelConfig(1, 32), ta.View<uint>(), tb.View<uint>(), tc.View<float>(), td.View<float>(), dt == DType.BF16 ? 1 : 0);
        var want = new float[128];
        Twin(a, b, c, want);
        return (Check.RelativeError(td.ToFloatArray(), want), $"{dt} {(CudaAsm.IsSupported || dev.Kind == DeviceKind.Cuda ? "tensor cores" : "emulated")}");
    });

    static void KernelShuffled(ArrayView<uint> a, ArrayView<uint> b, ArrayView<float> c, ArrayView<float> d, int bf16)
    {
        int lane = Group.IdxX, g = lane >> 2, t = lane & 3;
        Float4 acc;
        acc.X = c[g * 8 + 2 * t]; acc.Y = c[g * 8 + 2 * t + 1]; acc.Z = c[(g + 8) * 8 + 2 * t]; acc.W = c[(g + 8) * 8 + 2 * t + 1];
        var r = M16N8K16Shuffled(a[g * 8 + t], a[(g + 8) * 8 + t], a[g * 8 + t + 4], a[(g + 8) * 8 + t + 4], b[g * 8 + t], b[g * 8 + t + 4],
                                 acc, lane, bf16 != 0);
        d[g * 8 + 2 * t] = r.X;
        d[g * 8 + 2 * t + 1] = r.Y;
        d[(g + 8) * 8 + 2 * t] = r.Z;
        d[(g + 8) * 8 + 2 * t + 1] = r.W;
    }

    public static AuditCase Case => new("mma m16n8k16", Check.F32Bound, (dev, rng) =>
    {
        var a = Check.Rounded(Check.Values(rng, 256), DType.F16);
        var b = Check.Rounded(Check.Values(rng, 128), DType.F16);
        var c = Check.Values(rng, 128, 2f);
        using var ta = Tensor.From(a, [16, 16], dev, DType.F16);
        using var tb = Tensor.From(b, [8, 16], dev, DType.F16);
        using var tc = Tensor.From(c, [16, 8], dev);
        using var td = Check.Poisoned([16, 8], DType.F32, dev);
        Run(ta, tb, tc, td);
        var want = new float[128];
        Twin(a, b, c, want);
        return (Check.RelativeError(td.ToFloatArray(), want), CudaAsm.IsSupported || dev.Kind == DeviceKind.Cuda ? "tensor cores" : "emulated");
    });
}

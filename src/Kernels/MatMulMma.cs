using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.Mma;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The prefill GEMM on tensor cores, y (+)= x·Wᵀ for an f16 W [out, in] and f32 x [rows, in] (speed issue: the FMA
/// GEMM ran a 7B prefill at ~11 TFLOP/s). Each f32 input is split into f16 hi + lo (<see cref="Mma.SplitPair"/>) and both
/// halves meet the f16 weight in <c>mma.m16n8k16</c> with f32 accumulation, so the result keeps f32 accuracy (the twin's
/// bound, 1e-5), as the decode forms do; that costs two products where plain f16 activations would take one.
///
/// A block of 4 warps owns a 64 × 128 tile of y (64 rows of x, 128 outputs) and walks K in steps of 32. Each step the block
/// stages x's 64 × 32 (split to hi and lo as it is stored) and W's 128 × 32 in shared memory, rows padded to 40 halves so
/// that the fragment loads of a warp (8 rows × 4 words) fall in 32 different banks. Two stages alternate: the next step's
/// global loads are issued before this step's products and stored after them, one barrier a step. Warp w computes rows
/// 32·(w mod 2) … +32 and outputs 64·(w div 2) … +64: 2 × 8 tiles of 16 × 8, whose hi and lo products are interleaved
/// so that no accumulator waits on the product just before it. Blocks that share a tile of W are neighbours in the
/// grid, so W comes from DRAM about once and x (small) from L2. Rows, outputs and K past the ends load as zeros and
/// are not stored; K must be a multiple of 8 and both tensors 16-byte aligned (<see cref="TakesMmaGemm"/>).
/// </summary>
public static partial class MatMul
{
    /// <summary>Take the tensor-core GEMM where it applies (the bench turns it off to compare).</summary>
    public static bool UseMmaGemm { get; set; } = true;

    const int MmaBm = 64, MmaBn = 128, MmaBk = 32, MmaWarps = 4;

    /// <summary>Shared row pitch in 32-bit words (f16 pairs): 16 words of a 32-wide step, padded to 20 (see the class comment).</summary>
    const int MmaPitch = 20;

    const int XStage = MmaBm * MmaPitch, WStage = MmaBn * MmaPitch, Stage = 2 * XStage + WStage;

    /// <summary>Whether <see cref="Gemm"/>'s work goes to the tensor cores: an f16 W, in a multiple of 8, 16-byte rows.</summary>
    public static bool TakesMmaGemm(Tensor x, Tensor w, int inDim) =>
        UseMmaGemm && x.Device.IsIlgpu && w.DType == DType.F16 && inDim % 8 == 0 && Aligned16(x) && Aligned16(w);

    static void GemmMma(Tensor x, Tensor w, Tensor y, bool accumulate, int rows, int inDim, int outDim) =>
        GemmMmaLaunch(x, w.View<Vec16>(), y.View<uint>(), y.View<float>(), -1, 1f, 0, y, accumulate ? 1 : 0, rows, inDim, outDim);

    /// <summary>Whether <see cref="GemmSigns"/> takes x: many rows (the GEMM's range), in a multiple of 8, 16-byte rows.</summary>
    public static bool TakesMmaSigns(Tensor x, int rows, int inDim) =>
        UseMmaGemm && x.Device.IsIlgpu && rows > ChunkedGemvMaxRows && inDim % 8 == 0 && Aligned16(x);

    /// <summary>
    /// y += α·x·Sᵀ on tensor cores, the BitDelta term of a compressed linear for many rows (BitLinear.cs; TenantLinear's
    /// prefill form): the same kernel as the GEMM, with W's tile made from the signs as it is staged (±1 is exact in f16),
    /// and the sums scaled by α as they are added to y. <paramref name="signs"/> holds Sign1 rows [out, in] from word
    /// <paramref name="slotWords"/> on; α is <paramref name="scales"/>[<paramref name="slot"/>], or
    /// <paramref name="alpha"/> for slot −1. Callers check <see cref="TakesMmaSigns"/>.
    /// </summary>
    internal static void GemmSigns(Tensor x, ArrayView<uint> signs, long slotWords, ArrayView<float> scales, int slot, float alpha, Tensor y,
                                   int rows, int inDim, int outDim) =>
        GemmMmaLaunch(x, x.View<Vec16>(), signs, scales, slot, alpha, slotWords, y, 1 | 2, rows, inDim, outDim);

    static void GemmMmaLaunch(Tensor x, ArrayView<Vec16> w, ArrayView<uint> signs, ArrayView<float> scales, int slot, float alpha, long slotWords,
                              Tensor y, int flags, int rows, int inDim, int outDim)
    {
        if (rows == 0 || outDim == 0) return;
        int mTiles = (rows + MmaBm - 1) / MmaBm, nTiles = (outDim + MmaBn - 1) / MmaBn;
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, int, int, int, int,
                                      int, float, long>>(GemmMmaKernel)(
            new KernelConfig(mTiles * nTiles, MmaWarps * 32), x.View<Vec16>(), w, signs, scales, y.View<float>(), rows, outDim, inDim, flags,
            slot, alpha, slotWords);
    }

    /// <summary>One warp's accumulators for one 16-row tile: its 8 tiles of 8 outputs.</summary>
    struct MmaRow
    {
        public Float4 N0, N1, N2, N3, N4, N5, N6, N7;
    }

    /// <summary>The B fragments (W) of one 16-wide k step for the warp's 8 output tiles: words t and t + 4 of row g.</summary>
    struct MmaB
    {
        public uint P0, P1, P2, P3, P4, P5, P6, P7, Q0, Q1, Q2, Q3, Q4, Q5, Q6, Q7;
    }

    /// <summary>The A fragments (x) of one 16-row tile and 16-wide k step, hi or lo.</summary>
    struct MmaA
    {
        public uint A0, A1, A2, A3;
    }

    /// <summary>What a thread carries from global memory to the next stage: 4 × 4 inputs of x and 4 × 8 weights.</summary>
    struct MmaLoads
    {
        public Vec16 X0, X1, X2, X3, W0, W1, W2, W3;
    }

    /// <summary>flags: bit 0 accumulate into y; bit 1 W's tile from the signs (<see cref="GemmSigns"/>; then w16 is not read).</summary>
    static void GemmMmaKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, ArrayView<uint> signs, ArrayView<float> scales, ArrayView<float> y,
                              int m, int n, int k, int flags, int slot, float alpha, long slotWords)
    {
        var sh = SharedMemory.Allocate<uint>(2 * Stage);
        var emu = SharedMemory.Allocate<float>(MmaWarps * 384);   // Mma's scratch where it is emulated
        var xv = x16.AsAligned(16);
        var wv = w16.AsAligned(16);
        int lane = Warp.LaneIdx, wi = Warp.WarpIdx, g = lane >> 2, t = lane & 3;
        var sa = emu.SubView(wi * 384, 256);
        var sb = emu.SubView(wi * 384 + 256, 128);
        int mTiles = (m + MmaBm - 1) / MmaBm;
        int m0 = Grid.IdxX % mTiles * MmaBm, n0 = Grid.IdxX / mTiles * MmaBn;
        int wm = (wi & 1) * 32, wn = (wi >> 1) * 64;
        int steps = (k + MmaBk - 1) / MmaBk;
        bool fromSigns = (flags & 2) != 0;
        var src = new MmaSource { Signs = signs, SlotWords = slotWords, Words = (k + 31) / 32, FromSigns = fromSigns };
        float scale = fromSigns ? (slot >= 0 ? scales[slot] : alpha) : 1f;

        var loads = MmaLoad(xv, wv, src, m0, n0, 0, m, n, k);
        MmaStore(sh, 0, loads, fromSigns);
        Group.Barrier();
        MmaRow r0 = default, r1 = default;
        for (int s = 0; s < steps; s++)
        {
            bool next = s + 1 < steps;
            if (next) loads = MmaLoad(xv, wv, src, m0, n0, (s + 1) * MmaBk, m, n, k);
            int st = (s & 1) * Stage;
            for (int h = 0; h < 2; h++)
            {
                int kw = h * 8 + t;   // the lane's word of this 16-wide half of the step
                var b = MmaLoadB(sh, st + 2 * XStage + (wn + g) * MmaPitch + kw);
                int xa = st + (wm + g) * MmaPitch + kw;
                var hi0 = MmaLoadA(sh, xa);
                var hi1 = MmaLoadA(sh, xa + 16 * MmaPitch);
                var lo0 = MmaLoadA(sh, xa + XStage);
                var lo1 = MmaLoadA(sh, xa + XStage + 16 * MmaPitch);
                r0 = MmaTile(r0, hi0, b, sa, sb, lane);
                r1 = MmaTile(r1, hi1, b, sa, sb, lane);
                r0 = MmaTile(r0, lo0, b, sa, sb, lane);
                r1 = MmaTile(r1, lo1, b, sa, sb, lane);
            }
            if (next) MmaStore(sh, ((s + 1) & 1) * Stage, loads, fromSigns);
            Group.Barrier();
        }
        int accumulate = flags & 1;
        MmaPut(y, r0, m0 + wm + g, n0 + wn + 2 * t, m, n, scale, accumulate);
        MmaPut(y, r1, m0 + wm + 16 + g, n0 + wn + 2 * t, m, n, scale, accumulate);
    }

    /// <summary>Where W's tile comes from: W itself, or the signs of one slot (rows of <see cref="Words"/> words).</summary>
    struct MmaSource
    {
        public ArrayView<uint> Signs;
        public long SlotWords;
        public int Words;
        public bool FromSigns;
    }

    /// <summary>Thread i's share of a step's tiles: x units i + 128j (row v / 8, inputs 4·(v mod 8)) and W units i + 128j
    /// (row v / 4, inputs 8·(v mod 4)), j = 0 … 3, or from signs the step's word of row i (in W0.X); zeros past the ends.</summary>
    static MmaLoads MmaLoad(ArrayView<Vec16> x, ArrayView<Vec16> w, MmaSource src, int m0, int n0, int k0, int m, int n, int k)
    {
        int i = Group.IdxX;
        MmaLoads l = default;
        l.X0 = MmaX(x, m0, k0, i, m, k);
        l.X1 = MmaX(x, m0, k0, i + 128, m, k);
        l.X2 = MmaX(x, m0, k0, i + 256, m, k);
        l.X3 = MmaX(x, m0, k0, i + 384, m, k);
        if (src.FromSigns)
        {
            // a step of 32 inputs is one sign word a row; bits past in are multiplied by x's zeros
            if (n0 + i < n) l.W0.X = src.Signs[src.SlotWords + (long)(n0 + i) * src.Words + k0 / 32];
            return l;
        }
        l.W0 = MmaW(w, n0, k0, i, n, k);
        l.W1 = MmaW(w, n0, k0, i + 128, n, k);
        l.W2 = MmaW(w, n0, k0, i + 256, n, k);
        l.W3 = MmaW(w, n0, k0, i + 384, n, k);
        return l;
    }

    static Vec16 MmaX(ArrayView<Vec16> x, int m0, int k0, int v, int m, int k)
    {
        int row = m0 + v / 8, col = k0 + v % 8 * 4;
        return row < m && col < k ? x[(long)row * (k / 4) + col / 4] : default;
    }

    static Vec16 MmaW(ArrayView<Vec16> w, int n0, int k0, int v, int n, int k)
    {
        int row = n0 + v / 4, col = k0 + v % 4 * 8;
        return row < n && col < k ? w[(long)row * (k / 8) + col / 8] : default;
    }

    /// <summary>A thread's loads into stage <paramref name="st"/>: x split into hi and lo pairs, W as it is, or row i's sign
    /// word as 16 pairs of ±1.</summary>
    static void MmaStore(ArrayView<uint> sh, int st, MmaLoads l, bool fromSigns)
    {
        int i = Group.IdxX;
        MmaStoreX(sh, st, i, l.X0);
        MmaStoreX(sh, st, i + 128, l.X1);
        MmaStoreX(sh, st, i + 256, l.X2);
        MmaStoreX(sh, st, i + 384, l.X3);
        if (fromSigns)
        {
            int at = st + 2 * XStage + i * MmaPitch;
            for (int q = 0; q < 16; q++) sh[at + q] = SignPair(l.W0.X >> (2 * q));
            return;
        }
        MmaStoreW(sh, st, i, l.W0);
        MmaStoreW(sh, st, i + 128, l.W1);
        MmaStoreW(sh, st, i + 256, l.W2);
        MmaStoreW(sh, st, i + 384, l.W3);
    }

    static void MmaStoreX(ArrayView<uint> sh, int st, int v, Vec16 q)
    {
        int at = st + v / 8 * MmaPitch + v % 8 * 2;
        var (h0, l0) = SplitPair(Interop.IntAsFloat(q.X), Interop.IntAsFloat(q.Y));
        var (h1, l1) = SplitPair(Interop.IntAsFloat(q.Z), Interop.IntAsFloat(q.W));
        sh[at] = h0;
        sh[at + 1] = h1;
        sh[at + XStage] = l0;
        sh[at + XStage + 1] = l1;
    }

    /// <summary>Bits 0 and 1 of <paramref name="bits"/> as an f16 pair: 0x3C00 (+1) for a set bit, 0xBC00 (−1) otherwise.</summary>
    static uint SignPair(uint bits) => 0xBC00BC00u ^ (bits & 1u) << 15 ^ (bits & 2u) << 30;

    static void MmaStoreW(ArrayView<uint> sh, int st, int v, Vec16 q)
    {
        int at = st + 2 * XStage + v / 4 * MmaPitch + v % 4 * 4;
        sh[at] = q.X;
        sh[at + 1] = q.Y;
        sh[at + 2] = q.Z;
        sh[at + 3] = q.W;
    }

    /// <summary>Rows g and g + 8 of a 16-row tile, words kw and kw + 4 (A[g, 2t..], A[g+8, 2t..], A[g, 2t+8..], A[g+8, 2t+8..]).</summary>
    static MmaA MmaLoadA(ArrayView<uint> sh, int at) => new()
    {
        A0 = sh[at], A1 = sh[at + 8 * MmaPitch], A2 = sh[at + 4], A3 = sh[at + 8 * MmaPitch + 4],
    };

    /// <summary>Row g of each of the warp's 8 output tiles (8 rows of W apart), words kw and kw + 4.</summary>
    static MmaB MmaLoadB(ArrayView<uint> sh, int at)
    {
        const int d = 8 * MmaPitch;
        MmaB b;
        b.P0 = sh[at]; b.Q0 = sh[at + 4];
        b.P1 = sh[at + d]; b.Q1 = sh[at + d + 4];
        b.P2 = sh[at + 2 * d]; b.Q2 = sh[at + 2 * d + 4];
        b.P3 = sh[at + 3 * d]; b.Q3 = sh[at + 3 * d + 4];
        b.P4 = sh[at + 4 * d]; b.Q4 = sh[at + 4 * d + 4];
        b.P5 = sh[at + 5 * d]; b.Q5 = sh[at + 5 * d + 4];
        b.P6 = sh[at + 6 * d]; b.Q6 = sh[at + 6 * d + 4];
        b.P7 = sh[at + 7 * d]; b.Q7 = sh[at + 7 * d + 4];
        return b;
    }

    /// <summary>One 16-row tile's products with the 8 output tiles, for one 16-wide k step.</summary>
    static MmaRow MmaTile(MmaRow r, MmaA a, MmaB b, ArrayView<float> sa, ArrayView<float> sb, int lane)
    {
        r.N0 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P0, b.Q0, r.N0.X, r.N0.Y, r.N0.Z, r.N0.W, sa, sb, lane);
        r.N1 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P1, b.Q1, r.N1.X, r.N1.Y, r.N1.Z, r.N1.W, sa, sb, lane);
        r.N2 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P2, b.Q2, r.N2.X, r.N2.Y, r.N2.Z, r.N2.W, sa, sb, lane);
        r.N3 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P3, b.Q3, r.N3.X, r.N3.Y, r.N3.Z, r.N3.W, sa, sb, lane);
        r.N4 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P4, b.Q4, r.N4.X, r.N4.Y, r.N4.Z, r.N4.W, sa, sb, lane);
        r.N5 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P5, b.Q5, r.N5.X, r.N5.Y, r.N5.Z, r.N5.W, sa, sb, lane);
        r.N6 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P6, b.Q6, r.N6.X, r.N6.Y, r.N6.Z, r.N6.W, sa, sb, lane);
        r.N7 = M16N8K16(a.A0, a.A1, a.A2, a.A3, b.P7, b.Q7, r.N7.X, r.N7.Y, r.N7.Z, r.N7.W, sa, sb, lane);
        return r;
    }

    /// <summary>A 16-row tile's sums: D[g, 2t], D[g, 2t+1], D[g+8, 2t], D[g+8, 2t+1] of each output tile, at row
    /// <paramref name="row"/> (= first row + g) and output <paramref name="col"/> (= first output + 2t) + 8j.</summary>
    static void MmaPut(ArrayView<float> y, MmaRow r, int row, int col, int m, int n, float scale, int accumulate)
    {
        MmaPut4(y, r.N0, row, col, m, n, scale, accumulate);
        MmaPut4(y, r.N1, row, col + 8, m, n, scale, accumulate);
        MmaPut4(y, r.N2, row, col + 16, m, n, scale, accumulate);
        MmaPut4(y, r.N3, row, col + 24, m, n, scale, accumulate);
        MmaPut4(y, r.N4, row, col + 32, m, n, scale, accumulate);
        MmaPut4(y, r.N5, row, col + 40, m, n, scale, accumulate);
        MmaPut4(y, r.N6, row, col + 48, m, n, scale, accumulate);
        MmaPut4(y, r.N7, row, col + 56, m, n, scale, accumulate);
    }

    /// <summary>The four sums of one tile, times <paramref name="scale"/> (1 for W, α for the signs).</summary>
    static void MmaPut4(ArrayView<float> y, Float4 d, int row, int col, int m, int n, float scale, int accumulate)
    {
        if (row < m)
        {
            if (col < n) Put(y, (long)row * n + col, scale * d.X, accumulate);
            if (col + 1 < n) Put(y, (long)row * n + col + 1, scale * d.Y, accumulate);
        }
        if (row + 8 < m)
        {
            if (col < n) Put(y, (long)(row + 8) * n + col, scale * d.Z, accumulate);
            if (col + 1 < n) Put(y, (long)(row + 8) * n + col + 1, scale * d.W, accumulate);
        }
    }
}

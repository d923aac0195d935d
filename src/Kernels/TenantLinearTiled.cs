using ILGPU;
using ILGPU.Runtime;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The decode form for 9 to 32 rows at a time (16-byte path). The one-warp-per-output kernel re-reads every row of x
/// for every output: at 32 rows its warps' working set (32 × 16 KB at in = 4096) does not stay in L1, so each output
/// pulls all of x from L2, 2 GB per 4096×4096 matrix (bench/NOTES.md). Here a block of 8 warps (8 outputs) stages x
/// in shared memory one K-tile of 256 inputs at a time, so x comes from L2 once per block, and each warp streams its
/// output's W (the next tile's chunk in flight while it works on this one) and folds each row's tenant signs into
/// the weights as the one-output kernel does. Same sums as that kernel (one 8-weight chunk per lane per tile, rows
/// summed in the same order), so the same twin and bound.
/// </summary>
public static partial class TenantLinear
{
    const int TiledWarps = 8, TiledRows = 32;

    /// <summary>Rows 9 … 32 of the decode form (more are taken 32 at a time).</summary>
    static void DecodeTiled(Tensor x, Tensor w, Tensor signs, Tensor scales, Tensor slots, Tensor list, Tensor y, bool accumulate)
    {
        int outDim = w.Dim(0), inDim = w.Dim(1), listed = (int)list.ElementCount;
        for (int first = 0; first < listed; first += TiledRows)
            y.Device.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, int, ArrayView<Vec16>, ArrayView<uint>, ArrayView<float>,
                                          ArrayView<int>, ArrayView<int>, ArrayView<float>, int, int, int, int, int>>(TiledKernel)(
                new KernelConfig((outDim + TiledWarps - 1) / TiledWarps, TiledWarps * 32),
                w.View<Vec16>(), Elem.Code(w.DType), x.View<Vec16>(), signs.View<uint>(), scales.View<float>(), slots.View<int>(), list.View<int>(),
                y.View<float>(), first, Math.Min(TiledRows, listed - first), inDim, outDim, accumulate ? 1 : 0);
    }

    /// <summary>What a lane carries across the rows of one chunk: the partial sums of the 32 rows, the weights folded
    /// for the last tenant seen and that tenant.</summary>
    struct Tiled
    {
        public Acc8 A0, A1, A2, A3;
        public W8 E;
        public int Prev;
    }

    static void TiledKernel(ArrayView<Vec16> w16, int code, ArrayView<Vec16> x16, ArrayView<uint> signs, ArrayView<float> scales,
                            ArrayView<int> slots, ArrayView<int> list, ArrayView<float> y, int first, int n, int inDim, int outDim, int accumulate)
    {
        // x tile: row r's 16-byte unit u at r·64 + (u % 2)·32 + u / 2, so lane l reads its chunk's two halves at l and
        // 32 + l: two 512-byte runs, no bank conflicts.
        var xs = SharedMemory.Allocate<Vec16>(TiledRows * 64);
        var rowX = SharedMemory.Allocate<int>(TiledRows);
        var rowT = SharedMemory.Allocate<int>(TiledRows);
        var rowA = SharedMemory.Allocate<float>(TiledRows);
        var w16a = w16.AsAligned(16);
        var x16a = x16.AsAligned(16);
        int t = Group.IdxX, lane = Warp.LaneIdx;
        if (t < n)
        {
            int r = list[first + t];
            int s = slots[r];
            rowX[t] = r;
            rowT[t] = s;
            rowA[t] = s >= 0 ? scales[s] : 0f;
        }
        Group.Barrier();
        int o = Grid.IdxX * TiledWarps + Warp.WarpIdx;
        bool live = o < outDim;   // warps past the last output still stage x and meet every barrier
        int chunks = inDim / 8, words = (inDim + 31) / 32;
        long xStride = inDim / 4, slotWords = (long)outDim * words, signRow = (long)o * words, wRow = (long)o * chunks;
        var st = default(Tiled);
        int tiles = (chunks + 31) / 32;
        Vec16 next = default;
        if (live && lane < chunks) next = w16a[wRow + lane];
        for (int kt = 0; kt < tiles; kt++)
        {
            for (int i = t; i < n * 64; i += TiledWarps * 32)
            {
                int r = i / 64, u = i % 64;
                long unit = (long)kt * 64 + u;
                Vec16 v = default;
                if (unit < 2L * chunks) v = x16a[rowX[r] * xStride + unit];
                xs[r * 64 + (u % 2) * 32 + u / 2] = v;
            }
            Group.Barrier();
            int c = kt * 32 + lane;
            var q = next;
            if (live && c + 32 < chunks) next = w16a[wRow + c + 32];
            if (live && c < chunks)
            {
                var wv = Unpack(q, code);
                long word = signRow + c / 4;
                int shift = (c & 3) * 8;
                st.Prev = -2;
                st = Group8(st, 0, wv, n, xs, lane, rowT, rowA, signs, slotWords, word, shift);
                if (n > 8) st = Group8(st, 1, wv, n, xs, lane, rowT, rowA, signs, slotWords, word, shift);
                if (n > 16) st = Group8(st, 2, wv, n, xs, lane, rowT, rowA, signs, slotWords, word, shift);
                if (n > 24) st = Group8(st, 3, wv, n, xs, lane, rowT, rowA, signs, slotWords, word, shift);
            }
            Group.Barrier();
        }
        if (!live) return;
        StoreGroup(y, st.A0, 0, n, lane, outDim, o, rowX, accumulate);
        if (n > 8) StoreGroup(y, st.A1, 8, n, lane, outDim, o, rowX, accumulate);
        if (n > 16) StoreGroup(y, st.A2, 16, n, lane, outDim, o, rowX, accumulate);
        if (n > 24) StoreGroup(y, st.A3, 24, n, lane, outDim, o, rowX, accumulate);
    }

    /// <summary>Rows 8g … 8g+7 (those below n) of the current chunk; g and the row index are constants after inlining.</summary>
    static Tiled Group8(Tiled st, int g, W8 wv, int n, ArrayView<Vec16> xs, int lane, ArrayView<int> rowT, ArrayView<float> rowA,
                        ArrayView<uint> signs, long slotWords, long word, int shift)
    {
        int jb = g * 8;
        st = OneRow(st, g, 0, jb, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        if (jb + 1 < n) st = OneRow(st, g, 1, jb + 1, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        if (jb + 2 < n) st = OneRow(st, g, 2, jb + 2, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        if (jb + 3 < n) st = OneRow(st, g, 3, jb + 3, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        if (jb + 4 < n) st = OneRow(st, g, 4, jb + 4, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        if (jb + 5 < n) st = OneRow(st, g, 5, jb + 5, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        if (jb + 6 < n) st = OneRow(st, g, 6, jb + 6, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        if (jb + 7 < n) st = OneRow(st, g, 7, jb + 7, wv, xs, lane, rowT, rowA, signs, slotWords, word, shift);
        return st;
    }

    static Tiled OneRow(Tiled st, int g, int k, int j, W8 wv, ArrayView<Vec16> xs, int lane, ArrayView<int> rowT, ArrayView<float> rowA,
                        ArrayView<uint> signs, long slotWords, long word, int shift)
    {
        int tt = rowT[j];
        if (tt != st.Prev)
        {
            st.E = Fold8(wv, signs, tt, rowA[j], slotWords, word, shift);
            st.Prev = tt;
        }
        var xa = xs[j * 64 + lane];
        var xb = xs[j * 64 + 32 + lane];
        if (g == 0) st.A0 = AddRow(st.A0, k, st.E, xa, xb);
        else if (g == 1) st.A1 = AddRow(st.A1, k, st.E, xa, xb);
        else if (g == 2) st.A2 = AddRow(st.A2, k, st.E, xa, xb);
        else st.A3 = AddRow(st.A3, k, st.E, xa, xb);
        return st;
    }

    /// <summary>acc.R{k} += e · x; k is a constant at every call.</summary>
    static Acc8 AddRow(Acc8 acc, int k, W8 e, Vec16 xa, Vec16 xb)
    {
        if (k == 0) acc.R0 = Dot8(e, xa, xb, acc.R0);
        else if (k == 1) acc.R1 = Dot8(e, xa, xb, acc.R1);
        else if (k == 2) acc.R2 = Dot8(e, xa, xb, acc.R2);
        else if (k == 3) acc.R3 = Dot8(e, xa, xb, acc.R3);
        else if (k == 4) acc.R4 = Dot8(e, xa, xb, acc.R4);
        else if (k == 5) acc.R5 = Dot8(e, xa, xb, acc.R5);
        else if (k == 6) acc.R6 = Dot8(e, xa, xb, acc.R6);
        else acc.R7 = Dot8(e, xa, xb, acc.R7);
        return acc;
    }

    /// <summary>Warp sums of rows jb … jb+7 of output o, stored by the lanes WarpTotal8 leaves them in.</summary>
    static void StoreGroup(ArrayView<float> y, Acc8 acc, int jb, int n, int lane, int outDim, int o, ArrayView<int> rowX, int accumulate)
    {
        float s = WarpTotal8(acc, lane);
        int j = jb + RowOfLane(lane);
        if ((lane & 3) == 0 && j < n) Put(y, (long)rowX[j] * outDim + o, s, accumulate);
    }
}

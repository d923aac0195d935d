using ILGPU;
using ILGPU.Runtime;
using System.Runtime.CompilerServices;
using ILGPU.Runtime.Cuda;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Prefill attention on tensor cores, for f16 and bf16 caches: the flash-attention loop (Dao 2023, "FlashAttention-2",
/// arXiv 2307.08691, Algorithm 1) with <c>mma.sync.m16n8k16</c> for both products, S = Q·Kᵀ and O += P·V. The scalar
/// prefill kernel (Attention.cs) computes every score with 128 shared-memory loads and one thread per row for the
/// softmax: at 2048 tokens of Llama-2-7B it took 28.9 ms a layer, 85% of the prefill, and this kernel 0.65 ms (H200,
/// bench/RESULTS.md).
///
/// A block is 4 warps over 64 query rows of one kv head (rows as the scalar kernel orders them: tokens × the query
/// heads that share the kv head), each warp 16 rows; keys go through shared memory 32 at a time in two stages (the
/// next tile's loads in flight during this tile's products), K and V as the cache holds them (rows padded to 272 bytes, so the fragment reads of 8 keys × 4 lanes fall in 32 different banks).
/// Per warp and tile of keys: S (16 × 32) from Q's A fragments, held in registers for the whole loop, and K's B
/// fragments; the running max and sum per row (each row's 32 scores sit in one lane quad); S's accumulator layout is
/// exactly mma's A layout for P (FlashAttention-2's register reuse), so P never leaves registers, and V's B fragments
/// are pairs of keys of one element.
///
/// Accuracy as the scalar kernel's, to f32: K and V are exact in their half type, and Q (f32) and P (f32) are split
/// into pieces of that type whose sum is the value to 2⁻²² (f16: hi + lo) or 2⁻²⁴ (bf16: three pieces of 8 bits), one
/// product per piece, summed in f32. Heads up to 128 wide and a multiple of 8 (16-byte rows): a k-step of 16 elements
/// past the head's end reads zeros. Where inline PTX cannot run (ILGPU's CPU accelerator, the tests in CI), the same
/// fragments go through scratch in shared memory and each lane sums its outputs by mma's layout
/// (<see cref="Emu4"/>); the instruction itself has its own audit case (<see cref="Mma.CaseShuffled"/>).
/// </summary>
public static partial class Attention
{
    /// <summary>Take the tensor-core prefill where it applies (the bench turns it off to compare).</summary>
    public static bool UsePrefillMma { get; set; } = true;

    const int MmaRows = 64, MmaKeys = 32, MmaThreads = 128;
    /// <summary>Words of a K or V row in shared memory: 128 halves and 8 of padding.</summary>
    const int MmaRowWords = 68;
    const int EmuWordsPerLane = 20;
    /// <summary>Words of one stage of K (or V) rows.</summary>
    const int StageWords = MmaKeys * MmaRowWords;

    /// <summary>Stages of K and V tiles in shared memory: 2 (the next tile's loads in flight during this tile's products)
    /// or 1 (the bench compares).</summary>
    public static int PrefillMmaStages { get; set; } = 2;

    /// <summary>Whether the tensor-core prefill takes this cache: an ILGPU device, f16 or bf16, a head a multiple of 8.</summary>
    static bool TakesPrefillMma(Tensor kCache, int headDim) =>
        UsePrefillMma && kCache.Device.IsIlgpu && (kCache.DType == DType.F16 || kCache.DType == DType.BF16) && headDim % 8 == 0;

    static void LaunchPrefillMma(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, Tensor output, Dims s)
    {
        int G = s.Heads / s.KvHeads;
        s.TileTokens = MmaRows / G;
        s.Stages = PrefillMmaStages == 1 ? 1 : 2;
        int tiles = (s.Tokens + s.TileTokens - 1) / s.TileTokens;
        var dev = q.Device;
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<Vec16>, ArrayView<Vec16>, ArrayView<int>, ArrayView<int>, ArrayView<float>, Dims>>(
            kCache.DType == DType.BF16 ? PrefillMmaBf16Kernel : PrefillMmaF16Kernel)(
            new KernelConfig(tiles * s.KvHeads, MmaThreads), q.View<float>(), kCache.View<Vec16>(), vCache.View<Vec16>(), slots.View<int>(),
            positions.View<int>(), output.View<float>(), s);
    }

    /// <summary>One operand piece's A fragments over a head of 128: 8 k-steps of 16 elements.</summary>
    struct QFrags
    {
        public Frag K0, K1, K2, K3, K4, K5, K6, K7;
    }

    struct Frag
    {
        public uint A0, A1, A2, A3;
    }

    /// <summary>Four accumulator tiles of 16 × 8 that one A fragment multiplies (<see cref="Mma4"/>): a tile's scores
    /// (16 rows × 32 keys), or a quarter of the output (16 rows × 32 elements).</summary>
    struct Tiles4
    {
        public Mma.Float4 N0, N1, N2, N3;
    }

    /// <summary>The output accumulator of 16 rows × 128 elements.</summary>
    struct OAcc
    {
        public Tiles4 Q0, Q1, Q2, Q3;
    }

    static void PrefillMmaF16Kernel(ArrayView<float> q, ArrayView<Vec16> kc, ArrayView<Vec16> vc, ArrayView<int> slots, ArrayView<int> positions,
                                    ArrayView<float> output, Dims s) => PrefillMma(q, kc, vc, slots, positions, output, s, false);

    static void PrefillMmaBf16Kernel(ArrayView<float> q, ArrayView<Vec16> kc, ArrayView<Vec16> vc, ArrayView<int> slots, ArrayView<int> positions,
                                     ArrayView<float> output, Dims s) => PrefillMma(q, kc, vc, slots, positions, output, s, true);

    /// <summary>See the class comment. <paramref name="bf16"/> is a constant in each kernel (ILGPU inlines the body).</summary>
    static void PrefillMma(ArrayView<float> q, ArrayView<Vec16> kc, ArrayView<Vec16> vc, ArrayView<int> slots, ArrayView<int> positions,
                           ArrayView<float> output, Dims s, bool bf16)
    {
        var sK = SharedMemory.Allocate<uint>(2 * StageWords);
        var sV = SharedMemory.Allocate<uint>(2 * StageWords);
        var emu = SharedMemory.Allocate<uint>(MmaThreads * EmuWordsPerLane);   // the emulation's scratch (unused on the GPU)
        int tid = Group.IdxX, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
        var scratch = emu.SubView(warp * 32 * EmuWordsPerLane, 32 * EmuWordsPerLane);
        int hk = Grid.IdxX % s.KvHeads, tile = Grid.IdxX / s.KvHeads;
        int G = s.Heads / s.KvHeads, D = s.HeadDim;
        int t0 = tile * s.TileTokens, t1 = Math.Min(s.Tokens, t0 + s.TileTokens);
        int rows = (t1 - t0) * G;
        int kSteps = (D + 15) / 16, dTiles = D / 8, headChunks = D / 8;

        // this lane's two rows: A = warp·16 + g, B = A + 8
        int rA = warp * 16 + g, rB = rA + 8;
        int tokA = t0 + Math.Min(rA, Math.Max(rows - 1, 0)) / G, tokB = t0 + Math.Min(rB, Math.Max(rows - 1, 0)) / G;
        bool liveA = rA < rows, liveB = rB < rows;
        long qA = ((long)tokA * s.Heads + hk * G + rA % G) * D, qB = ((long)tokB * s.Heads + hk * G + rB % G) * D;
        QFrags q0 = default, q1 = default, q2 = default;
        for (int kd = 0; kd < 8; kd++)
            if (kd < kSteps)
            {
                var (p0, p1, p2) = QPieces(q, qA, qB, liveA, liveB, 16 * kd + 2 * t, D, s.Scale, bf16);
                q0 = SetQ(q0, kd, p0); q1 = SetQ(q1, kd, p1); q2 = SetQ(q2, kd, p2);
            }
        int posA = liveA ? positions[tokA] : -1, posB = liveB ? positions[tokB] : -1;
        int firstA = FirstKey(posA, s.Window), firstB = FirstKey(posB, s.Window);

        OAcc o = default;
        float mA = float.NegativeInfinity, mB = float.NegativeInfinity, lA = 0f, lB = 0f;
        int runStart = t0, stage = 0;
        while (runStart < t1)
        {
            var (slot, runEnd, lo, hi) = SlotRun(slots, positions, runStart, t1, s);
            long head = ((long)slot * s.KvHeads + hk) * s.MaxSeq;
            // a row takes part in this run if its token does and its position lies in the cache
            bool inA = liveA && tokA >= runStart && tokA < runEnd && posA >= 0 && posA < s.MaxSeq;
            bool inB = liveB && tokB >= runStart && tokB < runEnd && posB >= 0 && posB < s.MaxSeq;

            // Two stages (s.Stages = 2): tile i + 1's K and V are loaded into registers right after tile i's barrier
            // and stored to the other stage at the top of the next step, so their latency hides behind tile i's
            // products, and one barrier a tile suffices (a stage is written again only after the next barrier, which
            // every warp passes after its products on it). One stage: load, barrier, products, barrier.
            var next = lo <= hi && s.Stages == 2 ? LoadKV(kc, vc, head, lo, hi, tid, headChunks) : default;
            for (int k0 = lo; k0 <= hi; k0 += MmaKeys)
            {
                int st = stage * StageWords;
                if (s.Stages == 2)
                {
                    StoreKV(sK, sV, st, next, tid);
                    Group.Barrier();
                    if (k0 + MmaKeys <= hi) next = LoadKV(kc, vc, head, k0 + MmaKeys, hi, tid, headChunks);
                }
                else
                {
                    StoreKV(sK, sV, st, LoadKV(kc, vc, head, k0, hi, tid, headChunks), tid);
                    Group.Barrier();
                }

                // S = Q·Kᵀ, k-step by k-step, for the 4 tiles of 8 keys; then keys k0 + 8n + 2t and +1 of tile n, for rows
                // A (X, Y) and B (Z, W), masked
                var sc = Scores(q0, q1, q2, sK, st + g * MmaRowWords + t, kSteps, scratch, lane, bf16);
                sc.N0 = Mask(sc.N0, k0, t, inA, inB, posA, posB, firstA, firstB);
                sc.N1 = Mask(sc.N1, k0 + 8, t, inA, inB, posA, posB, firstA, firstB);
                sc.N2 = Mask(sc.N2, k0 + 16, t, inA, inB, posA, posB, firstA, firstB);
                sc.N3 = Mask(sc.N3, k0 + 24, t, inA, inB, posA, posB, firstA, firstB);

                // the rows' running max over their 32 scores: 8 in each lane of a quad
                float xA = MathF.Max(MathF.Max(MathF.Max(sc.N0.X, sc.N0.Y), MathF.Max(sc.N1.X, sc.N1.Y)), MathF.Max(MathF.Max(sc.N2.X, sc.N2.Y), MathF.Max(sc.N3.X, sc.N3.Y)));
                float xB = MathF.Max(MathF.Max(MathF.Max(sc.N0.Z, sc.N0.W), MathF.Max(sc.N1.Z, sc.N1.W)), MathF.Max(MathF.Max(sc.N2.Z, sc.N2.W), MathF.Max(sc.N3.Z, sc.N3.W)));
                xA = MathF.Max(xA, Warp.ShuffleXor(xA, 1)); xA = MathF.Max(xA, Warp.ShuffleXor(xA, 2));
                xB = MathF.Max(xB, Warp.ShuffleXor(xB, 1)); xB = MathF.Max(xB, Warp.ShuffleXor(xB, 2));
                float nA = MathF.Max(mA, xA), nB = MathF.Max(mB, xB);
                // a row that has seen no key yet keeps m = −∞, weights 0 and no rescale
                float cA = nA == float.NegativeInfinity ? 1f : MathF.Exp(mA - nA), cB = nB == float.NegativeInfinity ? 1f : MathF.Exp(mB - nB);
                sc.N0 = Weights(sc.N0, nA, nB); sc.N1 = Weights(sc.N1, nA, nB); sc.N2 = Weights(sc.N2, nA, nB); sc.N3 = Weights(sc.N3, nA, nB);
                lA = lA * cA + (sc.N0.X + sc.N0.Y + sc.N1.X + sc.N1.Y + sc.N2.X + sc.N2.Y + sc.N3.X + sc.N3.Y);
                lB = lB * cB + (sc.N0.Z + sc.N0.W + sc.N1.Z + sc.N1.W + sc.N2.Z + sc.N2.W + sc.N3.Z + sc.N3.W);
                mA = nA; mB = nB;
                o = Rescale(o, cA, cB);

                // O += P·V: P's A fragment for keys 16kk … +16 is S's tiles 2kk and 2kk + 1 as they lie in the lanes
                o = PV(o, sc.N0, sc.N1, sV, st + (2 * t) * MmaRowWords + (g >> 1), g, dTiles, scratch, lane, bf16);
                o = PV(o, sc.N2, sc.N3, sV, st + (16 + 2 * t) * MmaRowWords + (g >> 1), g, dTiles, scratch, lane, bf16);
                if (s.Stages == 2) stage ^= 1;
                else Group.Barrier();
            }
            runStart = runEnd;
        }

        lA += Warp.ShuffleXor(lA, 1); lA += Warp.ShuffleXor(lA, 2);
        lB += Warp.ShuffleXor(lB, 1); lB += Warp.ShuffleXor(lB, 2);
        float iA = lA > 0f ? 1f / lA : 0f, iB = lB > 0f ? 1f / lB : 0f;
        long outA = liveA ? qA : -1, outB = liveB ? qB : -1;
        Write(output, o.Q0, outA, outB, iA, iB, 2 * t, dTiles);
        if (dTiles > 4) Write(output, o.Q1, outA, outB, iA, iB, 32 + 2 * t, dTiles - 4);
        if (dTiles > 8) Write(output, o.Q2, outA, outB, iA, iB, 64 + 2 * t, dTiles - 8);
        if (dTiles > 12) Write(output, o.Q3, outA, outB, iA, iB, 96 + 2 * t, dTiles - 12);
    }

    /// <summary>A thread's 16-byte chunks of a tile's K and V rows: chunk i (row i / 16, elements 8·(i mod 16) …) for
    /// i = tid, tid + 128, tid + 256, tid + 384.</summary>
    struct KV4
    {
        public Vec16 K0, K1, K2, K3, V0, V1, V2, V3;
    }

    /// <summary>K and V rows k0 … k0+31 (past hi: row hi again, masked by the scores), zeros past the head (the k-steps
    /// and element tiles past it multiply them); every load issued before any is used.</summary>
    static KV4 LoadKV(ArrayView<Vec16> kc, ArrayView<Vec16> vc, long head, int k0, int hi, int tid, int headChunks)
    {
        var kv = kc.AsAligned(16);
        var vv = vc.AsAligned(16);
        KV4 r;
        r.K0 = Chunk(kv, head, k0, hi, tid, headChunks); r.V0 = Chunk(vv, head, k0, hi, tid, headChunks);
        r.K1 = Chunk(kv, head, k0, hi, tid + MmaThreads, headChunks); r.V1 = Chunk(vv, head, k0, hi, tid + MmaThreads, headChunks);
        r.K2 = Chunk(kv, head, k0, hi, tid + 2 * MmaThreads, headChunks); r.V2 = Chunk(vv, head, k0, hi, tid + 2 * MmaThreads, headChunks);
        r.K3 = Chunk(kv, head, k0, hi, tid + 3 * MmaThreads, headChunks); r.V3 = Chunk(vv, head, k0, hi, tid + 3 * MmaThreads, headChunks);
        return r;
    }

    static Vec16 Chunk(ArrayView<Vec16> cache, long head, int k0, int hi, int i, int headChunks)
    {
        int c = i & 15;
        return c < headChunks ? cache[(head + Math.Min(k0 + (i >> 4), hi)) * headChunks + c] : default;
    }

    static void StoreKV(ArrayView<uint> sK, ArrayView<uint> sV, int st, KV4 r, int tid)
    {
        Put16(sK, st + Slot(tid), r.K0); Put16(sV, st + Slot(tid), r.V0);
        Put16(sK, st + Slot(tid + MmaThreads), r.K1); Put16(sV, st + Slot(tid + MmaThreads), r.V1);
        Put16(sK, st + Slot(tid + 2 * MmaThreads), r.K2); Put16(sV, st + Slot(tid + 2 * MmaThreads), r.V2);
        Put16(sK, st + Slot(tid + 3 * MmaThreads), r.K3); Put16(sV, st + Slot(tid + 3 * MmaThreads), r.V3);
    }

    /// <summary>Shared word of chunk i: row i / 16, 4 words a chunk.</summary>
    static int Slot(int i) => (i >> 4) * MmaRowWords + 4 * (i & 15);

    static bool Visible(bool inRun, int key, int pos, int first) => inRun && key <= pos && key >= first;

    /// <summary>The scores of 16 rows × 32 keys: per k-step of 16 elements, Q's fragment times K's for the 4 tiles of 8
    /// keys; lane (g, t) reads words <paramref name="at"/> + 8·(k-step) and + 4 of key rows g, 8 + g, 16 + g, 24 + g.
    /// Written out k-step by k-step so that every fragment and accumulator is a register (ILGPU leaves loops rolled).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Tiles4 Scores(QFrags q0, QFrags q1, QFrags q2, ArrayView<uint> sK, int at, int kSteps, ArrayView<uint> scratch, int lane, bool bf16)
    {
        var acc = default(Tiles4);
        acc = KStep(acc, q0.K0, q1.K0, q2.K0, sK, at, scratch, lane, bf16);
        if (kSteps > 1) acc = KStep(acc, q0.K1, q1.K1, q2.K1, sK, at + 8, scratch, lane, bf16);
        if (kSteps > 2) acc = KStep(acc, q0.K2, q1.K2, q2.K2, sK, at + 16, scratch, lane, bf16);
        if (kSteps > 3) acc = KStep(acc, q0.K3, q1.K3, q2.K3, sK, at + 24, scratch, lane, bf16);
        if (kSteps > 4) acc = KStep(acc, q0.K4, q1.K4, q2.K4, sK, at + 32, scratch, lane, bf16);
        if (kSteps > 5) acc = KStep(acc, q0.K5, q1.K5, q2.K5, sK, at + 40, scratch, lane, bf16);
        if (kSteps > 6) acc = KStep(acc, q0.K6, q1.K6, q2.K6, sK, at + 48, scratch, lane, bf16);
        if (kSteps > 7) acc = KStep(acc, q0.K7, q1.K7, q2.K7, sK, at + 56, scratch, lane, bf16);
        return acc;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Tiles4 KStep(Tiles4 acc, Frag p0, Frag p1, Frag p2, ArrayView<uint> sK, int at, ArrayView<uint> scratch, int lane, bool bf16)
    {
        const int Tile = 8 * MmaRowWords;
        return Mma4(acc, p0, p1, p2, sK[at], sK[at + 4], sK[at + Tile], sK[at + Tile + 4], sK[at + 2 * Tile], sK[at + 2 * Tile + 4],
                    sK[at + 3 * Tile], sK[at + 3 * Tile + 4], scratch, lane, bf16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Mma.Float4 Mask(Mma.Float4 acc, int k0, int t, bool inA, bool inB, int posA, int posB, int firstA, int firstB)
    {
        int key = k0 + 2 * t;
        acc.X = Visible(inA, key, posA, firstA) ? acc.X : float.NegativeInfinity;
        acc.Y = Visible(inA, key + 1, posA, firstA) ? acc.Y : float.NegativeInfinity;
        acc.Z = Visible(inB, key, posB, firstB) ? acc.Z : float.NegativeInfinity;
        acc.W = Visible(inB, key + 1, posB, firstB) ? acc.W : float.NegativeInfinity;
        return acc;
    }

    /// <summary>O += P·V for 16 keys: P from the weight tiles of keys 0–7 and 8–15 as they lie in the lanes; V's B
    /// fragments pair the halves of rows 2t and 2t + 1 (and 2t + 8, 2t + 9) for element g of each tile, the rows' word
    /// at <paramref name="v0"/> (element g's word of row 2t). Element tiles past the head multiply zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static OAcc PV(OAcc o, Mma.Float4 k0, Mma.Float4 k8, ArrayView<uint> sV, int v0, int g, int dTiles, ArrayView<uint> scratch, int lane, bool bf16)
    {
        var (p0, p1, p2) = PPieces(k0, k8, bf16);
        int sh = (g & 1) * 16;
        o.Q0 = VQuarter(o.Q0, p0, p1, p2, sV, v0, sh, scratch, lane, bf16);
        if (dTiles > 4) o.Q1 = VQuarter(o.Q1, p0, p1, p2, sV, v0 + 16, sh, scratch, lane, bf16);
        if (dTiles > 8) o.Q2 = VQuarter(o.Q2, p0, p1, p2, sV, v0 + 32, sh, scratch, lane, bf16);
        if (dTiles > 12) o.Q3 = VQuarter(o.Q3, p0, p1, p2, sV, v0 + 48, sh, scratch, lane, bf16);
        return o;
    }

    /// <summary>Four element tiles (32 elements, 16 words of a row) of O += P·V.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Tiles4 VQuarter(Tiles4 acc, Frag p0, Frag p1, Frag p2, ArrayView<uint> sV, int w, int sh, ArrayView<uint> scratch, int lane, bool bf16) =>
        Mma4(acc, p0, p1, p2, VPair(sV, w, sh), VPair(sV, w + 8 * MmaRowWords, sh), VPair(sV, w + 4, sh), VPair(sV, w + 4 + 8 * MmaRowWords, sh),
             VPair(sV, w + 8, sh), VPair(sV, w + 8 + 8 * MmaRowWords, sh), VPair(sV, w + 12, sh), VPair(sV, w + 12 + 8 * MmaRowWords, sh),
             scratch, lane, bf16);

    /// <summary>The half at bit <paramref name="sh"/> of word <paramref name="w"/> and of the word a row below, as a pair.</summary>
    static uint VPair(ArrayView<uint> sV, int w, int sh) => (sV[w] >> sh & 0xFFFFu) | (sV[w + MmaRowWords] >> sh) << 16;

    /// <summary><see cref="Mma4"/>'s statements: operands 0–15 the 4 accumulators (read and written), 16–19 the
    /// largest piece of A, 20–23 the next, 24–31 the 4 B fragments, 32–35 bf16's third piece.</summary>
    const string Mma4F16 = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%20,%21,%22,%23}, {%24,%25}, {%0,%1,%2,%3}; mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%4,%5,%6,%7}, {%20,%21,%22,%23}, {%26,%27}, {%4,%5,%6,%7}; mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%8,%9,%10,%11}, {%20,%21,%22,%23}, {%28,%29}, {%8,%9,%10,%11}; mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%12,%13,%14,%15}, {%20,%21,%22,%23}, {%30,%31}, {%12,%13,%14,%15}; mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%16,%17,%18,%19}, {%24,%25}, {%0,%1,%2,%3}; mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%4,%5,%6,%7}, {%16,%17,%18,%19}, {%26,%27}, {%4,%5,%6,%7}; mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%8,%9,%10,%11}, {%16,%17,%18,%19}, {%28,%29}, {%8,%9,%10,%11}; mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%12,%13,%14,%15}, {%16,%17,%18,%19}, {%30,%31}, {%12,%13,%14,%15};";
    const string Mma4Bf16 = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%32,%33,%34,%35}, {%24,%25}, {%0,%1,%2,%3}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%4,%5,%6,%7}, {%32,%33,%34,%35}, {%26,%27}, {%4,%5,%6,%7}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%8,%9,%10,%11}, {%32,%33,%34,%35}, {%28,%29}, {%8,%9,%10,%11}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%12,%13,%14,%15}, {%32,%33,%34,%35}, {%30,%31}, {%12,%13,%14,%15}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%20,%21,%22,%23}, {%24,%25}, {%0,%1,%2,%3}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%4,%5,%6,%7}, {%20,%21,%22,%23}, {%26,%27}, {%4,%5,%6,%7}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%8,%9,%10,%11}, {%20,%21,%22,%23}, {%28,%29}, {%8,%9,%10,%11}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%12,%13,%14,%15}, {%20,%21,%22,%23}, {%30,%31}, {%12,%13,%14,%15}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%16,%17,%18,%19}, {%24,%25}, {%0,%1,%2,%3}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%4,%5,%6,%7}, {%16,%17,%18,%19}, {%26,%27}, {%4,%5,%6,%7}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%8,%9,%10,%11}, {%16,%17,%18,%19}, {%28,%29}, {%8,%9,%10,%11}; mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%12,%13,%14,%15}, {%16,%17,%18,%19}, {%30,%31}, {%12,%13,%14,%15};";

    /// <summary>acc_n += A·B_n for the 4 tiles, A as 2 (f16) or 3 (bf16) pieces, the smallest first: one inline-PTX
    /// statement of 8 or 12 <c>mma</c>s, so that the kernel has 16 of them (each of ILGPU's inline-PTX sites passes
    /// its operands through locals, and its compile time grew past a minute with one site a product); elsewhere
    /// emulated (<see cref="Emu4"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Tiles4 Mma4(Tiles4 acc, Frag p0, Frag p1, Frag p2, uint b00, uint b01, uint b10, uint b11, uint b20, uint b21, uint b30, uint b31,
                       ArrayView<uint> scratch, int lane, bool bf16)
    {
        if (!CudaAsm.IsSupported) return Emu4(acc, p0, p1, p2, b00, b01, b10, b11, b20, b21, b30, b31, scratch, lane, bf16);
        Ref<float> d0 = acc.N0.X, d1 = acc.N0.Y, d2 = acc.N0.Z, d3 = acc.N0.W, d4 = acc.N1.X, d5 = acc.N1.Y, d6 = acc.N1.Z, d7 = acc.N1.W;
        Ref<float> d8 = acc.N2.X, d9 = acc.N2.Y, d10 = acc.N2.Z, d11 = acc.N2.W, d12 = acc.N3.X, d13 = acc.N3.Y, d14 = acc.N3.Z, d15 = acc.N3.W;
        Input<uint> h0 = p0.A0, h1 = p0.A1, h2 = p0.A2, h3 = p0.A3, l0 = p1.A0, l1 = p1.A1, l2 = p1.A2, l3 = p1.A3;
        Input<uint> c00 = b00, c01 = b01, c10 = b10, c11 = b11, c20 = b20, c21 = b21, c30 = b30, c31 = b31;
        if (bf16)
        {
            Input<uint> m0 = p2.A0, m1 = p2.A1, m2 = p2.A2, m3 = p2.A3;
            CudaAsm.EmitRef(Mma4Bf16,
                ref d0, ref d1, ref d2, ref d3, ref d4, ref d5, ref d6, ref d7, ref d8, ref d9, ref d10, ref d11, ref d12, ref d13, ref d14, ref d15,
                ref h0, ref h1, ref h2, ref h3, ref l0, ref l1, ref l2, ref l3, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31,
                ref m0, ref m1, ref m2, ref m3);
        }
        else
            CudaAsm.EmitRef(Mma4F16,
                ref d0, ref d1, ref d2, ref d3, ref d4, ref d5, ref d6, ref d7, ref d8, ref d9, ref d10, ref d11, ref d12, ref d13, ref d14, ref d15,
                ref h0, ref h1, ref h2, ref h3, ref l0, ref l1, ref l2, ref l3, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31);
        acc.N0.X = d0.Value; acc.N0.Y = d1.Value; acc.N0.Z = d2.Value; acc.N0.W = d3.Value;
        acc.N1.X = d4.Value; acc.N1.Y = d5.Value; acc.N1.Z = d6.Value; acc.N1.W = d7.Value;
        acc.N2.X = d8.Value; acc.N2.Y = d9.Value; acc.N2.Z = d10.Value; acc.N2.W = d11.Value;
        acc.N3.X = d12.Value; acc.N3.Y = d13.Value; acc.N3.Z = d14.Value; acc.N3.W = d15.Value;
        return acc;
    }

    static Mma.Float4 Weights(Mma.Float4 v, float mA, float mB)
    {
        // exp(−∞ − m) = 0 for masked keys; a row still at m = −∞ has only masked keys
        v.X = mA == float.NegativeInfinity ? 0f : MathF.Exp(v.X - mA);
        v.Y = mA == float.NegativeInfinity ? 0f : MathF.Exp(v.Y - mA);
        v.Z = mB == float.NegativeInfinity ? 0f : MathF.Exp(v.Z - mB);
        v.W = mB == float.NegativeInfinity ? 0f : MathF.Exp(v.W - mB);
        return v;
    }

    static OAcc Rescale(OAcc o, float cA, float cB)
    {
        o.Q0 = Rescale4(o.Q0, cA, cB); o.Q1 = Rescale4(o.Q1, cA, cB); o.Q2 = Rescale4(o.Q2, cA, cB); o.Q3 = Rescale4(o.Q3, cA, cB);
        return o;
    }

    static Tiles4 Rescale4(Tiles4 q, float cA, float cB)
    {
        q.N0 = Scale2(q.N0, cA, cB); q.N1 = Scale2(q.N1, cA, cB); q.N2 = Scale2(q.N2, cA, cB); q.N3 = Scale2(q.N3, cA, cB);
        return q;
    }

    static Mma.Float4 Scale2(Mma.Float4 v, float a, float b)
    {
        v.X *= a; v.Y *= a; v.Z *= b; v.W *= b;
        return v;
    }

    /// <summary>Q's A fragment words for elements d, d + 1 (a0 row A, a1 row B) and d + 8, d + 9 (a2, a3), times the
    /// score scale, as pieces of the cache's type; elements past the head are 0.</summary>
    static (Frag, Frag, Frag) QPieces(ArrayView<float> q, long qA, long qB, bool liveA, bool liveB, int d, int D, float scale, bool bf16)
    {
        var (a0, b0, c0) = Pieces(QAt(q, qA, liveA, d, D, scale), QAt(q, qA, liveA, d + 1, D, scale), bf16);
        var (a1, b1, c1) = Pieces(QAt(q, qB, liveB, d, D, scale), QAt(q, qB, liveB, d + 1, D, scale), bf16);
        var (a2, b2, c2) = Pieces(QAt(q, qA, liveA, d + 8, D, scale), QAt(q, qA, liveA, d + 9, D, scale), bf16);
        var (a3, b3, c3) = Pieces(QAt(q, qB, liveB, d + 8, D, scale), QAt(q, qB, liveB, d + 9, D, scale), bf16);
        return (new Frag { A0 = a0, A1 = a1, A2 = a2, A3 = a3 }, new Frag { A0 = b0, A1 = b1, A2 = b2, A3 = b3 },
                new Frag { A0 = c0, A1 = c1, A2 = c2, A3 = c3 });
    }

    static float QAt(ArrayView<float> q, long row, bool live, int e, int D, float scale) => live && e < D ? q[row + e] * scale : 0f;

    /// <summary>P's A fragment for 16 keys from the score tiles of keys 0–7 and 8–15, as pieces.</summary>
    static (Frag, Frag, Frag) PPieces(Mma.Float4 k0, Mma.Float4 k8, bool bf16)
    {
        var (a0, b0, c0) = Pieces(k0.X, k0.Y, bf16);
        var (a1, b1, c1) = Pieces(k0.Z, k0.W, bf16);
        var (a2, b2, c2) = Pieces(k8.X, k8.Y, bf16);
        var (a3, b3, c3) = Pieces(k8.Z, k8.W, bf16);
        return (new Frag { A0 = a0, A1 = a1, A2 = a2, A3 = a3 }, new Frag { A0 = b0, A1 = b1, A2 = b2, A3 = b3 },
                new Frag { A0 = c0, A1 = c1, A2 = c2, A3 = c3 });
    }

    /// <summary>Two f32 values as pairs of pieces that sum to them: f16 hi, lo (and a zero third); bf16 three pieces of
    /// 8 bits each, the first two cut, the last rounded.</summary>
    static (uint, uint, uint) Pieces(float a, float b, bool bf16)
    {
        if (!bf16)
        {
            var (hi, lo) = Mma.SplitPair(a, b);
            return (hi, lo, 0u);
        }
        var (ha, ra) = Cut(a);
        var (hb, rb) = Cut(b);
        var (ma, la) = Cut(ra);
        var (mb, lbr) = Cut(rb);
        return (ha | hb << 16, ma | mb << 16, Bf16Round(la) | Bf16Round(lbr) << 16);
    }

    /// <summary>x's top 16 bits (a bf16, cut toward zero) and the f32 rest x − that, exact.</summary>
    static (uint, float) Cut(float x)
    {
        uint bits = (uint)Interop.FloatAsInt(x) & 0xFFFF0000u;
        return (bits >> 16, x - Interop.IntAsFloat(bits));
    }

    static uint Bf16Round(float x)
    {
        uint bits = (uint)Interop.FloatAsInt(x);
        return (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    }

    /// <summary><see cref="Mma4"/> emulated by mma's fragment layout (<see cref="Mma.M16N8K16"/>): every lane puts its
    /// pieces of A and its 4 B fragments in the warp's scratch, and lane (g, t) sums rows g, g + 8 × columns 2t, 2t + 1 of
    /// each tile from lanes 4g + j (A) and 8t + j, 8t + 4 + j (B), in f32. Two block barriers for all 8 or 12 products
    /// (ILGPU's CPU accelerator pays each barrier with thread switches): every warp calls it the same number of times.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]   // once in the kernel: inlined at its 16 sites it took a minute to compile
    static Tiles4 Emu4(Tiles4 acc, Frag p0, Frag p1, Frag p2, uint b00, uint b01, uint b10, uint b11, uint b20, uint b21, uint b30, uint b31,
                       ArrayView<uint> s, int lane, bool bf16)
    {
        int at = lane * EmuWordsPerLane;
        s[at] = p0.A0; s[at + 1] = p0.A1; s[at + 2] = p0.A2; s[at + 3] = p0.A3;
        s[at + 4] = p1.A0; s[at + 5] = p1.A1; s[at + 6] = p1.A2; s[at + 7] = p1.A3;
        s[at + 8] = p2.A0; s[at + 9] = p2.A1; s[at + 10] = p2.A2; s[at + 11] = p2.A3;
        s[at + 12] = b00; s[at + 13] = b01; s[at + 14] = b10; s[at + 15] = b11;
        s[at + 16] = b20; s[at + 17] = b21; s[at + 18] = b30; s[at + 19] = b31;
        Group.Barrier();
        for (int piece = bf16 ? 2 : 1; piece >= 0; piece--)
        {
            acc.N0 = Mma.EmuProduct(acc.N0, s, EmuWordsPerLane, 4 * piece, 12, lane, bf16);
            acc.N1 = Mma.EmuProduct(acc.N1, s, EmuWordsPerLane, 4 * piece, 14, lane, bf16);
            acc.N2 = Mma.EmuProduct(acc.N2, s, EmuWordsPerLane, 4 * piece, 16, lane, bf16);
            acc.N3 = Mma.EmuProduct(acc.N3, s, EmuWordsPerLane, 4 * piece, 18, lane, bf16);
        }
        Group.Barrier();
        return acc;
    }

    static void Put16(ArrayView<uint> sh, int word, Vec16 v) => sh.Cast<Vec16>().AsAligned(16)[word / 4] = v;

    static QFrags SetQ(QFrags f, int i, Frag v)
    {
        switch (i)
        {
            case 0: f.K0 = v; break;
            case 1: f.K1 = v; break;
            case 2: f.K2 = v; break;
            case 3: f.K3 = v; break;
            case 4: f.K4 = v; break;
            case 5: f.K5 = v; break;
            case 6: f.K6 = v; break;
            default: f.K7 = v; break;
        }
        return f;
    }

    /// <summary>A quarter of the output, tiles of 8 elements from <paramref name="d"/> (this lane's pair in the first), the
    /// first <paramref name="tiles"/> of them in the head; row A's and B's outputs start at element <paramref name="a"/>
    /// and <paramref name="b"/> of the output (−1: a row past the tile).</summary>
    static void Write(ArrayView<float> output, Tiles4 q, long a, long b, float iA, float iB, int d, int tiles)
    {
        Write2(output, q.N0, a, b, iA, iB, d);
        if (tiles > 1) Write2(output, q.N1, a, b, iA, iB, d + 8);
        if (tiles > 2) Write2(output, q.N2, a, b, iA, iB, d + 16);
        if (tiles > 3) Write2(output, q.N3, a, b, iA, iB, d + 24);
    }

    static void Write2(ArrayView<float> output, Mma.Float4 v, long a, long b, float iA, float iB, int d)
    {
        if (a >= 0) { output[a + d] = v.X * iA; output[a + d + 1] = v.Y * iA; }
        if (b >= 0) { output[b + d] = v.Z * iB; output[b + d + 1] = v.W * iB; }
    }
}

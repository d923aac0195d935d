using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The GEMM on half-precision operands, y (+)= x·Wᵀ for x [rows, in] and W [out, in] both f16 or both bf16, y f32: what
/// cuBLAS runs for transformers' f16 and bf16 models (PyTorch's <c>x @ W.T</c>), and the speed issue's yardstick (at
/// least 60% of its TFLOP/s). The f32-activation GEMM (MatMulMma.cs) pays two products per step for x's hi + lo split;
/// here each step is one <c>mma.m16n8k16</c> with f32 accumulation, so the result is the f32 sum of exact products of the
/// operands as given.
///
/// A block owns a 128 × 128 tile of y and walks K in steps of 32 through shared memory, one barrier a step: by default
/// (<see cref="Async"/>) a ring of three 16 KB stages that <c>cp.async</c> fills two steps ahead (PTX ISA §9.7.9.25);
/// otherwise two stages, each thread loading its 16-byte chunks of the next step into registers before this step's
/// products and storing them after. The cp.async kernels need <see cref="PtxPasses"/>: ILGPU passes each inline-PTX
/// operand through a local variable, and with cp.async in a kernel ptxas keeps them all in local memory (36 round trips a
/// product, 5 TFLOP/s; bench/NOTES.md) unless they are made registers first. Fragments come out
/// with <c>ldmatrix.x4</c> (PTX ISA §9.7.14.5.15): four 8 × 8 matrices a warp instruction, exactly mma's A and B
/// fragments for 16 rows (or 16 outputs) × 16 inputs. A tile row is 64 bytes (4 chunks of 16); chunk c of row r sits at
/// chunk c ⊕ ((r / 2) mod 4) of its row, so the 8 rows an ldmatrix phase reads and the 8 chunks a quarter-warp stores
/// each fall in 8 different 16-byte bank groups. Warp w computes rows 64·(w mod 2) … +64 and outputs 32·(w div 2) … +32
/// (8 warps) or, with <see cref="Wide"/>, 64·(w div 2) … +64 (4 warps): 4 × 4 (or 4 × 8) tiles of 16 × 8, 64 (or 128)
/// f32 accumulators a thread. Blocks that share a tile of W are neighbours in the grid, so W comes from DRAM about once and
/// x from L2.
///
/// Where inline PTX cannot run (ILGPU's CPU accelerator, the tests in CI), each lane reads its fragment words from shared
/// memory itself and sums its outputs in f32 from the fragments the warp's lanes put in scratch past the stages (two
/// barriers a 16-wide step, where shuffles per product cost 36 s a case on CI's two cores): the same staging, swizzle and
/// fragment layout, checked against the twin (<see cref="MatMul.Twin"/> on the operands' values). The product
/// instruction itself, f16 and bf16, has its own audit case (<see cref="Mma.CaseShuffled"/>); ldmatrix's mapping is
/// checked on the GPU (the audit and tests with CUDA as the device).
/// </summary>
public static class GemmHalf
{
    const int Bm = 128, Bn = 128, Bk = 32, Stages = 2;

    /// <summary>Warp tiles of 64 × 64 (4 warps a block, the default) instead of 64 × 32 (8 warps). Per 16-wide step a
    /// 64 × 64 warp makes 32 products from 8 ldmatrix, a 64 × 32 warp 16 from 6, so the wide tile asks less of shared
    /// memory. Staged through registers it took 206 registers a thread and lost by 6–22%; through cp.async it takes 165
    /// and wins: 142–231 TFLOP/s against 138–191 for 64 × 32 on the H200 (bench/RESULTS.md). The bench times both.</summary>
    public static bool Wide { get; set; } = true;

    /// <summary>The tiles through a ring of <see cref="AsyncStages"/> stages filled by <c>cp.async</c> two steps ahead
    /// (no registers held for them, no stores after the products; 93 registers a thread against 116) instead of staged
    /// through registers: 136–192 TFLOP/s against 114–188 at 7B shapes on the H200 (bench/RESULTS.md). The bench times
    /// both.</summary>
    public static bool Async { get; set; } = true;

    const int AsyncStages = 3;

    /// <summary>One operand's tile in one stage: 128 rows of 32 halves.</summary>
    const int TileBytes = 128 * Bk * 2, StageBytes = 2 * TileBytes;

    /// <summary>The stages' dynamic shared memory: 2 × 16 KB.</summary>
    public const int SharedBytes = Stages * StageBytes;

    /// <summary>Whether <see cref="Run"/> takes these operands: an ILGPU device, x and W of one half type, in a multiple of
    /// 8 (16-byte chunks of a row) and both 16-byte aligned.</summary>
    public static bool Applies(Tensor x, Tensor w) =>
        x.Device.IsIlgpu && (x.DType == DType.F16 || x.DType == DType.BF16) && w.DType == x.DType && w.Rank == 2 && w.Dim(1) % 8 == 0
        && Aligned16(x) && Aligned16(w);

    /// <summary>y (+)= x·Wᵀ: x [.., in] and W [out, in] both F16 or both BF16, y F32 [.., out], on an ILGPU device;
    /// <paramref name="async"/> picks the cp.async form or not (default: <see cref="Async"/>), <paramref name="wide"/> the
    /// warp tile (default: <see cref="Wide"/>).</summary>
    public static void Run(Tensor x, Tensor w, Tensor y, bool accumulate = false, bool? async = null, bool? wide = null)
    {
        long rows = Rows(x, w, y, "half gemm");
        int outDim = w.Dim(0), inDim = w.Dim(1);
        if (!Applies(x, w)) throw new ArgumentException($"half gemm: needs an ILGPU device, in a multiple of 8 and 16-byte aligned operands, got {x} and {w}");
        if (rows == 0 || outDim == 0) return;
        if (rows > int.MaxValue / 2) throw new ArgumentException($"half gemm x: too many rows in {x}");
        // on Hopper, unless a form is asked for, the warpgroup products (GemmWgmma.cs)
        if (async == null && wide == null && GemmWgmma.Enabled && x.Device.Kind == DeviceKind.Cuda && GemmWgmma.Runs(x.Device))
        {
            GemmWgmma.Run(x, w, y, accumulate);
            return;
        }
        int m = (int)rows, mTiles = (m + Bm - 1) / Bm, nTiles = (outDim + Bn - 1) / Bn;
        bool bf16 = x.DType == DType.BF16;
        bool wideTile = wide ?? Wide;
        int threads = wideTile ? 128 : 256;
        var dev = y.Device;
        if (async ?? Async)
        {
            dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, long, long, ArrayView<float>, int, int, int, int>>(
                wideTile ? (bf16 ? Bf16AsyncWideKernel : F16AsyncWideKernel) : (bf16 ? Bf16AsyncKernel : F16AsyncKernel))(
                new KernelConfig(mTiles * nTiles, threads,
                                 SharedMemoryConfig.RequestDynamic<byte>(AsyncStages * StageBytes + (dev.Kind == DeviceKind.Cuda ? 0 : threads * EmuWords * 4))),
                x.View<Vec16>(), w.View<Vec16>(), x.DeviceAddress, w.DeviceAddress, y.View<float>(), m, outDim, inDim, accumulate ? 1 : 0);
            return;
        }
        dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, ArrayView<float>, int, int, int, int>>(
            wideTile ? (bf16 ? Bf16WideKernel : F16WideKernel) : (bf16 ? Bf16Kernel : F16Kernel))(
            new KernelConfig(mTiles * nTiles, threads,
                             SharedMemoryConfig.RequestDynamic<byte>(SharedBytes + (dev.Kind == DeviceKind.Cuda ? 0 : threads * EmuWords * 4))),
            x.View<Vec16>(), w.View<Vec16>(), y.View<float>(), m, outDim, inDim,
            accumulate ? 1 : 0);
    }

    /// <summary>The checks of a half GEMM's operands (<paramref name="what"/> names it in the errors): x [.., in] and W
    /// [out, in] of one half type, y F32 of x's rows × out, one device; gives x's rows.</summary>
    internal static long Rows(Tensor x, Tensor w, Tensor y, string what)
    {
        Need.SameDevice(x, w, y);
        if (x.DType != DType.F16 && x.DType != DType.BF16) throw new ArgumentException($"{what} x: expected F16 or BF16, got {x}");
        if (w.DType != x.DType) throw new ArgumentException($"{what} weight: expected {x.DType} like x, got {w}");
        Need.F32($"{what} y", y);
        if (w.Rank != 2) throw new ArgumentException($"{what} weight: expected [out, in], got {w}");
        int outDim = w.Dim(0), inDim = w.Dim(1);
        if (x.Rank == 0 || x.Dim(-1) != inDim) throw new ArgumentException($"{what} x: expected last dimension {inDim} (weight {w}), got {x}");
        long rows = x.ElementCount / Math.Max(1, inDim);
        if (inDim == 0) rows = x.Rank == 1 ? 1 : x.ElementCount;
        Need.Count($"{what} y", y, rows * outDim);
        return rows;
    }

    /// <summary>One 16-row tile's accumulators: its 8 tiles of 8 outputs (4 with the default 64 × 32 warps).</summary>
    internal struct Row8
    {
        public Mma.Float4 N0, N1, N2, N3, N4, N5, N6, N7;
    }

    internal struct Frag4
    {
        public uint R0, R1, R2, R3;
    }

    static void F16Kernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, ArrayView<float> y, int m, int n, int k, int flags) =>
        Body(x16, w16, y, m, n, k, flags, false, false);

    static void Bf16Kernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, ArrayView<float> y, int m, int n, int k, int flags) =>
        Body(x16, w16, y, m, n, k, flags, true, false);

    static void F16WideKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, ArrayView<float> y, int m, int n, int k, int flags) =>
        Body(x16, w16, y, m, n, k, flags, false, true);

    static void Bf16WideKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, ArrayView<float> y, int m, int n, int k, int flags) =>
        Body(x16, w16, y, m, n, k, flags, true, true);

    /// <summary>flags: bit 0 accumulate into y. <paramref name="bf16"/> and <paramref name="wide"/> are constants in each
    /// kernel (ILGPU inlines the body), so the loop holds one kind of product and one warp tile.</summary>
    static void Body(ArrayView<Vec16> x16, ArrayView<Vec16> w16, ArrayView<float> y, int m, int n, int k, int flags, bool bf16, bool wide)
    {
        var sh = SharedMemory.GetDynamic<uint>();
        uint shAt = Bulk.Dynamic(0);
        int tid = Group.IdxX, lane = tid & 31, wi = tid >> 5;
        int mTiles = (m + Bm - 1) / Bm;
        int m0 = Grid.IdxX % mTiles * Bm, n0 = Grid.IdxX / mTiles * Bn;
        int wm = (wi & 1) * 64, wn = (wi >> 1) * (wide ? 64 : 32), threads = wide ? 128 : 256;
        int steps = (k + Bk - 1) / Bk;

        var next = Load(x16, w16, 0, m0, n0, m, n, k, tid, threads, wide);
        Store(sh, 0, next, tid, threads, wide);
        Group.Barrier();
        Acc acc = default;
        for (int kt = 0; kt < steps; kt++)
        {
            // the next step's chunks go out before this step's products and land in the other stage after them; the
            // barrier at the end tells that every warp is done with this stage and that the other one is full
            bool more = kt + 1 < steps;
            if (more) next = Load(x16, w16, (kt + 1) * Bk, m0, n0, m, n, k, tid, threads, wide);
            int st = (kt & 1) * StageBytes;
            acc = Step(acc, sh, shAt, st, SharedBytes / 4, wm, wn, lane, wi, bf16, wide);
            if (more) Store(sh, ((kt + 1) & 1) * StageBytes, next, tid, threads, wide);
            Group.Barrier();
        }
        Put(y, acc, m0 + wm, n0 + wn, lane, m, n, flags & 1, wide);
    }

    [PromoteLocals]
    static void F16AsyncKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, int m, int n, int k, int flags) =>
        AsyncBody(x16, w16, xAt, wAt, y, m, n, k, flags, false, false, AsyncStages);

    [PromoteLocals]
    static void Bf16AsyncKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, int m, int n, int k, int flags) =>
        AsyncBody(x16, w16, xAt, wAt, y, m, n, k, flags, true, false, AsyncStages);

    [PromoteLocals]
    static void F16AsyncWideKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, int m, int n, int k, int flags) =>
        AsyncBody(x16, w16, xAt, wAt, y, m, n, k, flags, false, true, AsyncStages);

    [PromoteLocals]
    static void Bf16AsyncWideKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, int m, int n, int k, int flags) =>
        AsyncBody(x16, w16, xAt, wAt, y, m, n, k, flags, true, true, AsyncStages);

    /// <summary>As <see cref="Body"/>, the tiles through <paramref name="stages"/> stages filled by <c>cp.async</c>
    /// (<see cref="Async"/>). xAt and wAt are the operands' device addresses (for cp.async); the views serve the
    /// emulation.</summary>
    static void AsyncBody(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, int m, int n, int k, int flags,
                          bool bf16, bool wide, int stages)
    {
        var sh = SharedMemory.GetDynamic<uint>();
        uint shAt = Bulk.Dynamic(0);
        int tid = Group.IdxX, lane = tid & 31, wi = tid >> 5;
        int mTiles = (m + Bm - 1) / Bm;
        int m0 = Grid.IdxX % mTiles * Bm, n0 = Grid.IdxX / mTiles * Bn;
        int wm = (wi & 1) * 64, wn = (wi >> 1) * (wide ? 64 : 32), threads = wide ? 128 : 256;
        int steps = (k + Bk - 1) / Bk;

        for (int s = 0; s < stages - 1; s++)
        {
            if (s < steps) Issue(x16, w16, xAt, wAt, sh, shAt, s, s * Bk, m0, n0, m, n, k, tid, threads);
            Commit();
        }
        Acc acc = default;
        for (int kt = 0; kt < steps; kt++)
        {
            // this thread's copies of step kt have landed; the barrier makes everyone's visible and tells that every warp
            // is done with step kt − 1, whose stage the next issue refills
            WaitAllButNewest();
            Group.Barrier();
            int nk = kt + stages - 1;
            if (nk < steps) Issue(x16, w16, xAt, wAt, sh, shAt, nk % stages, nk * Bk, m0, n0, m, n, k, tid, threads);
            Commit();
            int st = kt % stages * StageBytes;
            acc = Step(acc, sh, shAt, st, stages * StageBytes / 4, wm, wn, lane, wi, bf16, wide);
        }
        Put(y, acc, m0 + wm, n0 + wn, lane, m, n, flags & 1, wide);
    }

    /// <summary>Step <paramref name="k0"/>'s tiles into stage <paramref name="stage"/>: thread i copies chunks i, i + T, …
    /// (T threads) of x's 128 × 4 and of W's, chunk v being row v / 4, inputs 8·(v mod 4) … +8; zeros past the ends.</summary>
    static void Issue(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<uint> sh, uint shAt, int stage, int k0,
                      int m0, int n0, int m, int n, int k, int tid, int threads)
    {
        int st = stage * StageBytes, kv = k / 8;
        for (int j = 0; j < 512 / threads; j++)
        {
            int v = tid + threads * j, row = v >> 2, c = v & 3, col = k0 + 8 * c;
            bool colOk = col < k;
            long xi = (long)(m0 + row) * kv + col / 8, wi = (long)(n0 + row) * kv + col / 8;
            Copy16(x16, xAt, xi, colOk && m0 + row < m, sh, shAt, st + Swz(row, c));
            Copy16(w16, wAt, wi, colOk && n0 + row < n, sh, shAt, st + TileBytes + Swz(row, c));
        }
    }

    /// <summary>cp.async of 16-byte unit <paramref name="i"/> of <paramref name="src"/> (device address
    /// <paramref name="srcAt"/>) to shared byte <paramref name="dst"/>, or 16 zero bytes when not <paramref name="ok"/>
    /// (the source size 0 reads nothing; PTX ISA, cp.async's src-size).</summary>
    internal static void Copy16(ArrayView<Vec16> src, long srcAt, long i, bool ok, ArrayView<uint> sh, uint shAt, int dst)
    {
        if (CudaAsm.IsSupported)
        {
            long from = ok ? srcAt + 16 * i : srcAt;
            int size = ok ? 16 : 0;
            CudaAsm.Emit("cp.async.cg.shared.global [%0], [%1], 16, %2;", shAt + (uint)dst, from, size);
            return;
        }
        var v = ok ? src.AsAligned(16)[i] : default;
        int at = dst / 4;
        sh[at] = v.X;
        sh[at + 1] = v.Y;
        sh[at + 2] = v.Z;
        sh[at + 3] = v.W;
    }

    internal static void Commit()
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("cp.async.commit_group;");
    }

    /// <summary>Every group of this thread's copies but the newest committed has landed: with three stages one group stays
    /// in flight (every ring here has three; the instruction takes the count as an immediate).</summary>
    internal static void WaitAllButNewest()
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("cp.async.wait_group 1;");
    }

    /// <summary>A warp's four row tiles of accumulators (its 64 rows).</summary>
    struct Acc
    {
        public Row8 R0, R1, R2, R3;
    }

    /// <summary>One 32-wide step of a warp's products from the stage at byte <paramref name="st"/>, in two halves of 16:
    /// the fragments by ldmatrix, then the products (on the CPU accelerator, emulated through the warp's scratch at word
    /// <paramref name="scratchWord"/> + its own). The staged and the cp.async forms share it.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static Acc Step(Acc acc, ArrayView<uint> sh, uint shAt, int st, int scratchWord, int wm, int wn, int lane, int wi, bool bf16, bool wide)
    {
        for (int h = 0; h < 2; h++)
        {
            var a0 = LoadA(sh, shAt, st, wm, h, lane);
            var a1 = LoadA(sh, shAt, st, wm + 16, h, lane);
            var a2 = LoadA(sh, shAt, st, wm + 32, h, lane);
            var a3 = LoadA(sh, shAt, st, wm + 48, h, lane);
            var b0 = LoadB(sh, shAt, st, wn, h, lane);
            var b1 = LoadB(sh, shAt, st, wn + 16, h, lane);
            Frag4 b2 = default, b3 = default;
            if (wide)
            {
                b2 = LoadB(sh, shAt, st, wn + 32, h, lane);
                b3 = LoadB(sh, shAt, st, wn + 48, h, lane);
            }
            if (CudaAsm.IsSupported)
            {
                acc.R0 = Tile(acc.R0, a0, b0, b1, b2, b3, lane, bf16, wide);
                acc.R1 = Tile(acc.R1, a1, b0, b1, b2, b3, lane, bf16, wide);
                acc.R2 = Tile(acc.R2, a2, b0, b1, b2, b3, lane, bf16, wide);
                acc.R3 = Tile(acc.R3, a3, b0, b1, b2, b3, lane, bf16, wide);
            }
            else
            {
                var f = new Frags { A0 = a0, A1 = a1, A2 = a2, A3 = a3, B0 = b0, B1 = b1, B2 = b2, B3 = b3 };
                var scratch = sh.SubView(scratchWord + wi * 32 * EmuWords, 32 * EmuWords);
                EmuPut(scratch, f, lane);
                Group.Barrier();
                acc.R0 = EmuTile(acc.R0, scratch, 0, lane, bf16, wide);
                acc.R1 = EmuTile(acc.R1, scratch, 4, lane, bf16, wide);
                acc.R2 = EmuTile(acc.R2, scratch, 8, lane, bf16, wide);
                acc.R3 = EmuTile(acc.R3, scratch, 12, lane, bf16, wide);
                Group.Barrier();
            }
        }
        return acc;
    }

    /// <summary>Byte offset of chunk <paramref name="c"/> (16 bytes) of tile row <paramref name="row"/>, swizzled (see the
    /// class comment).</summary>
    internal static int Swz(int row, int c) => row * (Bk * 2) + ((c ^ ((row >> 1) & 3)) << 4);

    /// <summary>A thread's chunks of one step: 16 bytes each of x and of W (2 of each with 8 warps, 4 with 4).</summary>
    struct Chunks
    {
        public Vec16 X0, X1, X2, X3, W0, W1, W2, W3;
    }

    /// <summary>Thread i's chunks of step <paramref name="k0"/>: chunks i, i + T, … (T threads) of x's 128 × 4 and of W's,
    /// chunk v being row v / 4, inputs 8·(v mod 4) … +8; zeros past the ends. All loads are issued before any is used.</summary>
    static Chunks Load(ArrayView<Vec16> x16, ArrayView<Vec16> w16, int k0, int m0, int n0, int m, int n, int k, int tid, int threads, bool wide)
    {
        var xv = x16.AsAligned(16);
        var wv = w16.AsAligned(16);
        Chunks c = default;
        c.X0 = Chunk(xv, m0, k0, tid, m, k);
        c.X1 = Chunk(xv, m0, k0, tid + threads, m, k);
        c.W0 = Chunk(wv, n0, k0, tid, n, k);
        c.W1 = Chunk(wv, n0, k0, tid + threads, n, k);
        if (wide)
        {
            c.X2 = Chunk(xv, m0, k0, tid + 2 * threads, m, k);
            c.X3 = Chunk(xv, m0, k0, tid + 3 * threads, m, k);
            c.W2 = Chunk(wv, n0, k0, tid + 2 * threads, n, k);
            c.W3 = Chunk(wv, n0, k0, tid + 3 * threads, n, k);
        }
        return c;
    }

    static Vec16 Chunk(ArrayView<Vec16> v, int r0, int k0, int i, int rows, int k)
    {
        int row = r0 + (i >> 2), col = k0 + 8 * (i & 3);
        return row < rows && col < k ? v[(long)row * (k / 8) + col / 8] : default;
    }

    static void Store(ArrayView<uint> sh, int st, Chunks c, int tid, int threads, bool wide)
    {
        Put16(sh, st + Swz(tid >> 2, tid & 3), c.X0);
        Put16(sh, st + Swz((tid + threads) >> 2, tid & 3), c.X1);
        Put16(sh, st + TileBytes + Swz(tid >> 2, tid & 3), c.W0);
        Put16(sh, st + TileBytes + Swz((tid + threads) >> 2, tid & 3), c.W1);
        if (!wide) return;
        Put16(sh, st + Swz((tid + 2 * threads) >> 2, tid & 3), c.X2);
        Put16(sh, st + Swz((tid + 3 * threads) >> 2, tid & 3), c.X3);
        Put16(sh, st + TileBytes + Swz((tid + 2 * threads) >> 2, tid & 3), c.W2);
        Put16(sh, st + TileBytes + Swz((tid + 3 * threads) >> 2, tid & 3), c.W3);
    }

    /// <summary>16 bytes at shared byte <paramref name="at"/> (16-aligned): one 16-byte store.</summary>
    static void Put16(ArrayView<uint> sh, int at, Vec16 v) => sh.Cast<Vec16>().AsAligned(16)[at / 16] = v;

    /// <summary>ldmatrix.x4: lane l gives the row of matrix l / 8 at shared byte <paramref name="at"/>; register j of lane l
    /// is matrix j's row l / 4, halves 2·(l mod 4) and +1.</summary>
    internal static Frag4 LdMatrix(uint shAt, int at)
    {
        Output<uint> d0 = default, d1 = default, d2 = default, d3 = default;
        Input<uint> a = shAt + (uint)at;
        CudaAsm.EmitRef("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];", ref d0, ref d1, ref d2, ref d3, ref a);
        Frag4 f;
        f.R0 = d0.Value; f.R1 = d1.Value; f.R2 = d2.Value; f.R3 = d3.Value;
        return f;
    }

    /// <summary>x's A fragment for tile rows <paramref name="row0"/> … +16, inputs 16h … +16 of the stage: matrices (rows
    /// 0–7, inputs 0–7), (8–15, 0–7), (0–7, 8–15), (8–15, 8–15) = mma's a0 … a3.</summary>
    internal static Frag4 LoadA(ArrayView<uint> sh, uint shAt, int st, int row0, int h, int lane)
    {
        if (!CudaAsm.IsSupported)
        {
            int g = lane >> 2, t = lane & 3;
            Frag4 f;
            f.R0 = sh[(st + Swz(row0 + g, 2 * h)) / 4 + t];
            f.R1 = sh[(st + Swz(row0 + 8 + g, 2 * h)) / 4 + t];
            f.R2 = sh[(st + Swz(row0 + g, 2 * h + 1)) / 4 + t];
            f.R3 = sh[(st + Swz(row0 + 8 + g, 2 * h + 1)) / 4 + t];
            return f;
        }
        int q = lane >> 3, row = row0 + ((q & 1) << 3) + (lane & 7), c = 2 * h + (q >> 1);
        return LdMatrix(shAt, st + Swz(row, c));
    }

    /// <summary>W's B fragments for tile outputs <paramref name="out0"/> … +16, inputs 16h … +16: matrices (outputs 0–7,
    /// inputs 0–7), (0–7, 8–15), (8–15, 0–7), (8–15, 8–15) = b0, b1 of the first 8 outputs, then of the next 8.</summary>
    static Frag4 LoadB(ArrayView<uint> sh, uint shAt, int st, int out0, int h, int lane)
    {
        if (!CudaAsm.IsSupported)
        {
            int g = lane >> 2, t = lane & 3, b = st + TileBytes;
            Frag4 f;
            f.R0 = sh[(b + Swz(out0 + g, 2 * h)) / 4 + t];
            f.R1 = sh[(b + Swz(out0 + g, 2 * h + 1)) / 4 + t];
            f.R2 = sh[(b + Swz(out0 + 8 + g, 2 * h)) / 4 + t];
            f.R3 = sh[(b + Swz(out0 + 8 + g, 2 * h + 1)) / 4 + t];
            return f;
        }
        int q = lane >> 3, row = out0 + ((q >> 1) << 3) + (lane & 7), c = 2 * h + (q & 1);
        return LdMatrix(shAt, st + TileBytes + Swz(row, c));
    }

    /// <summary>A lane's fragments of one 16-wide step: A of the warp's 4 row tiles, B of its 8 (or 4) output tiles.</summary>
    struct Frags
    {
        public Frag4 A0, A1, A2, A3, B0, B1, B2, B3;
    }

    /// <summary>Words a lane puts in the emulation's scratch, past the stages:
    /// its 16 A and up to 16 B fragment registers.</summary>
    const int EmuWords = 32;

    static void EmuPut(ArrayView<uint> s, Frags f, int lane)
    {
        int at = lane * EmuWords;
        s[at] = f.A0.R0; s[at + 1] = f.A0.R1; s[at + 2] = f.A0.R2; s[at + 3] = f.A0.R3;
        s[at + 4] = f.A1.R0; s[at + 5] = f.A1.R1; s[at + 6] = f.A1.R2; s[at + 7] = f.A1.R3;
        s[at + 8] = f.A2.R0; s[at + 9] = f.A2.R1; s[at + 10] = f.A2.R2; s[at + 11] = f.A2.R3;
        s[at + 12] = f.A3.R0; s[at + 13] = f.A3.R1; s[at + 14] = f.A3.R2; s[at + 15] = f.A3.R3;
        s[at + 16] = f.B0.R0; s[at + 17] = f.B0.R1; s[at + 18] = f.B0.R2; s[at + 19] = f.B0.R3;
        s[at + 20] = f.B1.R0; s[at + 21] = f.B1.R1; s[at + 22] = f.B1.R2; s[at + 23] = f.B1.R3;
        s[at + 24] = f.B2.R0; s[at + 25] = f.B2.R1; s[at + 26] = f.B2.R2; s[at + 27] = f.B2.R3;
        s[at + 28] = f.B3.R0; s[at + 29] = f.B3.R1; s[at + 30] = f.B3.R2; s[at + 31] = f.B3.R3;
    }

    /// <summary>The emulated products of one row tile (A at scratch word <paramref name="a"/> of each lane) with the 8 (or 4)
    /// output tiles, by mma's fragment layout (<see cref="Mma.M16N8K16"/>): lane 4g + j holds A[g, 2j..], A[g+8, 2j..],
    /// A[g, 2j+8..], A[g+8, 2j+8..] and, for output tile p, B[g, 2j..] and B[g, 2j+8..] at words 16 + 2p and 17 + 2p.
    /// Each lane sums its four outputs of each tile in f32, in k order.</summary>
    static Row8 EmuTile(Row8 r, ArrayView<uint> s, int a, int lane, bool bf16, bool wide)
    {
        r.N0 = Mma.EmuProduct(r.N0, s, EmuWords, a, 16, lane, bf16);
        r.N1 = Mma.EmuProduct(r.N1, s, EmuWords, a, 18, lane, bf16);
        r.N2 = Mma.EmuProduct(r.N2, s, EmuWords, a, 20, lane, bf16);
        r.N3 = Mma.EmuProduct(r.N3, s, EmuWords, a, 22, lane, bf16);
        if (!wide) return r;
        r.N4 = Mma.EmuProduct(r.N4, s, EmuWords, a, 24, lane, bf16);
        r.N5 = Mma.EmuProduct(r.N5, s, EmuWords, a, 26, lane, bf16);
        r.N6 = Mma.EmuProduct(r.N6, s, EmuWords, a, 28, lane, bf16);
        r.N7 = Mma.EmuProduct(r.N7, s, EmuWords, a, 30, lane, bf16);
        return r;
    }

    static Row8 Tile(Row8 r, Frag4 a, Frag4 b01, Frag4 b23, Frag4 b45, Frag4 b67, int lane, bool bf16, bool wide)
    {
        r.N0 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b01.R0, b01.R1, r.N0, bf16);
        r.N1 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b01.R2, b01.R3, r.N1, bf16);
        r.N2 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b23.R0, b23.R1, r.N2, bf16);
        r.N3 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b23.R2, b23.R3, r.N3, bf16);
        if (!wide) return r;
        r.N4 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b45.R0, b45.R1, r.N4, bf16);
        r.N5 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b45.R2, b45.R3, r.N5, bf16);
        r.N6 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b67.R0, b67.R1, r.N6, bf16);
        r.N7 = Mma.M16N8K16Asm(a.R0, a.R1, a.R2, a.R3, b67.R2, b67.R3, r.N7, bf16);
        return r;
    }

    /// <summary>A warp's outputs: its four row tiles from row <paramref name="row0"/>, outputs from <paramref name="col0"/>.</summary>
    static void Put(ArrayView<float> y, Acc acc, int row0, int col0, int lane, int m, int n, int accumulate, bool wide)
    {
        int g = lane >> 2, col = col0 + 2 * (lane & 3);
        Put(y, acc.R0, row0 + g, col, m, n, accumulate, wide);
        Put(y, acc.R1, row0 + 16 + g, col, m, n, accumulate, wide);
        Put(y, acc.R2, row0 + 32 + g, col, m, n, accumulate, wide);
        Put(y, acc.R3, row0 + 48 + g, col, m, n, accumulate, wide);
    }

    internal static void Put(ArrayView<float> y, Row8 r, int row, int col, int m, int n, int accumulate, bool wide)
    {
        Put4(y, r.N0, row, col, m, n, accumulate);
        Put4(y, r.N1, row, col + 8, m, n, accumulate);
        Put4(y, r.N2, row, col + 16, m, n, accumulate);
        Put4(y, r.N3, row, col + 24, m, n, accumulate);
        if (!wide) return;
        Put4(y, r.N4, row, col + 32, m, n, accumulate);
        Put4(y, r.N5, row, col + 40, m, n, accumulate);
        Put4(y, r.N6, row, col + 48, m, n, accumulate);
        Put4(y, r.N7, row, col + 56, m, n, accumulate);
    }

    static void Put4(ArrayView<float> y, Mma.Float4 d, int row, int col, int m, int n, int accumulate)
    {
        if (row < m)
        {
            if (col < n) MatMul.Put(y, (long)row * n + col, d.X, accumulate);
            if (col + 1 < n) MatMul.Put(y, (long)row * n + col + 1, d.Y, accumulate);
        }
        if (row + 8 < m)
        {
            if (col < n) MatMul.Put(y, (long)(row + 8) * n + col, d.Z, accumulate);
            if (col + 1 < n) MatMul.Put(y, (long)(row + 8) * n + col + 1, d.W, accumulate);
        }
    }

    // ---- audit ----

    /// <summary>f16 or bf16 at random, accumulate on or off; rows and outputs 1–3 tiles of 128 with ragged edges, in a
    /// multiple of 8 up to 160 (steps of 32 through both stages and back, a partial last one). Off CUDA at
    /// most 2 tiles each way and 96 inputs: ILGPU's CPU accelerator pays per barrier and shuffle of 256 OS threads.
    /// Operands are values the half type holds, so the f64 twin over them is the exact answer.</summary>
    public static AuditCase Case => HalfCase("gemm half", (x, w, y, accumulate, rng) =>
    {
        // the staged form or the cp.async one (GemmHalf.Async), warp tiles of 64 × 64 or 64 × 32, at random
        bool async = rng.Next(2) == 0, wide = rng.Next(2) == 0;
        Run(x, w, y, accumulate, async, wide);
        return $"{(async ? " cp.async" : " staged")}{(wide ? " 64×64" : " 64×32")}";
    });

    /// <summary>An audit case of a half-operand GEMM: the operands as <see cref="Case"/> says, <paramref name="run"/>
    /// computes y (+)= x·Wᵀ in its form and names it, checked against the f64 twin.</summary>
    internal static AuditCase HalfCase(string name, Func<Tensor, Tensor, Tensor, bool, Random, string> run) => new(name, Check.F32Bound, (dev, rng) =>
    {
        var dt = rng.Next(2) == 0 ? DType.F16 : DType.BF16;
        bool cuda = dev.Kind == DeviceKind.Cuda;
        int rows = Check.Size(rng, cuda ? 300 : 140), inDim = 8 * Check.Size(rng, cuda ? 20 : 12), outDim = Check.Size(rng, cuda ? 300 : 140);
        bool accumulate = rng.Next(2) == 0;
        var x = Check.Rounded(Check.Values(rng, (long)rows * inDim, 2f), dt);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), dt);
        var want = accumulate ? Check.Values(rng, (long)rows * outDim, 3f) : new float[rows * outDim];
        using var tx = Tensor.From(x, [rows, inDim], dev, dt);
        using var tw = Tensor.From(w, [outDim, inDim], dev, dt);
        using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
        string form = run(tx, tw, ty, accumulate, rng);
        MatMul.Twin(x, w, want, rows, inDim, outDim, accumulate);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ {dt}{(accumulate ? " +=" : "")}{form}");
    });
}

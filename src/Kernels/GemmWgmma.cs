using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using static BitDeltaNative.Kernels.GemmHalf;
using static BitDeltaNative.Kernels.MatMul;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The half-operand GEMM of <see cref="GemmHalf"/> (y (+)= x·Wᵀ, x [rows, in] and W [out, in] both f16 or both bf16, y
/// f32) on Hopper's warpgroup products, <c>wgmma.mma_async.m64n64k16</c> (PTX ISA §9.7.15): one instruction is a 64 × 64
/// × 16 product of a whole warpgroup (4 warps), where <c>mma.sync</c> is 16 × 8 × 16 of one warp, and it reads B from
/// shared memory itself. cuBLAS's 550–730 TFLOP/s at 7B shapes on the H200 runs on it; <c>mma.sync</c> peaks near 460.
///
/// A block of 2 warpgroups owns a 128 × 128 tile of y; warpgroup g computes rows 64g … +64 and all 128 outputs, as two
/// accumulator sets of 64 outputs (32 f32 a thread each). x's tile goes to registers by <c>ldmatrix</c> (wgmma's A from
/// registers: warp w of a warpgroup gives rows 16w … +16 in mma.m16n8k16's A layout); the tensor cores read W's tile
/// from shared memory through a matrix descriptor (PTX ISA §9.7.15.5.1). Two forms:
/// - the default walks K in steps of 64 through a ring of 3 stages of 32 KB filled by <c>cp.async</c> (97 KB a block,
///   past the 48 KB a block gets without asking: <see cref="SharedBytesAttribute"/>), both tiles in rows of 128 bytes
///   in the 128-byte swizzle (chunk c of row r at chunk c ⊕ (r mod 8); the descriptor's mode 1, 1024 bytes between
///   8-row groups), so that a warp's copies read whole 128-byte lines of L2;
/// - <c>swizzled: false</c> walks K in steps of 32 through 3 stages of 16 KB, W in core matrices without swizzle
///   (chunk c of row r at 512·(r / 8) + 128·c + 16·(r mod 8): leading offset 128, stride 512, as <see cref="Wgmma"/>
///   pinned down). Its warps read half lines; L2 held it at GemmHalf's rate (bench/NOTES.md).
///
/// A grid under one block a multiprocessor (512 rows × 4096 outputs: 128 tiles on 132) cuts K into ranges
/// (<see cref="SplitFor"/>): range 0 writes y, the others f32 planes added into y in range order by a second launch.
///
/// Why several asm statements a step: ILGPU's <c>EmitRef</c> takes at most 44 operands, so one statement holds 32
/// accumulators (m64n64), the 8 A registers of two 16-wide halves, the descriptor and the scale flag: 42. A register an
/// unfinished wgmma still writes must not be touched (PTX ISA, wgmma.wait_group), and ILGPU copies the accumulators
/// between statements; ptxas allocates them in place (the SASS has no moves there, and no serialization warning), so
/// the statements of a step are issued back to back and the last one waits for all of them.
///
/// Off CUDA (ILGPU's CPU accelerator, the tests in CI) each thread sums its 64 outputs itself, reading x from the swizzled
/// tile and W through the descriptor's meaning (<see cref="Core"/>): the staging and both layouts are checked against the
/// twin there, the instruction and ldmatrix's mapping on the GPU (audit, tests with CUDA as the device).
/// </summary>
public static class GemmWgmma
{
    const int Bm = 128, Bn = 128, Bk = 32, Threads = 256;
    const int TileBytes = 128 * Bk * 2, StageBytes = 2 * TileBytes;

    /// <summary>Stages of both forms' rings (48 KB of 16 KB stages, 96 KB of 32 KB).</summary>
    const int Stages = 3;

    /// <summary>Descriptor offsets of W's core-matrix tile: 128 bytes between core matrices along K, 512 along N.</summary>
    const int Leading = 128, Stride = 512;

    /// <summary>Use this GEMM where it runs (<see cref="Runs"/>) instead of GemmHalf's mma.sync form.</summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>Whether the device runs it: a Hopper GPU (the kernels' PTX names sm_90a), or ILGPU's CPU accelerator
    /// (the emulation).</summary>
    public static bool Runs(Device dev) =>
        dev.IsIlgpu && (dev.Kind != DeviceKind.Cuda || dev.Accelerator is CudaAccelerator { Architecture: var a } && a == CudaArchitecture.SM_90);

    /// <summary>y (+)= x·Wᵀ as <see cref="GemmHalf.Run"/> takes it (same checks), on the warpgroup products;
    /// <paramref name="swizzled"/> picks the form (see the class comment), <paramref name="split"/> the number of K ranges
    /// (0: <see cref="SplitFor"/> picks).</summary>
    public static void Run(Tensor x, Tensor w, Tensor y, bool accumulate = false, bool swizzled = true, int split = 0)
    {
        long rows = Rows(x, w, y, "wgmma gemm");
        int outDim = w.Dim(0), inDim = w.Dim(1);
        if (!GemmHalf.Applies(x, w) || !Runs(x.Device))
            throw new ArgumentException($"wgmma gemm: needs a Hopper GPU or ILGPU's CPU accelerator, in a multiple of 8 and 16-byte aligned operands, got {x} and {w} on {x.Device}");
        if (split < 0 || split > MaxSplit) throw new ArgumentException($"wgmma gemm: split {split} outside 0 … {MaxSplit}");
        if (rows == 0 || outDim == 0) return;
        if (rows > int.MaxValue / 2) throw new ArgumentException($"wgmma gemm x: too many rows in {x}");
        int m = (int)rows, mTiles = (m + Bm - 1) / Bm, nTiles = (outDim + Bn - 1) / Bn, tiles = mTiles * nTiles;
        int steps = (inDim + (swizzled ? BkS : Bk) - 1) / (swizzled ? BkS : Bk);
        if (split == 0) split = SplitFor(y.Device, tiles, steps);
        split = Math.Max(1, Math.Min(split, steps));
        bool bf16 = x.DType == DType.BF16;
        var dev = y.Device;
        // planes 1 … split − 1 of the partial sums (plane 0 goes to y), added into y in plane order after the products
        using var part = Tensor.Empty([split > 1 ? checked((split - 1) * m * outDim) : 1], DType.F32, dev);
        int flags = (accumulate ? 1 : 0) | split << 8;
        var run = dev.GroupedKernel<Action<KernelConfig, ArrayView<Vec16>, ArrayView<Vec16>, long, long, ArrayView<float>, ArrayView<float>, int, int, int, int>>(
            swizzled ? bf16 ? Bf16Kernel : F16Kernel : bf16 ? Bf16CoreKernel : F16CoreKernel);
        run(new KernelConfig(tiles * split, Threads, SharedMemoryConfig.RequestDynamic<byte>(swizzled ? Stages * StageBytesS + 1024 : Stages * StageBytes)),
            x.View<Vec16>(), w.View<Vec16>(), x.DeviceAddress, w.DeviceAddress, y.View<float>(), part.View<float>(), m, outDim, inDim, flags);
        if (split > 1)
        {
            long mn = (long)m * outDim;
            dev.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, long, int>>(AddPlanesKernel)((int)mn, y.View<float>(), part.View<float>(), mn, split - 1);
        }
    }

    /// <summary>Most K ranges a call takes.</summary>
    public const int MaxSplit = 8;

    /// <summary>
    /// K ranges for a grid of <paramref name="tiles"/> tiles: doubled while the grid still fits two blocks a
    /// multiprocessor (registers and shared memory hold two) and each range keeps at least 8 steps. A grid under one block
    /// a multiprocessor (512 rows × 4096 outputs: 128 tiles on the H200's 132) runs its one block per multiprocessor with
    /// no second to cover its waits, where 2048 rows run two and reach 1.3–1.6× the rate (bench/RESULTS.md); the partial
    /// sums cost one f32 plane of y per extra range, written and read once.
    /// </summary>
    public static int SplitFor(Device dev, int tiles, int steps) => SplitFor(dev.Accelerator?.NumMultiprocessors ?? 1, tiles, steps);

    /// <summary><see cref="SplitFor(Device, int, int)"/> for <paramref name="multiprocessors"/>.</summary>
    public static int SplitFor(int multiprocessors, int tiles, int steps)
    {
        int slots = 2 * multiprocessors, split = 1;
        while (split * 2 <= MaxSplit && tiles * split * 2 <= slots && steps / (split * 2) >= 8) split *= 2;
        return split;
    }

    /// <summary>y[i] += planes[0][i] + … in plane order (the K ranges after the first).</summary>
    static void AddPlanesKernel(Index1D i, ArrayView<float> y, ArrayView<float> planes, long mn, int count)
    {
        float v = y[i];
        for (int z = 0; z < count; z++) v += planes[z * mn + i];
        y[i] = v;
    }

    /// <summary>Block <paramref name="b"/>'s tile and K range: tile b mod tiles (rows fastest, so neighbours share W's tile),
    /// steps [s0, s0 + steps) of <paramref name="all"/>, range b / tiles of the split in flags' bits 8 and up.</summary>
    static (int M0, int N0, int Range, int S0, int Steps) Place(int b, int m, int flags, int all)
    {
        int mTiles = (m + Bm - 1) / Bm, split = IntrinsicMath.Max(1, flags >> 8);
        int tiles = Grid.DimX / split, z = b / tiles, t = b % tiles;
        int per = (all + split - 1) / split, s0 = z * per;
        return (t % mTiles * Bm, t / mTiles * Bn, z, s0, IntrinsicMath.Max(0, IntrinsicMath.Min(all, s0 + per) - s0));
    }

    /// <summary>Where a block's sums go: range 0 into y (added to it when accumulating), range z into plane z − 1.</summary>
    static (ArrayView<float> To, int Accumulate) Target(ArrayView<float> y, ArrayView<float> part, int z, int m, int n, int flags) =>
        z == 0 ? (y, flags & 1) : (part.SubView((long)(z - 1) * m * n, (long)m * n), 0);

    [ArchSpecific, PromoteLocals]
    static void F16CoreKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, ArrayView<float> part, int m, int n, int k, int flags) =>
        Body(x16, w16, xAt, wAt, y, part, m, n, k, flags, false);

    [ArchSpecific, PromoteLocals]
    static void Bf16CoreKernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, ArrayView<float> part, int m, int n, int k, int flags) =>
        Body(x16, w16, xAt, wAt, y, part, m, n, k, flags, true);

    /// <summary>The core-matrix form; <paramref name="bf16"/> is a constant in each kernel (ILGPU inlines the body).</summary>
    static void Body(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, ArrayView<float> part, int m, int n, int k,
                     int flags, bool bf16)
    {
        var sh = SharedMemory.GetDynamic<uint>();
        uint shAt = Bulk.Dynamic(0);
        int tid = Group.IdxX, lane = tid & 31, wi = tid >> 5;
        var (m0, n0, z, s0, steps) = Place(Grid.IdxX, m, flags, (k + Bk - 1) / Bk);
        // warp wi's 16 rows of its warpgroup's 64 (wgmma's A from registers)
        int wr = (wi >> 2) * 64 + 16 * (wi & 3);

        for (int s = 0; s < Stages - 1; s++)
        {
            if (s < steps) Issue(x16, w16, xAt, wAt, sh, shAt, s, (s0 + s) * Bk, m0, n0, m, n, k, tid);
            Commit();
        }
        Row8 lo = default, hi = default;
        for (int kt = 0; kt < steps; kt++)
        {
            // this thread's copies of step kt have landed; the proxy fence hands them to the tensor cores' (async)
            // proxy, the barrier makes everyone's visible and tells that step kt − 1's products, whose stage the next
            // issue refills, are done (the step's last statement waits for all of them)
            WaitAllButNewest();
            if (CudaAsm.IsSupported) CudaAsm.Emit("fence.proxy.async.shared::cta;");
            Group.Barrier();
            int nk = kt + Stages - 1;
            if (nk < steps) Issue(x16, w16, xAt, wAt, sh, shAt, nk % Stages, (s0 + nk) * Bk, m0, n0, m, n, k, tid);
            Commit();
            int st = kt % Stages * StageBytes;
            if (CudaAsm.IsSupported)
            {
                var a0 = LoadA(sh, shAt, st, wr, 0, lane);
                var a1 = LoadA(sh, shAt, st, wr, 1, lane);
                ulong d = Wgmma.Descriptor(shAt + (uint)(st + TileBytes), Leading, Stride);
                lo = Product(lo, a0, a1, d, bf16, false);
                // outputs 64 … 127: 8 core-matrix rows on, 4096 bytes (the descriptor counts 16-byte units)
                hi = Product(hi, a0, a1, d + (8 * Stride >> 4), bf16, true);
            }
            else
            {
                lo = Emulate(lo, sh, st, wr, 0, lane, bf16, false);
                hi = Emulate(hi, sh, st, wr, 64, lane, bf16, false);
            }
        }
        int g = lane >> 2, col = n0 + 2 * (lane & 3);
        var (to, acc) = Target(y, part, z, m, n, flags);
        Put(to, lo, m0 + wr + g, col, m, n, acc, true);
        Put(to, hi, m0 + wr + g, col + 64, m, n, acc, true);
    }

    // ---- 64-wide steps, both tiles in 128-byte swizzled rows (bench/NOTES.md: the 32-wide steps' half-line reads
    // held L2 at 82% of its throughput) ----

    const int BkS = 64, TileBytesS = 128 * BkS * 2, StageBytesS = 2 * TileBytesS;

    /// <summary>Byte offset of chunk <paramref name="c"/> (16 bytes, of 8) of tile row <paramref name="row"/> in the
    /// 128-byte swizzle (PTX ISA §9.7.15.5.1, swizzle mode 1): row r at 128·r, its chunk c at chunk c ⊕ (r mod 8). ldmatrix
    /// reads x's 8 rows of one chunk from 8 bank groups; the tensor cores read W's through a descriptor in that mode
    /// (stride 1024 bytes between 8-row groups; the tile 1024-byte aligned).</summary>
    static int Swz128(int row, int c) => (row << 7) + ((c ^ (row & 7)) << 4);

    /// <summary>Descriptor for a 128-byte-swizzled K-major tile at shared address <paramref name="at"/> (1024-aligned):
    /// mode 1 in bits 62–63, stride 1024 bytes, leading offset unused (1, as CUTLASS writes it).</summary>
    static ulong DescriptorS(uint at) => ((at & 0x3FFFFu) >> 4) | (1ul << 16) | ((ulong)(1024 >> 4) << 32) | (1ul << 62);

    [ArchSpecific, PromoteLocals, SharedBytes(Stages * StageBytesS + 1024)]
    static void F16Kernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, ArrayView<float> part, int m, int n, int k, int flags) =>
        BodySwizzled(x16, w16, xAt, wAt, y, part, m, n, k, flags, false);

    [ArchSpecific, PromoteLocals, SharedBytes(Stages * StageBytesS + 1024)]
    static void Bf16Kernel(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, ArrayView<float> part, int m, int n, int k, int flags) =>
        BodySwizzled(x16, w16, xAt, wAt, y, part, m, n, k, flags, true);

    /// <summary>As <see cref="Body"/> with 64-wide steps: 3 stages of 32 KB (and 1 KB to align them to 1024 bytes), a
    /// warp's copies reading whole 128-byte rows, four statements a step (outputs 0–63 and 64–127, inputs 0–31 and
    /// 32–63), only the last waiting.</summary>
    static void BodySwizzled(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<float> y, ArrayView<float> part, int m, int n,
                             int k, int flags, bool bf16)
    {
        var sh = SharedMemory.GetDynamic<uint>();
        uint shAt = Bulk.Dynamic(0);
        int pad = (int)((1024 - (shAt & 1023)) & 1023);
        int tid = Group.IdxX, lane = tid & 31, wi = tid >> 5;
        var (m0, n0, z, s0, steps) = Place(Grid.IdxX, m, flags, (k + BkS - 1) / BkS);
        int wr = (wi >> 2) * 64 + 16 * (wi & 3);
        // this thread's chunks: rows tid / 8 + 32j of both tiles, inputs 8·(tid mod 8) … of each step
        int r0 = tid >> 3, c0 = 8 * (tid & 7), rowsOk = 0;
        for (int j = 0; j < 4; j++)
        {
            if (m0 + r0 + 32 * j < m) rowsOk |= 1 << j;
            if (n0 + r0 + 32 * j < n) rowsOk |= 1 << (4 + j);
        }
        long xFrom = xAt + 2L * ((long)(m0 + r0) * k + c0), wFrom = wAt + 2L * ((long)(n0 + r0) * k + c0);

        for (int s = 0; s < Stages - 1; s++)
        {
            if (s < steps) IssueSwizzled(x16, w16, xAt, wAt, xFrom, wFrom, rowsOk, sh, shAt, pad + s * StageBytesS, (s0 + s) * BkS, k, tid);
            Commit();
        }
        Row8 lo = default, hi = default;
        for (int kt = 0; kt < steps; kt++)
        {
            WaitAllButNewest();
            if (CudaAsm.IsSupported) CudaAsm.Emit("fence.proxy.async.shared::cta;");
            Group.Barrier();
            int nk = kt + Stages - 1;
            if (nk < steps) IssueSwizzled(x16, w16, xAt, wAt, xFrom, wFrom, rowsOk, sh, shAt, pad + nk % Stages * StageBytesS, (s0 + nk) * BkS, k, tid);
            Commit();
            int st = pad + kt % Stages * StageBytesS;
            if (CudaAsm.IsSupported)
            {
                ulong d = DescriptorS(shAt + (uint)(st + TileBytesS));
                for (int q = 0; q < 2; q++)
                {
                    var a0 = LoadAS(shAt, st, wr, 2 * q, lane);
                    var a1 = LoadAS(shAt, st, wr, 2 * q + 1, lane);
                    // inputs 32q …: 64 bytes along the swizzled row (4 units); outputs 64 …: 64 rows on (8192 bytes)
                    lo = Product(lo, a0, a1, d + (ulong)(4 * q), bf16, false, true);
                    hi = Product(hi, a0, a1, d + (ulong)(4 * q + 512), bf16, q == 1, true);
                }
            }
            else
            {
                lo = Emulate(lo, sh, st, wr, 0, lane, bf16, true);
                hi = Emulate(hi, sh, st, wr, 64, lane, bf16, true);
            }
        }
        int g = lane >> 2, col = n0 + 2 * (lane & 3);
        var (to, acc) = Target(y, part, z, m, n, flags);
        Put(to, lo, m0 + wr + g, col, m, n, acc, true);
        Put(to, hi, m0 + wr + g, col + 64, m, n, acc, true);
    }

    /// <summary>Step <paramref name="k0"/>'s tiles at shared byte <paramref name="st"/>: thread i copies chunks i + 256j
    /// (j &lt; 4) of x's 128 × 8 and of W's, chunk v being row v / 8, inputs 8·(v mod 8) … +8, so that a warp reads 4
    /// whole 128-byte rows of each; zeros past the ends. A thread's chunks share their input column and lie 32 rows apart,
    /// so their addresses are one base and fixed strides (<paramref name="xFrom"/>, <paramref name="wFrom"/>: the
    /// thread's first chunk at step 0; <paramref name="rowsOk"/>: bit j for x's chunk j, bit 4 + j for W's).</summary>
    static void IssueSwizzled(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, long xFrom, long wFrom, int rowsOk,
                              ArrayView<uint> sh, uint shAt, int st, int k0, int k, int tid)
    {
        int row = tid >> 3, c = tid & 7, dst = st + Swz128(row, c);
        bool colOk = k0 + 8 * c < k;
        long stride = 32L * k * 2, step = 2L * k0;
        for (int j = 0; j < 1024 / Threads; j++)
        {
            // row + 32j has the same row mod 8, so the same swizzle: 32 rows on is 4096 bytes on
            CopyAt(x16, xAt, xFrom + j * stride + step, colOk && (rowsOk >> j & 1) != 0, sh, shAt, dst + 4096 * j);
            CopyAt(w16, wAt, wFrom + j * stride + step, colOk && (rowsOk >> (4 + j) & 1) != 0, sh, shAt, dst + TileBytesS + 4096 * j);
        }
    }

    /// <summary>cp.async of the 16 bytes at device address <paramref name="from"/> (in <paramref name="src"/>, which starts
    /// at <paramref name="srcAt"/>) to shared byte <paramref name="dst"/>, zeros when not <paramref name="ok"/>; off CUDA
    /// the element index comes back from the address.</summary>
    static void CopyAt(ArrayView<Vec16> src, long srcAt, long from, bool ok, ArrayView<uint> sh, uint shAt, int dst)
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cp.async.cg.shared.global [%0], [%1], 16, %2;", shAt + (uint)dst, ok ? from : srcAt, ok ? 16 : 0);
            return;
        }
        Copy16(src, srcAt, ok ? (from - srcAt) / 16 : 0, ok, sh, shAt, dst);
    }

    /// <summary>ldmatrix.x4 of x's A fragment for tile rows <paramref name="row0"/> … +16, inputs 16h … +16, from the
    /// swizzled tile (as <see cref="GemmHalf.LoadA"/>).</summary>
    static Frag4 LoadAS(uint shAt, int st, int row0, int h, int lane)
    {
        int q = lane >> 3, row = row0 + ((q & 1) << 3) + (lane & 7), c = 2 * h + (q >> 1);
        return LdMatrix(shAt, st + Swz128(row, c));
    }

    /// <summary>Byte offset of chunk <paramref name="c"/> (16 bytes) of W's tile row <paramref name="row"/> in core
    /// matrices (see the class comment).</summary>
    static int Core(int row, int c) => (row >> 3) * Stride + c * Leading + ((row & 7) << 4);

    /// <summary>Step <paramref name="k0"/>'s tiles into stage <paramref name="stage"/>: thread i copies chunks i and i + 256
    /// of x's 128 × 4 and of W's, zeros past the ends. x's chunk v is row v / 4, inputs 8·(v mod 4) … +8, into its swizzled
    /// row; W's is row 8·(v / 32) + v mod 8, inputs 8·((v / 8) mod 4) … +8, so that a quarter-warp's 8 chunks fill one
    /// core matrix, 128 contiguous bytes.</summary>
    static void Issue(ArrayView<Vec16> x16, ArrayView<Vec16> w16, long xAt, long wAt, ArrayView<uint> sh, uint shAt, int stage, int k0,
                      int m0, int n0, int m, int n, int k, int tid)
    {
        int st = stage * StageBytes, kv = k / 8;
        for (int j = 0; j < 512 / Threads; j++)
        {
            int v = tid + Threads * j;
            int xr = v >> 2, xc = k0 + 8 * (v & 3);
            int wr = ((v >> 5) << 3) | (v & 7), wc = (v >> 3) & 3, wcol = k0 + 8 * wc;
            Copy16(x16, xAt, (long)(m0 + xr) * kv + xc / 8, xc < k && m0 + xr < m, sh, shAt, st + Swz(xr, v & 3));
            Copy16(w16, wAt, (long)(n0 + wr) * kv + wcol / 8, wcol < k && n0 + wr < n, sh, shAt, st + TileBytes + Core(wr, wc));
        }
    }

    // One statement's text: fence, the step's two products (A from %32–%35, then %36–%39; B at descriptor %40, then 16
    // units = 256 bytes on), commit, and a wait for every product of this warpgroup (Wait) or none (NoWait). C# joins
    // the constants at compile time: ILGPU needs the text as one literal.
    const string Head = "{ .reg .pred p; .reg .b64 e; setp.ne.b32 p, %41, 0; add.s64 e, %40, 16; wgmma.fence.sync.aligned; ";
    const string D = "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}";
    const string F16 = "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 ", Bf16 = "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 ";
    const string First = D + ", {%32,%33,%34,%35}, %40, p, 1, 1, 0; ", Second = D + ", {%36,%37,%38,%39}, e, p, 1, 1, 0; ";
    const string Wait = "wgmma.commit_group.sync.aligned; wgmma.wait_group.sync.aligned 0; }", NoWait = "wgmma.commit_group.sync.aligned; }";
    const string F16Wait = Head + F16 + First + F16 + Second + Wait, F16NoWait = Head + F16 + First + F16 + Second + NoWait;
    // the 128-byte-swizzled tiles' (BodySwizzled): the second 16 inputs 32 bytes on along the swizzled row, 2 units
    const string HeadS = "{ .reg .pred p; .reg .b64 e; setp.ne.b32 p, %41, 0; add.s64 e, %40, 2; wgmma.fence.sync.aligned; ";
    const string F16WaitS = HeadS + F16 + First + F16 + Second + Wait, F16NoWaitS = HeadS + F16 + First + F16 + Second + NoWait;
    const string Bf16WaitS = HeadS + Bf16 + First + Bf16 + Second + Wait, Bf16NoWaitS = HeadS + Bf16 + First + Bf16 + Second + NoWait;
    const string Bf16Wait = Head + Bf16 + First + Bf16 + Second + Wait, Bf16NoWait = Head + Bf16 + First + Bf16 + Second + NoWait;

    /// <summary>The warpgroup's two products of one 32-wide step for 64 of its outputs: A from this lane's fragments of
    /// the step's two 16-wide halves, B through descriptor <paramref name="desc"/>, accumulated into <paramref name="c"/>
    /// in mma.m16n8's layout per 8 outputs; then, if <paramref name="wait"/>, a wait for all of this warpgroup's
    /// products (without it the accumulators are still being written when the statement ends: see the class
    /// comment).</summary>
    static Row8 Product(Row8 c, Frag4 x0, Frag4 x1, ulong desc, bool bf16, bool wait, bool swizzled = false)
    {
        Ref<float> c0 = c.N0.X, c1 = c.N0.Y, c2 = c.N0.Z, c3 = c.N0.W, c4 = c.N1.X, c5 = c.N1.Y, c6 = c.N1.Z, c7 = c.N1.W, c8 = c.N2.X, c9 = c.N2.Y, c10 = c.N2.Z, c11 = c.N2.W, c12 = c.N3.X, c13 = c.N3.Y, c14 = c.N3.Z, c15 = c.N3.W, c16 = c.N4.X, c17 = c.N4.Y, c18 = c.N4.Z, c19 = c.N4.W, c20 = c.N5.X, c21 = c.N5.Y, c22 = c.N5.Z, c23 = c.N5.W, c24 = c.N6.X, c25 = c.N6.Y, c26 = c.N6.Z, c27 = c.N6.W, c28 = c.N7.X, c29 = c.N7.Y, c30 = c.N7.Z, c31 = c.N7.W;
        Input<uint> a0 = x0.R0, a1 = x0.R1, a2 = x0.R2, a3 = x0.R3, a4 = x1.R0, a5 = x1.R1, a6 = x1.R2, a7 = x1.R3;
        Input<ulong> d = desc;
        Input<int> scale = 1;
        if (swizzled && bf16 && wait) CudaAsm.EmitRef(Bf16WaitS, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        else if (swizzled && bf16) CudaAsm.EmitRef(Bf16NoWaitS, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        else if (swizzled && wait) CudaAsm.EmitRef(F16WaitS, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        else if (swizzled) CudaAsm.EmitRef(F16NoWaitS, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        else if (bf16 && wait) CudaAsm.EmitRef(Bf16Wait, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        else if (bf16) CudaAsm.EmitRef(Bf16NoWait, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        else if (wait) CudaAsm.EmitRef(F16Wait, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        else CudaAsm.EmitRef(F16NoWait, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11, ref c12, ref c13, ref c14, ref c15, ref c16, ref c17, ref c18, ref c19, ref c20, ref c21, ref c22, ref c23, ref c24, ref c25, ref c26, ref c27, ref c28, ref c29, ref c30, ref c31, ref a0, ref a1, ref a2, ref a3, ref a4, ref a5, ref a6, ref a7, ref d, ref scale);
        c.N0.X = c0.Value; c.N0.Y = c1.Value; c.N0.Z = c2.Value; c.N0.W = c3.Value; c.N1.X = c4.Value; c.N1.Y = c5.Value; c.N1.Z = c6.Value; c.N1.W = c7.Value; c.N2.X = c8.Value; c.N2.Y = c9.Value; c.N2.Z = c10.Value; c.N2.W = c11.Value; c.N3.X = c12.Value; c.N3.Y = c13.Value; c.N3.Z = c14.Value; c.N3.W = c15.Value; c.N4.X = c16.Value; c.N4.Y = c17.Value; c.N4.Z = c18.Value; c.N4.W = c19.Value; c.N5.X = c20.Value; c.N5.Y = c21.Value; c.N5.Z = c22.Value; c.N5.W = c23.Value; c.N6.X = c24.Value; c.N6.Y = c25.Value; c.N6.Z = c26.Value; c.N6.W = c27.Value; c.N7.X = c28.Value; c.N7.Y = c29.Value; c.N7.Z = c30.Value; c.N7.W = c31.Value;
        return c;
    }

    /// <summary>The same 64 outputs' sums off CUDA: lane 4g + t's rows <paramref name="row"/> + g and +8, outputs
    /// <paramref name="out0"/> + 8j + 2t and +1, over the stage's inputs in order, from the tiles as the form lays them
    /// (<paramref name="swizzled"/>: both in the 128-byte swizzle; otherwise x in GemmHalf's rows, W in core matrices).</summary>
    static Row8 Emulate(Row8 c, ArrayView<uint> sh, int st, int row, int out0, int lane, bool bf16, bool swizzled)
    {
        int r0 = row + (lane >> 2), o0 = out0 + 2 * (lane & 3);
        c.N0 = Emulate4(c.N0, sh, st, r0, o0, bf16, swizzled);
        c.N1 = Emulate4(c.N1, sh, st, r0, o0 + 8, bf16, swizzled);
        c.N2 = Emulate4(c.N2, sh, st, r0, o0 + 16, bf16, swizzled);
        c.N3 = Emulate4(c.N3, sh, st, r0, o0 + 24, bf16, swizzled);
        c.N4 = Emulate4(c.N4, sh, st, r0, o0 + 32, bf16, swizzled);
        c.N5 = Emulate4(c.N5, sh, st, r0, o0 + 40, bf16, swizzled);
        c.N6 = Emulate4(c.N6, sh, st, r0, o0 + 48, bf16, swizzled);
        c.N7 = Emulate4(c.N7, sh, st, r0, o0 + 56, bf16, swizzled);
        return c;
    }

    static Mma.Float4 Emulate4(Mma.Float4 c, ArrayView<uint> sh, int st, int row, int o, bool bf16, bool swizzled)
    {
        int w = st + (swizzled ? TileBytesS : TileBytes);
        for (int kk = 0; kk < (swizzled ? BkS : Bk); kk++)
        {
            int ch = kk >> 3, e = (kk & 7) << 1;
            float a = Half(sh, st + (swizzled ? Swz128(row, ch) : Swz(row, ch)) + e, bf16);
            float b = Half(sh, st + (swizzled ? Swz128(row + 8, ch) : Swz(row + 8, ch)) + e, bf16);
            float p = Half(sh, w + (swizzled ? Swz128(o, ch) : Core(o, ch)) + e, bf16);
            float q = Half(sh, w + (swizzled ? Swz128(o + 1, ch) : Core(o + 1, ch)) + e, bf16);
            c.X += a * p;
            c.Y += a * q;
            c.Z += b * p;
            c.W += b * q;
        }
        return c;
    }

    /// <summary>The half at shared byte <paramref name="at"/> as f32.</summary>
    static float Half(ArrayView<uint> sh, int at, bool bf16)
    {
        uint bits = (sh[at >> 2] >> ((at & 2) << 3)) & 0xFFFFu;
        return bf16 ? Interop.IntAsFloat(bits << 16) : (float)Interop.IntAsFloat((ushort)bits);
    }

    // ---- audit ----

    /// <summary>As <see cref="GemmHalf.Case"/>: f16 or bf16, accumulate or not, ragged rows and outputs over 1–3 tiles of
    /// 128, inputs a multiple of 8 with a partial last step; operands the half type holds, so the f64 twin is exact.</summary>
    public static AuditCase Case => new("gemm wgmma", Check.F32Bound, (dev, rng) =>
        Runs(dev) ? Both.Run(dev, rng) : (0, "not run: needs a Hopper GPU (sm_90) or ILGPU's CPU accelerator"));

    /// <summary>The two forms at random, on GemmHalf's audit operands.</summary>
    static readonly AuditCase Both = HalfCase("gemm wgmma", (x, w, y, accumulate, rng) =>
    {
        bool swizzled = rng.Next(2) == 0;
        int split = rng.Next(4);   // 0: as Run picks
        Run(x, w, y, accumulate, swizzled, split);
        return (swizzled ? " swizzled" : " core matrices") + (split > 0 ? $", K in ≤ {split} ranges" : "");
    });
}

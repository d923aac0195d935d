using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// wt = wᵀ widened to f32: w is [a, b] in f16, bf16 or f32, wt is f32 [b, a], wt[j, i] = w[i, j]. The backward of
/// a linear layer needs dy·W (<c>LinearGrad</c>), which <see cref="MatMul"/> computes as dy·(Wᵀ)ᵀ once W is
/// transposed. The widening is exact, so the result equals <see cref="Twin"/> bit for bit.
/// </summary>
public static class Transpose
{
    public static void Twin(ReadOnlySpan<float> w, Span<float> wt, int a, int b)
    {
        for (int i = 0; i < a; i++)
            for (int j = 0; j < b; j++) wt[j * a + i] = w[i * b + j];
    }

    /// <summary>Tile side: one warp reads a tile row, one warp writes a tile column.</summary>
    const int Tile = 32;
    /// <summary>Rows of threads a group: 32×8 threads, each moving 4 elements of the 32×32 tile.</summary>
    const int TileRows = 8;

    /// <summary>
    /// One group per 32×32 tile of w (the classic shared-memory transpose, e.g. Harris, "An Efficient Matrix
    /// Transpose in CUDA C/C++", NVIDIA 2013): a warp reads 32 consecutive elements of a row of w (coalesced), the
    /// tile goes through shared memory, and a warp writes 32 consecutive elements of a row of wt (coalesced).
    /// Rows of the shared tile are 33 floats, so the column reads of the second half hit 32 different banks.
    /// </summary>
    static void Kernel(ArrayView<ushort> w, int code, ArrayView<float> wt, int a, int b)
    {
        var tile = SharedMemory.Allocate<float>(Tile * (Tile + 1));
        int tilesB = (b + Tile - 1) / Tile;
        int i0 = Grid.IdxX / tilesB * Tile, j0 = Grid.IdxX % tilesB * Tile;
        int tx = Group.IdxX % Tile, ty = Group.IdxX / Tile;
        for (int r = ty; r < Tile; r += TileRows)
        {
            int i = i0 + r, j = j0 + tx;
            if (i < a && j < b) tile[r * (Tile + 1) + tx] = Elem.Load(w, (long)i * b + j, code);
        }
        Group.Barrier();
        for (int r = ty; r < Tile; r += TileRows)
        {
            int j = j0 + r, i = i0 + tx;
            if (j < b && i < a) wt[(long)j * a + i] = tile[tx * (Tile + 1) + r];
        }
    }

    public static void Run(Tensor w, Tensor wt)
    {
        Need.SameDevice(w, wt);
        Need.Float("transpose input", w);
        Need.F32("transpose output", wt);
        if (w.Rank != 2) throw new ArgumentException($"transpose input: expected [a, b], got {w}");
        int a = w.Dim(0), b = w.Dim(1);
        Need.Shape("transpose output", wt, b, a);
        Need.Disjoint("transpose", w, wt);
        if (wt.ElementCount == 0) return;
        if (!wt.Device.IsIlgpu)
        {
            Host(w.HostBytes, w.DType, wt.Host<float>(), a, b);
            return;
        }
        long tiles = (long)((a + Tile - 1) / Tile) * ((b + Tile - 1) / Tile);
        wt.Device.GroupedKernel<Action<KernelConfig, ArrayView<ushort>, int, ArrayView<float>, int, int>>(Kernel)(
            new KernelConfig((int)tiles, Tile * TileRows), Elem.View(w), Elem.Code(w.DType), wt.View<float>(), a, b);
    }

    /// <summary>Rows of w a host block widens at once: 32 rows stay in L1/L2 while their columns are written out
    /// as 32-float runs of wt rows.</summary>
    const int HostRows = 32;

    /// <summary>The managed-CPU path: blocks of <see cref="HostRows"/> rows of w in parallel, each widened to f32
    /// once into a per-thread buffer, then written column by column.</summary>
    public static unsafe void Host(ReadOnlySpan<byte> w, DType dtype, Span<float> wt, int a, int b)
    {
        int size = dtype.ElementSize(), blocks = (a + HostRows - 1) / HostRows;
        fixed (byte* pw = w)
        fixed (float* pt = wt)
        {
            nint W = (nint)pw, T = (nint)pt;
            void Block(int blk, float[] buf)
            {
                int i0 = blk * HostRows, n = Math.Min(HostRows, a - i0);
                Casts.ToF32(new ReadOnlySpan<byte>((byte*)W + (long)i0 * b * size, n * b * size), dtype, buf.AsSpan(0, n * b));
                float* t = (float*)T;
                for (int j = 0; j < b; j++)
                {
                    float* row = t + (long)j * a + i0;
                    for (int r = 0; r < n; r++) row[r] = buf[r * b + j];
                }
            }
            if (blocks == 1 || (long)a * b < 1 << 16)
            {
                var buf = new float[HostRows * b];
                for (int blk = 0; blk < blocks; blk++) Block(blk, buf);
            }
            else
                Parallel.For(0, blocks, () => new float[HostRows * b], (blk, _, buf) => { Block(blk, buf); return buf; }, _ => { });
        }
    }

    /// <summary>A transpose moves values: the kernel must equal the twin bit for bit (bound 0).</summary>
    public static AuditCase Case => new("transpose", 0, (dev, rng) =>
    {
        int a = Check.Size(rng, 130), b = Check.Size(rng, 130);
        var dt = Check.FloatType(rng);
        var w = Check.Rounded(Check.Values(rng, (long)a * b), dt);
        using var tw = Tensor.From(w, [a, b], dev, dt);
        using var tt = Check.Poisoned([b, a], DType.F32, dev);
        Run(tw, tt);
        var want = new float[w.Length];
        Twin(w, want, a, b);
        return (Check.RelativeError(tt.ToFloatArray(), want), $"[{a}, {b}] {dt}");
    });
}

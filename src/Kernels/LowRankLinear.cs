using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// One low-rank mixed-precision delta (Delta-CoMe, arXiv 2406.08903) on a device: Δ ≈ Σ_s U_s·diag(σ_s)·V_sᵀ over slices s
/// of singular triplets, slice s holding r_s triplets with U_s and V_s quantized to b_s bits (8, 3, 2… for triplets of
/// larger to smaller σ). V codes: the slices' rows one after another, each row (in codes) packed at its slice's bits
/// (<see cref="PackedCodes"/>); V scales (f16) and zeros (u8): [R, ceil(in / group)] for all R = Σ r_s rows. U codes:
/// per slice [out, r_s] packed at its bits, slice after slice; U scales and zeros per slice [out, ceil(r_s / group)],
/// slice after slice. σ: f32 [R]. <see cref="Table"/> (i32 [slices, 6]) gives each slice's first row, rank, bits, and
/// where its V codes, U codes and U parameters start.
/// </summary>
public sealed class LowRankFactors(Tensor vCodes, Tensor vScales, Tensor vZeros, Tensor uCodes, Tensor uScales, Tensor uZeros, Tensor sigma, Tensor table,
                                   int[] ranks, int[] bits, int group, int outDim, int inDim) : IDisposable
{
    public Tensor VCodes { get; } = vCodes;
    public Tensor VScales { get; } = vScales;
    public Tensor VZeros { get; } = vZeros;
    public Tensor UCodes { get; } = uCodes;
    public Tensor UScales { get; } = uScales;
    public Tensor UZeros { get; } = uZeros;
    public Tensor Sigma { get; } = sigma;
    public Tensor Table { get; } = table;
    public int[] Ranks { get; } = ranks;
    public int[] Bits { get; } = bits;
    public int Group { get; } = group;
    public int Out { get; } = outDim;
    public int In { get; } = inDim;
    public int Rank => Ranks.Sum();
    public int Slices => Ranks.Length;
    public Device Device => VCodes.Device;

    /// <summary>Bytes of the packed factors (what a decode step reads).</summary>
    public long ByteLength => new[] { VCodes, VScales, VZeros, UCodes, UScales, UZeros, Sigma }.Sum(t => t.ByteLength);

    public const int TableCols = 6;

    /// <summary>The slice table for these ranks and bits: first row, rank, bits, V-code word offset, U-code word offset,
    /// U-parameter offset.</summary>
    public static int[] MakeTable(int[] ranks, int[] bits, int outDim, int inDim, int group)
    {
        var t = new int[ranks.Length * TableCols];
        int row = 0, vw = 0, uw = 0, up = 0;
        for (int s = 0; s < ranks.Length; s++)
        {
            t[s * TableCols] = row;
            t[s * TableCols + 1] = ranks[s];
            t[s * TableCols + 2] = bits[s];
            t[s * TableCols + 3] = vw;
            t[s * TableCols + 4] = uw;
            t[s * TableCols + 5] = up;
            row += ranks[s];
            vw += ranks[s] * PackedCodes.RowWords(inDim, bits[s]);
            uw += outDim * PackedCodes.RowWords(ranks[s], bits[s]);
            up += outDim * ((ranks[s] + group - 1) / group);
        }
        return t;
    }

    /// <summary>A copy on <paramref name="device"/>, or these factors where they are there already.</summary>
    /// <summary>Random packed factors (codes, f16 scales, zeros, σ never zero) on <paramref name="dev"/>: the audit's
    /// inputs and the benchmark's tenants at real shapes.</summary>
    public static LowRankFactors Random(Random rng, Device dev, int[] ranks, int[] bits, int group, int outDim, int inDim)
    {
        int rank = ranks.Sum(), vGroups = (inDim + group - 1) / group;
        uint[] Codes(int count, int rowsOf, int b)
        {
            var w = new uint[(long)rowsOf * PackedCodes.RowWords(count, b)];
            for (long i = 0; i < w.Length; i++) w[i] = (uint)rng.NextInt64(0, 1L << 32);
            return w;
        }
        var vCodes = bits.Select((b, s) => Codes(inDim, ranks[s], b)).SelectMany(a => a).ToArray();
        var uCodes = bits.Select((b, s) => Codes(ranks[s], outDim, b)).SelectMany(a => a).ToArray();
        int uParams = ranks.Sum(r => outDim * ((r + group - 1) / group));
        float[] Scales(int n) => Enumerable.Range(0, n).Select(_ => Math.Abs(Check.Value(rng, 0.05f))).ToArray();
        byte[] Zeros(int n) => Enumerable.Range(0, n).Select(_ => (byte)rng.Next(4)).ToArray();
        var sigma = Enumerable.Range(0, rank).Select(_ => Math.Abs(Check.Value(rng, 2f))).ToArray();
        var table = MakeTable(ranks, bits, outDim, inDim, group);
        return new LowRankFactors(
            Tensor.From(vCodes, [vCodes.Length], dev, DType.U32), Tensor.From(Scales(rank * vGroups), [rank * vGroups], dev, DType.F16),
            Tensor.From(Zeros(rank * vGroups), [rank * vGroups], dev), Tensor.From(uCodes, [uCodes.Length], dev, DType.U32),
            Tensor.From(Scales(uParams), [uParams], dev, DType.F16), Tensor.From(Zeros(uParams), [uParams], dev),
            Tensor.From(sigma, [rank], dev), Tensor.From(table, [table.Length], dev), ranks, bits, group, outDim, inDim);
    }

    public LowRankFactors To(Device device) => device == Device ? this : new(VCodes.To(device), VScales.To(device), VZeros.To(device), UCodes.To(device), UScales.To(device),
        UZeros.To(device), Sigma.To(device), Table.To(device), Ranks, Bits, Group, Out, In);

    /// <summary>These factors on <paramref name="device"/>: themselves where they are already, else a copy there, and
    /// these are disposed (loading a file's host copy onto the device).</summary>
    public LowRankFactors MoveTo(Device device)
    {
        if (device == Device) return this;
        var moved = To(device);
        Dispose();
        return moved;
    }

    public void Dispose()
    {
        foreach (var t in new[] { VCodes, VScales, VZeros, UCodes, UScales, UZeros, Sigma, Table }) t.Dispose();
    }
}

/// <summary>
/// y += Σ_s ((x·V_sᵀ) ⊙ σ_s)·U_sᵀ for x f32 [rows, in] and y f32 [rows, out]: the low-rank codec's delta term, as LoRA
/// serving computes its adapters (shrink to the rank, scale, expand; Punica's SGMV, arXiv 2310.18547), with every factor
/// decoded from its packed codes where it is read. Two launches: <see cref="ShrinkKernel"/> (a block per factor row j,
/// t[r, j] = σ_j·Σ_i x[r, i]·V[j, i]) and <see cref="ExpandKernel"/> (a block per output o, y[r, o] += Σ_j t[r, j]·U[o, j]),
/// both over up to 8 rows of x per pass; for one row of x (a decode step's tenant) <see cref="ShrinkOneKernel"/> and
/// <see cref="ExpandOneKernel"/>, which read x and t from shared memory. On the managed CPU device the factors are decoded
/// to f32 and the host matmul runs both products.
/// </summary>
public static class LowRankLinear
{
    /// <summary>V[j, i] dequantized: row j of the stacked V rows (the spec of every reader).</summary>
    public static double V(LowRankHost f, int j, int i)
    {
        int s = f.SliceOfRow(j);
        int bits = f.Table[s * LowRankFactors.TableCols + 2], groups = (f.In + f.Group - 1) / f.Group;
        long rowStart = f.Table[s * LowRankFactors.TableCols + 3] + (long)(j - f.Table[s * LowRankFactors.TableCols]) * PackedCodes.RowWords(f.In, bits);
        int code = PackedCodes.Get(f.VCodes, rowStart, i, bits);
        long p = (long)j * groups + i / f.Group;
        return (double)PackedCodes.Half(f.VScales[(int)p]) * (code - f.VZeros[(int)p]);
    }

    /// <summary>U[o, j] dequantized (j over the stacked ranks).</summary>
    public static double U(LowRankHost f, int o, int j)
    {
        int s = f.SliceOfRow(j), c = s * LowRankFactors.TableCols;
        int first = f.Table[c], rank = f.Table[c + 1], bits = f.Table[c + 2];
        int k = j - first, groups = (rank + f.Group - 1) / f.Group;
        int code = PackedCodes.Get(f.UCodes, f.Table[c + 4] + (long)o * PackedCodes.RowWords(rank, bits), k, bits);
        long p = f.Table[c + 5] + (long)o * groups + k / f.Group;
        return (double)PackedCodes.Half(f.UScales[(int)p]) * (code - f.UZeros[(int)p]);
    }

    /// <summary>The spec: f64 sums of the dequantized factors, y rounded to f32 once.</summary>
    public static void Twin(ReadOnlySpan<float> x, LowRankHost f, Span<float> y, int rows)
    {
        int rank = f.Rank;
        var t = new double[rank];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < rank; j++)
            {
                double s = 0;
                for (int i = 0; i < f.In; i++) s += x[r * f.In + i] * V(f, j, i);
                t[j] = s * f.Sigma[j];
            }
            for (int o = 0; o < f.Out; o++)
            {
                double s = y[r * f.Out + o];
                for (int j = 0; j < rank; j++) s += t[j] * U(f, o, j);
                y[r * f.Out + o] = (float)s;
            }
        }
    }

    /// <summary>The factors decoded to f32 V [R, in] (σ folded in) and U [out, R]: the managed CPU device's path.</summary>
    public static (float[] V, float[] U) Decode(LowRankHost f)
    {
        int rank = f.Rank;
        var v = new float[(long)rank * f.In];
        var u = new float[(long)f.Out * rank];
        Parallel.For(0, rank, j =>
        {
            for (int i = 0; i < f.In; i++) v[(long)j * f.In + i] = (float)(V(f, j, i) * f.Sigma[j]);
        });
        Parallel.For(0, f.Out, o =>
        {
            for (int j = 0; j < rank; j++) u[(long)o * rank + j] = (float)U(f, o, j);
        });
        return (v, u);
    }

    /// <summary>y += the delta term of <paramref name="f"/> for x [rows, in], y [rows, out].</summary>
    public static void Run(Tensor x, LowRankFactors f, Tensor y)
    {
        Need.SameDevice(x, f.VCodes, y);
        long rows = Need.DeltaRows("low-rank", x, y, f.In, f.Out);
        if (rows == 0 || f.Out == 0 || f.Rank == 0) return;
        var dev = y.Device;
        if (!dev.IsIlgpu)
        {
            var (v, u) = Decode(LowRankHost.Of(f));
            using var tv = Tensor.From(v, [f.Rank, f.In], dev);
            using var tu = Tensor.From(u, [f.Out, f.Rank], dev);
            using var t = Tensor.Empty([(int)rows, f.Rank], DType.F32, dev);
            MatMul.Run(x, tv, t);
            MatMul.Run(t, tu, y, accumulate: true);
            return;
        }
        if (f.In >= PackedCodes.MaxGroupedIndex || f.Rank >= PackedCodes.MaxGroupedIndex)
            throw new ArgumentException($"low-rank factors of {f.In} inputs and rank {f.Rank}: the kernels take fewer than {PackedCodes.MaxGroupedIndex}");
        if (rows == 1 && OneRowFits(f))
        {
            OneRows(x, [(0, f)], y, f.In, f.Out);
            return;
        }
        using var tt = Tensor.Empty([(int)rows, f.Rank], DType.F32, dev);
        int passes = (int)((rows + MatMul.GemvMaxRows - 1) / MatMul.GemvMaxRows);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<ushort>, ArrayView<byte>, ArrayView<float>, ArrayView<int>,
                                ArrayView<float>, int, int, int, int, int, float>>(ShrinkKernel)(
            new KernelConfig(f.Rank * passes, ShrinkThreads), x.View<float>(), f.VCodes.View<uint>(), f.VScales.View<ushort>(), f.VZeros.View<byte>(),
            f.Sigma.View<float>(), f.Table.View<int>(), tt.View<float>(), (int)rows, f.In, f.Rank, f.Slices, (f.In + f.Group - 1) / f.Group, 1f / f.Group);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<ushort>, ArrayView<byte>, ArrayView<int>,
                                ArrayView<float>, int, int, int, int, float>>(ExpandKernel)(
            new KernelConfig(f.Out * passes, ExpandThreads), tt.View<float>(), f.UCodes.View<uint>(), f.UScales.View<ushort>(), f.UZeros.View<byte>(),
            f.Table.View<int>(), y.View<float>(), (int)rows, f.Out, f.Rank, f.Slices, 1f / f.Group);
    }

    /// <summary>
    /// y[rows of run k] += the delta term of run k's factors, for runs of rows of x [rows, in] (a decode batch's low-rank
    /// tenants, all of one linear's shape): the rows of short runs (decode's few rows a tenant) go to the one-row kernels
    /// eight at a time, one shrink and one expand launch for all their tenants (Punica's SGMV, arXiv 2310.18547); a longer
    /// run (a prompt's rows) takes the multi-row kernels on its own.
    /// </summary>
    public static void Run(Tensor x, IReadOnlyList<(int Start, int Count, LowRankFactors F)> runs, Tensor y)
    {
        if (runs.Count == 0) return;
        int inDim = runs[0].F.In, outDim = runs[0].F.Out;
        foreach (var (start, count, f) in runs)
        {
            Need.SameDevice(x, f.VCodes, y);
            if (f.In != inDim || f.Out != outDim)
                throw new ArgumentException($"low-rank runs of one launch share a shape: [{outDim}, {inDim}] and [{f.Out}, {f.In}]");
        }
        long rows = Need.DeltaRows("low-rank", x, y, inDim, outDim);
        var items = new List<(int Row, LowRankFactors F)>();
        foreach (var (start, count, f) in runs)
        {
            if (start < 0 || count < 0 || start + (long)count > rows)
                throw new ArgumentException($"low-rank run of rows {start}…{start + count} outside x's {rows} rows");
            if (count == 0 || f.Rank == 0) continue;
            if (y.Device.IsIlgpu && count <= OneRowRunMax && OneRowFits(f))
            {
                for (int r = start; r < start + count; r++) items.Add((r, f));
                continue;
            }
            using var x2 = x.Reshape((int)rows, inDim);
            using var y2 = y.Reshape((int)rows, outDim);
            using var xs = x2.Slice(start, count);
            using var ys = y2.Slice(start, count);
            Run(xs, f, ys);
        }
        if (items.Count > 0) OneRows(x, items, y, inDim, outDim);
    }

    /// <summary>The longest run of one tenant's rows that goes to the one-row kernels row by row: each row reads the factors
    /// again (from L2 after the first), where the multi-row kernels read them once for 8 rows but run ~2.3× a one-row call
    /// (bench/RESULTS.md: 67 against 29 µs at 4096²).</summary>
    public const int OneRowRunMax = 2;

    /// <summary>Whether x and t of these factors fit the one-row kernels' shared memory.</summary>
    static bool OneRowFits(LowRankFactors f) => Staged(f.In) + OneRowWarps <= MaxStaged && StagedSlices(f.Ranks) <= MaxStaged;

    /// <summary>Threads a block: 8 warps per factor row for the shrink, 4 per output for the expand. The first form (a warp
    /// per row or output, a code a lane at a time) ran 16–26 GB/s on the H200; with these blocks but the same arithmetic,
    /// 32–38 GB/s, and Nsight Compute showed the SMs issuing on 72–80% of cycles: ~245 instructions a code (64-bit index
    /// math, an integer division and a straddle test per code, 8 row guards per product). Hence the walk
    /// (<see cref="CodeWalk"/>), the reciprocal group index and the one-row path below (bench/NOTES.md).</summary>
    const int ShrinkThreads = 256, ExpandThreads = 128;

    /// <summary>The slice that holds stacked row j (the table has a handful of slices).</summary>
    static int SliceOf(ArrayView<int> table, int slices, int j)
    {
        int s = 0;
        while (s + 1 < slices && j >= table[(s + 1) * LowRankFactors.TableCols]) s++;
        return s;
    }

    static float Dequant(int code, ArrayView<ushort> scales, ArrayView<byte> zeros, int p) => PackedCodes.Half(scales[p]) * (code - zeros[p]);

    /// <summary>acc.R_k += v·x[at + k·stride] for the first n rows, with one row (decode's usual case) unguarded.</summary>
    internal static MatMul.Acc8 Fma(MatMul.Acc8 acc, float v, ArrayView<float> x, int at, int stride, int n)
    {
        if (n == 1)
        {
            acc.R0 += v * x[at];
            return acc;
        }
        return MatMul.Fma8(acc, v, x, at, stride, n);
    }

    /// <summary>acc.R_k += Σ_i dequant(code i)·v[k·vStride + i] over codes i = first, first + stride, … &lt; count of one packed
    /// row at <paramref name="bits"/> (scales and zeros from views at the row's groups) for the first n of 8 rows, four
    /// codes' loads issued before their products: the walk of both the shrink (v = x) and the expand (v = t).</summary>
    static MatMul.Acc8 WalkRow(MatMul.Acc8 acc, ArrayView<uint> row, ArrayView<ushort> sc, ArrayView<byte> zr, float inv, ArrayView<float> v, int vStride,
                               int count, int bits, int first, int stride, int n)
    {
        var walk = new CodeWalk(first, bits, stride);
        int S = stride, m = 0;
        for (int i = first; i < count; i += 4 * S, m += 4)
        {
            float v0 = Dequant(walk.At(row, m), sc, zr, PackedCodes.GroupOf(i, inv));
            float v1 = i + S < count ? Dequant(walk.At(row, m + 1), sc, zr, PackedCodes.GroupOf(i + S, inv)) : 0f;
            float v2 = i + 2 * S < count ? Dequant(walk.At(row, m + 2), sc, zr, PackedCodes.GroupOf(i + 2 * S, inv)) : 0f;
            float v3 = i + 3 * S < count ? Dequant(walk.At(row, m + 3), sc, zr, PackedCodes.GroupOf(i + 3 * S, inv)) : 0f;
            acc = Fma(acc, v0, v, i, vStride, n);
            if (i + S < count) acc = Fma(acc, v1, v, i + S, vStride, n);
            if (i + 2 * S < count) acc = Fma(acc, v2, v, i + 2 * S, vStride, n);
            if (i + 3 * S < count) acc = Fma(acc, v3, v, i + 3 * S, vStride, n);
        }
        return acc;
    }

    /// <summary>Block b: factor row j = b mod R and rows 8·(b div R) … +8 of x. Thread t walks inputs t, t + 256, …, four at
    /// a time with their loads issued before their products, decoding V[j, i] once for the rows;
    /// t[r, j] = σ_j·Σ_i x[r, i]·V[j, i].</summary>
    static void ShrinkKernel(ArrayView<float> x, ArrayView<uint> codes, ArrayView<ushort> scales, ArrayView<byte> zeros, ArrayView<float> sigma,
                             ArrayView<int> table, ArrayView<float> t, int rows, int inDim, int rank, int slices, int groups, float inv)
    {
        int j = Grid.IdxX % rank, r0 = Grid.IdxX / rank * 8, n = IntrinsicMath.Min(8, rows - r0), tid = Group.IdxX;
        int s = SliceOf(table, slices, j), c = s * LowRankFactors.TableCols, bits = table[c + 2];
        const int S = ShrinkThreads;
        // Views that start at this row's codes, parameters and inputs, so the loop's indices are small 32-bit ones.
        long wordStart = table[c + 3] + (long)(j - table[c]) * PackedCodes.RowWords(inDim, bits), p0 = (long)j * groups, xAt = (long)r0 * inDim;
        var row = codes.SubView(wordStart, codes.Length - wordStart);
        var sc = scales.SubView(p0, groups);
        var zr = zeros.SubView(p0, groups);
        var xs = x.SubView(xAt, x.Length - xAt);
        var acc = WalkRow(default, row, sc, zr, inv, xs, inDim, inDim, bits, tid, S, n);
        float total = BlockTotal8(acc, SharedMemory.Allocate<float>(ShrinkThreads / 32 * 8), ShrinkThreads / 32);
        if (tid < n) t[(long)(r0 + tid) * rank + j] = sigma[j] * total;
    }

    /// <summary>Block b: output o = b mod out and rows 8·(b div out) … +8. Thread t walks each slice's ranks t, t + 128, …,
    /// four at a time, decoding U[o, j] once for the rows; y[r, o] += Σ_j t[r, j]·U[o, j].</summary>
    static void ExpandKernel(ArrayView<float> t, ArrayView<uint> codes, ArrayView<ushort> scales, ArrayView<byte> zeros, ArrayView<int> table,
                             ArrayView<float> y, int rows, int outDim, int rank, int slices, float inv)
    {
        int o = Grid.IdxX % outDim, r0 = Grid.IdxX / outDim * 8, n = IntrinsicMath.Min(8, rows - r0), tid = Group.IdxX;
        const int S = ExpandThreads;
        var acc = default(MatMul.Acc8);
        for (int s = 0; s < slices; s++)
        {
            int c = s * LowRankFactors.TableCols, first = table[c], r = table[c + 1], bits = table[c + 2], groups = PackedCodes.GroupOf(r - 1, inv) + 1;
            if (r == 0) continue;   // a slice the budget left empty: its views would start at the arrays' ends
            long wordStart = table[c + 4] + (long)o * PackedCodes.RowWords(r, bits), p0 = table[c + 5] + (long)o * groups, tAt = (long)r0 * rank + first;
            var row = codes.SubView(wordStart, codes.Length - wordStart);
            var sc = scales.SubView(p0, groups);
            var zr = zeros.SubView(p0, groups);
            var ts = t.SubView(tAt, t.Length - tAt);
            acc = WalkRow(acc, row, sc, zr, inv, ts, rank, r, bits, tid, S, n);
        }
        float total = BlockTotal8(acc, SharedMemory.Allocate<float>(ExpandThreads / 32 * 8), ExpandThreads / 32);
        if (tid < n) y[(long)(r0 + tid) * outDim + o] += total;
    }

    /// <summary>Floats of shared memory for a staged vector of n: 33 for every 32, so that lanes reading 32 consecutive
    /// entries each, from chunks 32 apart, hit 32 different banks.</summary>
    static int Staged(int n) => n + (n + 31) / 32;

    /// <summary>ILGPU 1.5.3 leaves a kernel's dynamic shared memory at the default limit of 48 KB.</summary>
    const int MaxStaged = 48 * 1024 / 4;

    /// <summary>One row of x, the usual decode case of a tenant: the shrink and the expand read their vector (x, then t)
    /// from shared memory and decode a whole chunk of 32 codes a thread (b words: 32·b bits start on a word; written out
    /// code by code in <see cref="Chunk"/>). The earlier forms' per-code loads, index math and guards made their kernels
    /// instruction-bound at 1–2% of copy; what this form measured is in bench/NOTES.md. Items (a row and a tenant's
    /// factors) go eight to a launch pair, each launch's blocks split among them.</summary>
    static void OneRows(Tensor x, IReadOnlyList<(int Row, LowRankFactors F)> items, Tensor y, int inDim, int outDim)
    {
        var dev = y.Device;
        int outBlocks = (outDim + OneRowWarps - 1) / OneRowWarps;
        for (int at = 0; at < items.Count; at += Eight<int>.Count)
        {
            int n = Math.Min(Eight<int>.Count, items.Count - at), tLength = 0, shrinkBlocks = 0, expandShared = 0;
            var batch = new Eight<LowRankItem>();
            var firsts = new Eight<int>();
            for (int k = 0; k < Eight<int>.Count; k++) firsts[k] = int.MaxValue;
            for (int k = 0; k < n; k++)
            {
                var (row, f) = items[at + k];
                batch[k] = new LowRankItem
                {
                    VCodes = f.VCodes.View<uint>(), VScales = f.VScales.View<ushort>(), VZeros = f.VZeros.View<byte>(), Sigma = f.Sigma.View<float>(),
                    UCodes = f.UCodes.View<uint>(), UScales = f.UScales.View<ushort>(), UZeros = f.UZeros.View<byte>(), Table = f.Table.View<int>(),
                    Row = row, Rank = f.Rank, Slices = f.Slices, TAt = tLength, Group = f.Group, Inv = 1f / f.Group,
                };
                firsts[k] = shrinkBlocks;
                shrinkBlocks += (f.Rank + ShrinkRowsABlock - 1) / ShrinkRowsABlock;
                tLength += f.Rank;
                expandShared = Math.Max(expandShared, StagedSlices(f.Ranks));
            }
            using var t = Tensor.Empty([tLength], DType.F32, dev);
            dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, Eight<LowRankItem>, Eight<int>, ArrayView<float>, int>>(ShrinkOneKernel)(
                new KernelConfig(shrinkBlocks, OneRowWarps * 32, SharedMemoryConfig.RequestDynamic<float>(Staged(inDim) + OneRowWarps)),
                x.View<float>(), batch, firsts, t.View<float>(), inDim);
            dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, Eight<LowRankItem>, ArrayView<float>, int, int>>(ExpandOneKernel)(
                new KernelConfig(n * outBlocks, OneRowWarps * 32, SharedMemoryConfig.RequestDynamic<float>(expandShared)),
                t.View<float>(), batch, y.View<float>(), outDim, outBlocks);
        }
    }

    /// <summary>8 warps a block; the shrink gives each factor row 4 of them (a row of 4096 inputs is 128 chunks: one a
    /// thread), so its 898 rows at 4096² make 3592 warps, not 898.</summary>
    const int OneRowWarps = 8, ShrinkWarpsARow = 4, ShrinkRowsABlock = OneRowWarps / ShrinkWarpsARow;

    /// <summary>Floats for t staged slice by slice, each slice from a fresh 33-float line (<see cref="StageSlices"/>).</summary>
    static int StagedSlices(int[] ranks) => ranks.Sum(Staged);

    /// <summary>v[0 … n) into shared memory at i + i / 32 (<see cref="Staged"/>), by the whole block, and each whole
    /// chunk's sum in its line's 33rd float (<see cref="ChunkSums"/>).</summary>
    static ArrayView<float> Stage(ArrayView<float> v, int n)
    {
        var sh = SharedMemory.GetDynamic<float>();
        for (int i = Group.IdxX; i < n; i += Group.DimX) sh[i + i / 32] = v[i];
        Group.Barrier();
        ChunkSums(sh, 0, n);
        Group.Barrier();
        return sh;
    }

    /// <summary>Σ v of every whole chunk of 32 staged at sh[at …], into the chunk's pad float (at + 33·c + 32): the
    /// zero-point term s·z·Σ v of a chunk is the same for every row of codes that reads it, so it is added once here and
    /// not once a code in each row (bench/NOTES.md: the expand's loop was 12 instructions a code).</summary>
    static void ChunkSums(ArrayView<float> sh, int at, int n)
    {
        for (int c = Group.IdxX; c < n / 32; c += Group.DimX)
        {
            float sum = 0f;
            for (int k = 0; k < 32; k++) sum += sh[at + 33 * c + k];
            sh[at + 33 * c + 32] = sum;
        }
    }

    /// <summary>t into shared memory slice by slice: entry k of slice s (t[first_s + k]) at off_s + k + k / 32, off_s the
    /// staged sizes of the slices before, so chunk c of a slice starts at off_s + 33·c; then the chunk sums.</summary>
    static ArrayView<float> StageSlices(ArrayView<float> t, ArrayView<int> table, int slices)
    {
        var sh = SharedMemory.GetDynamic<float>();
        int off = 0;
        for (int s = 0; s < slices; s++)
        {
            int first = table[s * LowRankFactors.TableCols], r = table[s * LowRankFactors.TableCols + 1];
            for (int k = Group.IdxX; k < r; k += Group.DimX) sh[off + k + k / 32] = t[first + k];
            off += r + (r + 31) / 32;
        }
        Group.Barrier();
        off = 0;
        for (int s = 0; s < slices; s++)
        {
            int r = table[s * LowRankFactors.TableCols + 1];
            ChunkSums(sh, off, r);
            off += r + (r + 31) / 32;
        }
        Group.Barrier();
        return sh;
    }

    /// <summary>
    /// Σ_k v_k·dequant(code k) over one packed row of <paramref name="count"/> codes, v_k at sh[at + k + k / 32], the
    /// thread's part (the caller adds the parts) of lanes lane0, lane0 + stride, …:
    /// - a row of few chunks for the lanes (the expand's 8- and 3-bit slices: 2 and 32 codes a row at 4096²) goes a code a
    ///   lane, where a chunk a lane left one lane decoding a whole 3-bit chunk while 31 waited;
    /// - else chunks c = lane0, lane0 + stride, … of 32 codes. A whole chunk at 2, 4 or 8 bits with one scale and zero
    ///   (group a multiple of 32) is s·(Σ v·code − z·Σ v), Σ v from the staging (<see cref="ChunkSums"/>), its words
    ///   decoded at a constant width (<see cref="Chunk"/>); other chunks (3 bits through a 64-bit window, the row's last
    ///   partial chunk, groups inside a chunk) code by code.
    /// </summary>
    static float RowDot(ArrayView<float> sh, int at, ArrayView<uint> row, ArrayView<ushort> scales, ArrayView<byte> zeros, int count, int bits,
                        int group, float inv, int lane0, int stride)
    {
        int chunks = (count + 31) / 32, mask = (1 << bits) - 1, perWord = 32 / bits;
        bool whole = perWord * bits == 32, oneGroup = group % 32 == 0;
        float acc = 0f;
        if (4 * chunks <= stride)
        {
            for (int k = lane0; k < count; k += stride)
            {
                int bit = k * bits, w = bit >> 5, sh0 = bit & 31;
                uint word = row[w] >> sh0;
                if (sh0 + bits > 32) word |= row[w + 1] << (32 - sh0);
                int p = PackedCodes.GroupOf(k, inv);
                acc += sh[at + k + k / 32] * PackedCodes.Half(scales[p]) * ((int)(word & (uint)mask) - zeros[p]);
            }
            return acc;
        }
        for (int c = lane0; c < chunks; c += stride)
        {
            int first = 32 * c, valid = IntrinsicMath.Min(32, count - first), si = at + 33 * c;
            if (whole && oneGroup && valid == 32)
            {
                int p = first / group;
                acc += PackedCodes.Half(scales[p]) * (Chunk(sh, si, row, c * bits, bits) - zeros[p] * sh[si + 32]);
                continue;
            }
            float dot = 0f, sum = 0f;
            int next = c * bits + 1, have = 32;
            ulong win = row[c * bits];
            for (int k = 0; k < valid; k++)
            {
                // A code's last bit is within the row's words, so a refill never reads past them.
                if (have < bits) { win |= (ulong)row[next++] << have; have += 32; }
                int code = (int)(win & (ulong)mask);
                win >>= bits;
                have -= bits;
                float v = sh[si + k];
                if (oneGroup)
                {
                    dot += v * code;
                    sum += v;
                }
                else
                {
                    int p = PackedCodes.GroupOf(first + k, inv);
                    acc += v * PackedCodes.Half(scales[p]) * (code - zeros[p]);
                }
            }
            if (oneGroup)
            {
                int p = first / group;
                acc += PackedCodes.Half(scales[p]) * (dot - zeros[p] * sum);
            }
        }
        return acc;
    }

    /// <summary>Σ v·code over a whole chunk of 32 codes at 2, 4 or 8 bits (b words from <paramref name="w0"/>), written
    /// out code by code: ILGPU 1.5.3 keeps a constant-count loop a loop and ptxas did not unroll it (11 instructions a code
    /// in the SASS, bench/NOTES.md); unrolled, every shift and shared offset is a constant.</summary>
    static float Chunk(ArrayView<float> sh, int si, ArrayView<uint> row, int w0, int bits)
    {
        if (bits == 2)
        {
            uint a = row[w0], b = row[w0 + 1];
            return Four(sh, si, a, 0, 2, 3u) + Four(sh, si + 4, a, 8, 2, 3u) + Four(sh, si + 8, a, 16, 2, 3u) + Four(sh, si + 12, a, 24, 2, 3u)
                 + Four(sh, si + 16, b, 0, 2, 3u) + Four(sh, si + 20, b, 8, 2, 3u) + Four(sh, si + 24, b, 16, 2, 3u) + Four(sh, si + 28, b, 24, 2, 3u);
        }
        if (bits == 4)
        {
            uint a = row[w0], b = row[w0 + 1], c = row[w0 + 2], d = row[w0 + 3];
            return Four(sh, si, a, 0, 4, 15u) + Four(sh, si + 4, a, 16, 4, 15u) + Four(sh, si + 8, b, 0, 4, 15u) + Four(sh, si + 12, b, 16, 4, 15u)
                 + Four(sh, si + 16, c, 0, 4, 15u) + Four(sh, si + 20, c, 16, 4, 15u) + Four(sh, si + 24, d, 0, 4, 15u) + Four(sh, si + 28, d, 16, 4, 15u);
        }
        float dot = 0f;
        for (int w = 0; w < 8; w++) dot += Four(sh, si + 4 * w, row[w0 + w], 0, 8, 255u);
        return dot;
    }

    /// <summary>Four consecutive codes of a word from bit <paramref name="shift"/>, times their staged values.</summary>
    static float Four(ArrayView<float> sh, int si, uint word, int shift, int bits, uint mask) =>
        sh[si] * (int)((word >> shift) & mask) + sh[si + 1] * (int)((word >> (shift + bits)) & mask)
        + sh[si + 2] * (int)((word >> (shift + 2 * bits)) & mask) + sh[si + 3] * (int)((word >> (shift + 3 * bits)) & mask);

    static float WarpSum(float v)
    {
        for (int d = 16; d > 0; d /= 2) v += Warp.ShuffleXor(v, d);
        return v;
    }

    /// <summary>One row of x for each of up to 8 items: the blocks from firsts[k] on are item k's, and its block b takes
    /// factor rows 2b, 2b + 1, four warps each (chunks split across their 128 threads, the four warp sums added through
    /// shared memory); t[TAt + j] = σ_j·Σ_i x[Row, i]·V[j, i].</summary>
    static void ShrinkOneKernel(ArrayView<float> x, Eight<LowRankItem> items, Eight<int> firsts, ArrayView<float> t, int inDim)
    {
        int k = 0;
        while (k + 1 < Eight<int>.Count && Grid.IdxX >= firsts[k + 1]) k++;
        var it = items[k];
        var sh = Stage(x.SubView((long)it.Row * inDim, inDim), inDim);
        int warp = Warp.WarpIdx, j = (Grid.IdxX - firsts[k]) * ShrinkRowsABlock + warp / ShrinkWarpsARow, part = warp % ShrinkWarpsARow;
        int groups = (inDim + it.Group - 1) / it.Group;
        float sum = 0f;
        if (j < it.Rank)
        {
            int c = SliceOf(it.Table, it.Slices, j) * LowRankFactors.TableCols, bits = it.Table[c + 2], rowWords = PackedCodes.RowWords(inDim, bits);
            long wordStart = it.Table[c + 3] + (long)(j - it.Table[c]) * rowWords, p0 = (long)j * groups;
            sum = WarpSum(RowDot(sh, 0, it.VCodes.SubView(wordStart, rowWords), it.VScales.SubView(p0, groups), it.VZeros.SubView(p0, groups), inDim,
                                 bits, it.Group, it.Inv, part * 32 + Warp.LaneIdx, ShrinkWarpsARow * 32));
        }
        int partsAt = Staged(inDim);
        if (Warp.LaneIdx == 0) sh[partsAt + warp] = sum;
        Group.Barrier();
        if (part == 0 && Warp.LaneIdx == 0 && j < it.Rank)
        {
            float total = 0f;
            for (int w = 0; w < ShrinkWarpsARow; w++) total += sh[partsAt + warp + w];
            t[it.TAt + j] = it.Sigma[j] * total;
        }
    }

    /// <summary>One row of x for each of up to 8 items: blocks k·outBlocks … are item k's, and warp w of its block b takes
    /// output o = 8b + w; y[Row, o] += Σ_j t[TAt + j]·U[o, j], slice by slice.</summary>
    static void ExpandOneKernel(ArrayView<float> t, Eight<LowRankItem> items, ArrayView<float> y, int outDim, int outBlocks)
    {
        int k = Grid.IdxX / outBlocks;
        var it = items[k];
        var sh = StageSlices(t.SubView(it.TAt, it.Rank), it.Table, it.Slices);
        int o = (Grid.IdxX - k * outBlocks) * OneRowWarps + Warp.WarpIdx;
        if (o >= outDim) return;
        float acc = 0f;
        int off = 0;
        for (int s = 0; s < it.Slices; s++)
        {
            int c = s * LowRankFactors.TableCols, r = it.Table[c + 1], bits = it.Table[c + 2];
            if (r == 0) continue;   // a slice the budget left empty: its views would start at the arrays' ends
            int rowWords = PackedCodes.RowWords(r, bits), groups = (r + it.Group - 1) / it.Group;
            long wordStart = it.Table[c + 4] + (long)o * rowWords, p0 = it.Table[c + 5] + (long)o * groups;
            acc += RowDot(sh, off, it.UCodes.SubView(wordStart, rowWords), it.UScales.SubView(p0, groups), it.UZeros.SubView(p0, groups), r, bits,
                          it.Group, it.Inv, Warp.LaneIdx, 32);
            off += r + (r + 31) / 32;
        }
        float sum = WarpSum(acc);
        if (Warp.LaneIdx == 0) y[(long)it.Row * outDim + o] += sum;
    }

    /// <summary>The block's 8 row sums: each warp's (<see cref="MatMul.WarpTotal8"/>) through shared memory, added in warp
    /// order by threads 0–7, which return row k = thread's; the others return 0.</summary>
    internal static float BlockTotal8(MatMul.Acc8 acc, ArrayView<float> shared, int warps)
    {
        int lane = Warp.LaneIdx;
        float sum = MatMul.WarpTotal8(acc, lane);
        if ((lane & 3) == 0) shared[Warp.WarpIdx * 8 + MatMul.RowOfLane(lane)] = sum;
        Group.Barrier();
        float total = 0f;
        if (Group.IdxX < 8)
            for (int w = 0; w < warps; w++) total += shared[w * 8 + Group.IdxX];
        return total;
    }
}

/// <summary>One row of x and one tenant's factors in a many-tenant launch of the one-row kernels: the factors' views,
/// the row of x and y, where the item's t starts, and its group size (tenants may have been compressed with different
/// ones).</summary>
public struct LowRankItem
{
    public ArrayView<uint> VCodes, UCodes;
    public ArrayView<ushort> VScales, UScales;
    public ArrayView<byte> VZeros, UZeros;
    public ArrayView<float> Sigma;
    public ArrayView<int> Table;
    public int Row, Rank, Slices, TAt, Group;
    public float Inv;
}

/// <summary>A <see cref="LowRankFactors"/>' arrays on the host, for the twin and the CPU path.</summary>
public sealed class LowRankHost
{
    public required uint[] VCodes, UCodes;
    public required ushort[] VScales, UScales;
    public required byte[] VZeros, UZeros;
    public required float[] Sigma;
    public required int[] Table;
    public required int Group, Out, In;
    public int Rank => Sigma.Length;

    public int SliceOfRow(int j)
    {
        int s = 0;
        while ((s + 1) * LowRankFactors.TableCols < Table.Length && j >= Table[(s + 1) * LowRankFactors.TableCols]) s++;
        return s;
    }

    public static LowRankHost Of(LowRankFactors f) => new()
    {
        VCodes = f.VCodes.ToArray<uint>(), UCodes = f.UCodes.ToArray<uint>(), VScales = f.VScales.ToArray<ushort>(), UScales = f.UScales.ToArray<ushort>(),
        VZeros = f.VZeros.ToArray<byte>(), UZeros = f.UZeros.ToArray<byte>(), Sigma = f.Sigma.ToArray<float>(), Table = f.Table.ToArray<int>(),
        Group = f.Group, Out = f.Out, In = f.In,
    };
}

public static class LowRankCases
{
    /// <summary>
    /// Random packed factors: 1–3 slices of ragged ranks at bits drawn from 8, 4, 3, 2 (3-bit codes straddle words), a
    /// group size that does not divide in or the ranks (or a multiple of 32), rows long enough, in one case of four, for
    /// the kernels' strided walks to take several steps, random codes, f16 scales and zeros; rows across one or more
    /// passes of 8; y starts from random values, so a forgotten add shows.
    /// </summary>
    public static AuditCase Case => new("low-rank linear", Check.F32Bound, (dev, rng) =>
    {
        int slices = 1 + rng.Next(3), outDim = Check.Size(rng, 70), inDim = Check.Size(rng, 200), rows = Check.Size(rng, 20);
        int group = rng.Next(3) == 0 ? 32 * (1 + rng.Next(4)) : 4 + rng.Next(60);
        int[] choices = [8, 4, 3, 2];
        var ranks = Enumerable.Range(0, slices).Select(_ => Check.Size(rng, 40)).ToArray();
        // One case in three walks past the kernels' first four strides (256 inputs, 128 ranks): long rows, few outputs;
        // half of those are one row in groups of a multiple of 32, the one-row kernels' whole-chunk path (a shrink row of
        // more than 32 chunks, an expand slice of more than 8).
        if (rng.Next(3) == 0)
        {
            inDim = 1100 + rng.Next(1500);
            ranks[0] = 270 + rng.Next(450);
            outDim = Check.Size(rng, 12);
            rows = Check.Size(rng, 3);
            if (rng.Next(2) == 0) (rows, group) = (1, 32 * (1 + rng.Next(4)));
        }
        var bits = Enumerable.Range(0, slices).Select(_ => choices[rng.Next(4)]).ToArray();
        // A later slice may be empty: compress's budget can leave the 2-bit slice no rank (4096² is fine, 256² is not).
        if (slices > 1 && rng.Next(4) == 0) ranks[1 + rng.Next(slices - 1)] = 0;
        using var f = LowRankFactors.Random(rng, dev, ranks, bits, group, outDim, inDim);
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var want = Check.Values(rng, (long)rows * outDim, 3f);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var ty = Tensor.From(want, [rows, outDim], dev);
        LowRankLinear.Run(tx, f, ty);
        LowRankLinear.Twin(x, LowRankHost.Of(f), want, rows);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {inDim}] → ranks {string.Join("+", ranks)} at {string.Join("/", bits)} bits, group {group} → {outDim}");
    });

    /// <summary>
    /// The many-tenant form: 1–11 tenants of one shape, each with its own slices, bits and group, and 1–14 runs of rows
    /// drawn among them (a tenant may have several runs; most runs 1–2 rows, some long enough for the multi-row kernels;
    /// more than 8 one-row items take several launches), against the twin run by run.
    /// </summary>
    public static AuditCase ManyCase => new("low-rank linear, many tenants", Check.F32Bound, (dev, rng) =>
    {
        // Small shapes: ILGPU's CPU accelerator runs the one-row kernels' 256-thread blocks slowly, and the tests run 25 cases.
        int outDim = Check.Size(rng, 24), inDim = Check.Size(rng, 100), tenants = 1 + rng.Next(11);
        int[] choices = [8, 4, 3, 2];
        var fs = new List<LowRankFactors>();
        try
        {
            for (int i = 0; i < tenants; i++)
            {
                int slices = 1 + rng.Next(3), group = rng.Next(3) == 0 ? 32 * (1 + rng.Next(4)) : 4 + rng.Next(60);
                var ranks = Enumerable.Range(0, slices).Select(_ => Check.Size(rng, 16)).ToArray();
                var bits = Enumerable.Range(0, slices).Select(_ => choices[rng.Next(4)]).ToArray();
                if (slices > 1 && rng.Next(4) == 0) ranks[1 + rng.Next(slices - 1)] = 0;
                fs.Add(LowRankFactors.Random(rng, dev, ranks, bits, group, outDim, inDim));
            }
            var runs = Check.Runs(rng, fs, 8, out int rows);
            var x = Check.Values(rng, (long)rows * inDim, 2f);
            var want = Check.Values(rng, (long)rows * outDim, 3f);
            using var tx = Tensor.From(x, [rows, inDim], dev);
            using var ty = Tensor.From(want, [rows, outDim], dev);
            LowRankLinear.Run(tx, runs, ty);
            foreach (var (start, count, f) in runs)
                LowRankLinear.Twin(x.AsSpan(start * inDim, count * inDim), LowRankHost.Of(f), want.AsSpan(start * outDim, count * outDim), count);
            return (Check.RelativeError(ty.ToFloatArray(), want),
                    $"{rows} rows in runs of {string.Join(",", runs.Select(r => r.Count))} over {tenants} tenants, [{inDim}] → {outDim}");
        }
        finally
        {
            foreach (var f in fs) f.Dispose();
        }
    });
}

using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// One sparse low-bit delta (DeltaZip, arXiv 2312.05215) on a device: Δ [out, in] with 2:4 structured sparsity (two of
/// every four consecutive inputs kept per output row) and the kept values quantized to b bits (2 or 4) on a symmetric
/// grid, value = scale·(code − 2^(b−1)), one f16 scale per row and group of inputs. Meta (u32 [out, ceil(in/32)]): for
/// the four inputs 4q … 4q + 3, nibble q mod 8 of word q div 8 holds the two kept positions, a (low 2 bits) &lt; b (high
/// 2 bits). Codes: per row the in/2 kept values in input order, packed at b bits (<see cref="PackedCodes"/>). That is
/// 1 bit a weight for the positions and b/2 for the values (2:4 with 4-bit values: 3 bits, as Sparse-Marlin stores it).
/// </summary>
public sealed class SparseFactors(Tensor meta, Tensor codes, Tensor scales, int bits, int group, int outDim, int inDim) : IDisposable
{
    public Tensor Meta { get; } = meta;
    public Tensor Codes { get; } = codes;
    public Tensor Scales { get; } = scales;
    public int Bits { get; } = bits;
    public int Group { get; } = group;
    public int Out { get; } = outDim;
    public int In { get; } = inDim;
    public Device Device => Codes.Device;
    public long ByteLength => Meta.ByteLength + Codes.ByteLength + Scales.ByteLength;

    public static int MetaWords(int inDim) => (inDim + 31) / 32;

    /// <summary>Random 2:4 factors on <paramref name="dev"/> (every pair of kept positions a &lt; b drawn at random, random
    /// codes, f16 scales never zero): the audit's inputs and the benchmark's tenants at real shapes.</summary>
    public static SparseFactors Random(Random rng, Device dev, int bits, int group, int outDim, int inDim)
    {
        int groups = (inDim + group - 1) / group, mw = MetaWords(inDim);
        (int, int)[] pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
        var meta = new uint[(long)outDim * mw];
        for (int o = 0; o < outDim; o++)
            for (int q = 0; q < inDim / 4; q++)
            {
                var (a, b) = pairs[rng.Next(6)];
                meta[(long)o * mw + q / 8] |= (uint)(a | b << 2) << (q % 8 * 4);
            }
        var codes = new uint[(long)outDim * PackedCodes.RowWords(inDim / 2, bits)];
        for (long i = 0; i < codes.Length; i++) codes[i] = (uint)rng.NextInt64(0, 1L << 32);
        var scales = Enumerable.Range(0, outDim * groups).Select(_ => Math.Abs(Check.Value(rng, 0.05f))).ToArray();
        return new SparseFactors(Tensor.From(meta, [outDim, mw], dev, DType.U32), Tensor.From(codes, [outDim, codes.Length / Math.Max(1, outDim)], dev, DType.U32),
            Tensor.From(scales, [outDim, groups], dev, DType.F16), bits, group, outDim, inDim);
    }

    /// <summary>A copy on <paramref name="device"/>, or these factors where they are there already.</summary>
    public SparseFactors To(Device device) => device == Device ? this : new(Meta.To(device), Codes.To(device), Scales.To(device), Bits, Group, Out, In);

    /// <summary>These factors on <paramref name="device"/>: themselves where they are already, else a copy there, and
    /// these are disposed (loading a file's host copy onto the device).</summary>
    public SparseFactors MoveTo(Device device)
    {
        if (device == Device) return this;
        var moved = To(device);
        Dispose();
        return moved;
    }

    public void Dispose()
    {
        Meta.Dispose();
        Codes.Dispose();
        Scales.Dispose();
    }
}

/// <summary>
/// y += x·Δᵀ for a <see cref="SparseFactors"/> delta, x f32 [rows, in], y f32 [rows, out]: a block per output and pass of
/// up to 8 rows, threads over the groups of four inputs, decoding each kept value once for the rows and reading
/// only the inputs they weigh. On the managed CPU device Δ is decoded to f32 and the host matmul runs it.
/// </summary>
public static class SparseLinear
{
    /// <summary>The two kept positions of group q of row o, and their values (the spec of every reader).</summary>
    public static (int A, int B, double Va, double Vb) Kept(ReadOnlySpan<uint> meta, ReadOnlySpan<uint> codes, ReadOnlySpan<ushort> scales, int bits,
                                                           int group, int inDim, int o, int q)
    {
        uint nib = (meta[o * SparseFactors.MetaWords(inDim) + q / 8] >> (q % 8 * 4)) & 15u;
        long rowStart = (long)o * PackedCodes.RowWords(inDim / 2, bits);
        int zero = 1 << (bits - 1), groups = (inDim + group - 1) / group;
        int a = (int)(nib & 3), b = (int)(nib >> 2);
        double sa = PackedCodes.Half(scales[o * groups + (4 * q + a) / group]), sb = PackedCodes.Half(scales[o * groups + (4 * q + b) / group]);
        return (a, b, sa * (PackedCodes.Get(codes, rowStart, 2 * q, bits) - zero), sb * (PackedCodes.Get(codes, rowStart, 2 * q + 1, bits) - zero));
    }

    /// <summary>The spec: y += f64 sums of x times the decoded kept values, rounded to f32 once.</summary>
    public static void Twin(ReadOnlySpan<float> x, ReadOnlySpan<uint> meta, ReadOnlySpan<uint> codes, ReadOnlySpan<ushort> scales, int bits, int group,
                            Span<float> y, int rows, int inDim, int outDim)
    {
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
            {
                double s = y[r * outDim + o];
                for (int q = 0; q < inDim / 4; q++)
                {
                    var (a, b, va, vb) = Kept(meta, codes, scales, bits, group, inDim, o, q);
                    s += va * x[r * inDim + 4 * q + a] + vb * x[r * inDim + 4 * q + b];
                }
                y[r * outDim + o] = (float)s;
            }
    }

    /// <summary>Δ decoded to f32 [out, in] (zeros where pruned): the managed CPU device's path.</summary>
    public static float[] Decode(ReadOnlySpan<uint> meta, ReadOnlySpan<uint> codes, ReadOnlySpan<ushort> scales, int bits, int group, int inDim, int outDim)
    {
        var d = new float[(long)outDim * inDim];
        for (int o = 0; o < outDim; o++)
            for (int q = 0; q < inDim / 4; q++)
            {
                var (a, b, va, vb) = Kept(meta, codes, scales, bits, group, inDim, o, q);
                d[(long)o * inDim + 4 * q + a] = (float)va;
                d[(long)o * inDim + 4 * q + b] = (float)vb;
            }
        return d;
    }

    public static void Run(Tensor x, SparseFactors f, Tensor y) => Run(x, [(0, (int)Need.DeltaRows("sparse", x, y, f.In, f.Out), f)], y);

    /// <summary>
    /// y[rows of run k] += x[rows of run k]·Δ_kᵀ for runs of rows of x [rows, in], each with its tenant's factors (all of one
    /// linear's shape): a run's rows go in items of up to 8 rows, and up to 8 items (of any tenants) share a launch, the
    /// way Punica's SGMV (arXiv 2310.18547) serves many LoRA adapters in one.
    /// </summary>
    public static void Run(Tensor x, IReadOnlyList<(int Start, int Count, SparseFactors F)> runs, Tensor y)
    {
        if (runs.Count == 0) return;
        int inDim = runs[0].F.In, outDim = runs[0].F.Out;
        long rows = Need.DeltaRows("sparse", x, y, inDim, outDim);
        foreach (var (start, count, f) in runs)
        {
            Need.SameDevice(x, f.Codes, y);
            if (f.In != inDim || f.Out != outDim)
                throw new ArgumentException($"sparse runs of one launch share a shape: [{outDim}, {inDim}] and [{f.Out}, {f.In}]");
            if (start < 0 || count < 0 || start + (long)count > rows)
                throw new ArgumentException($"sparse run of rows {start}…{start + count} outside x's {rows} rows");
            if (f.Bits != 2 && f.Bits != 4) throw new ArgumentException($"sparse codes at {f.Bits} bits; the kernel reads 2 or 4");
            if (f.Group % 4 != 0 || f.In >= PackedCodes.MaxGroupedIndex)
                throw new ArgumentException($"sparse factors of {f.In} inputs in groups of {f.Group}: the kernel takes groups of a multiple of 4 and fewer than {PackedCodes.MaxGroupedIndex} inputs");
        }
        if (outDim == 0) return;
        var dev = y.Device;
        if (!dev.IsIlgpu)
        {
            using var x2 = x.Reshape((int)rows, inDim);
            using var y2 = y.Reshape((int)rows, outDim);
            foreach (var (start, count, f) in runs)
            {
                if (count == 0) continue;
                var d = Decode(f.Meta.Host<uint>(), f.Codes.Host<uint>(), f.Scales.Host<ushort>(), f.Bits, f.Group, f.In, f.Out);
                using var td = Tensor.From(d, [f.Out, f.In], dev);
                using var xs = x2.Slice(start, count);
                using var ys = y2.Slice(start, count);
                MatMul.Run(xs, td, ys, accumulate: true);
            }
            return;
        }
        var items = new List<SparseItem>();
        foreach (var (start, count, f) in runs)
            for (int r = start; r < start + count; r += 8)
                items.Add(new SparseItem
                {
                    Meta = f.Meta.View<uint>(), Codes = f.Codes.View<uint>(), Scales = f.Scales.View<ushort>(), Row = r, Rows = Math.Min(8, start + count - r),
                    Bits = f.Bits, Groups = (f.In + f.Group - 1) / f.Group, Inv = 1f / f.Group,
                });
        for (int at = 0; at < items.Count; at += Eight<int>.Count)
        {
            int n = Math.Min(Eight<int>.Count, items.Count - at);
            var batch = new Eight<SparseItem>();
            for (int k = 0; k < n; k++) batch[k] = items[at + k];
            dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, Eight<SparseItem>, ArrayView<float>, int, int>>(Kernel)(
                new KernelConfig(n * outDim, Threads), x.View<float>(), batch, y.View<float>(), inDim, outDim);
        }
    }

    /// <summary>4 warps an output. The first form (a warp an output, a group of four a lane at a time) ran 42–71 GB/s on the
    /// H200; a lane per word of meta read x 128 bytes apart across a warp (32 cache lines a load); a lane per group of four
    /// in blocks of 4 warps ran 89–149 GB/s, bound by instructions (bench/NOTES.md). Here a thread's meta
    /// nibble and code pair sit at the same place in their words at every step, and the scale index is one multiply.</summary>
    const int Threads = 128;

    /// <summary>One group of four: its two kept values (a code pair, 2b bits in one word) times the two inputs they weigh.</summary>
    static MatMul.Acc8 Four(MatMul.Acc8 acc, int nib, int pair, int at, float scale, int bits, int mask, int zero, ArrayView<float> x, int inDim, int n)
    {
        float va = scale * ((pair & mask) - zero), vb = scale * (((pair >> bits) & mask) - zero);
        acc = LowRankLinear.Fma(acc, va, x, at + (nib & 3), inDim, n);
        return LowRankLinear.Fma(acc, vb, x, at + (nib >> 2), inDim, n);
    }

    /// <summary>Block b: item k = b div out (up to 8 rows of x from its Row, one tenant's factors), output o = b mod out.
    /// Thread t takes groups of four q = t, t + 128, …, four at a time with their meta, code and scale loads first. With a stride of 128 groups, group q's nibble is always
    /// nibble t mod 8 of its meta word and its code pair (codes 2q, 2q + 1: 2b bits, never split as 2b divides 32) always at
    /// bit 2tb mod 32 of its word; the group of inputs of a kept value is that of 4q (the group size is a multiple of 4).</summary>
    static void Kernel(ArrayView<float> x, Eight<SparseItem> items, ArrayView<float> y, int inDim, int outDim)
    {
        int k = Grid.IdxX / outDim, o = Grid.IdxX - k * outDim, tid = Group.IdxX;
        var it = items[k];
        int r0 = it.Row, n = it.Rows, bits = it.Bits, groups = it.Groups;
        float inv = it.Inv;
        var meta = it.Meta;
        var codes = it.Codes;
        var scales = it.Scales;
        const int S = Threads;
        int fours = inDim / 4, zero = 1 << (bits - 1), mask = (1 << bits) - 1, nibShift = tid % 8 * 4, pairShift = 2 * tid * bits % 32;
        int metaWords = SparseFactors.MetaWords(inDim), rowWords = PackedCodes.RowWords(inDim / 2, bits);
        // Views that start at this output's meta, codes and scales and at the rows' inputs: the loop's indices are small.
        var mr = meta.SubView((long)o * metaWords, metaWords);
        var cr = codes.SubView((long)o * rowWords, rowWords);
        var sr = scales.SubView((long)o * groups, groups);
        var xs = x.SubView((long)r0 * inDim, x.Length - (long)r0 * inDim);
        int metaAt = tid / 8, codeAt = 2 * tid * bits / 32, codeStep = 2 * S * bits / 32;
        var acc = default(MatMul.Acc8);
        for (int q = tid, m = 0; q < fours; q += 4 * S, m += 4)
        {
            int n0 = (int)(mr[metaAt + m * (S / 8)] >> nibShift) & 15, c0 = (int)(cr[codeAt + m * codeStep] >> pairShift);
            float s0 = PackedCodes.Half(sr[PackedCodes.GroupOf(4 * q, inv)]);
            int n1 = 0, c1 = 0, n2 = 0, c2 = 0, n3 = 0, c3 = 0;
            float s1 = 0f, s2 = 0f, s3 = 0f;
            if (q + S < fours)
            {
                n1 = (int)(mr[metaAt + (m + 1) * (S / 8)] >> nibShift) & 15;
                c1 = (int)(cr[codeAt + (m + 1) * codeStep] >> pairShift);
                s1 = PackedCodes.Half(sr[PackedCodes.GroupOf(4 * (q + S), inv)]);
            }
            if (q + 2 * S < fours)
            {
                n2 = (int)(mr[metaAt + (m + 2) * (S / 8)] >> nibShift) & 15;
                c2 = (int)(cr[codeAt + (m + 2) * codeStep] >> pairShift);
                s2 = PackedCodes.Half(sr[PackedCodes.GroupOf(4 * (q + 2 * S), inv)]);
            }
            if (q + 3 * S < fours)
            {
                n3 = (int)(mr[metaAt + (m + 3) * (S / 8)] >> nibShift) & 15;
                c3 = (int)(cr[codeAt + (m + 3) * codeStep] >> pairShift);
                s3 = PackedCodes.Half(sr[PackedCodes.GroupOf(4 * (q + 3 * S), inv)]);
            }
            acc = Four(acc, n0, c0, 4 * q, s0, bits, mask, zero, xs, inDim, n);
            if (q + S < fours) acc = Four(acc, n1, c1, 4 * (q + S), s1, bits, mask, zero, xs, inDim, n);
            if (q + 2 * S < fours) acc = Four(acc, n2, c2, 4 * (q + 2 * S), s2, bits, mask, zero, xs, inDim, n);
            if (q + 3 * S < fours) acc = Four(acc, n3, c3, 4 * (q + 3 * S), s3, bits, mask, zero, xs, inDim, n);
        }
        float total = LowRankLinear.BlockTotal8(acc, SharedMemory.Allocate<float>(Threads / 32 * 8), Threads / 32);
        if (tid < n) y[(long)(r0 + tid) * outDim + o] += total;
    }
}

/// <summary>Up to 8 rows of x from <see cref="Row"/> with one tenant's sparse factors: an item of a many-tenant launch.</summary>
public struct SparseItem
{
    public ArrayView<uint> Meta, Codes;
    public ArrayView<ushort> Scales;
    public int Row, Rows, Bits, Groups;
    public float Inv;
}

public static class SparseCases
{
    /// <summary>Random 2:4 factors: in a multiple of 4 but ragged against 32 and the group (long, in one case of four), 2- or 4-bit codes, every
    /// pair of kept positions (a &lt; b) drawn at random, f16 scales; rows across passes of 8; y starts random.</summary>
    public static AuditCase Case => new("sparse low-bit linear", Check.F32Bound, (dev, rng) =>
    {
        int inDim = 4 * Check.Size(rng, 60), outDim = Check.Size(rng, 70), rows = Check.Size(rng, 20), bits = rng.Next(2) == 0 ? 2 : 4;
        // One case in four walks past the kernel's first four strides of 128 groups of four: long rows, few outputs.
        if (rng.Next(4) == 0) (inDim, outDim, rows) = (4 * (520 + rng.Next(700)), Check.Size(rng, 12), Check.Size(rng, 3));
        int group = 4 * (1 + rng.Next(40));
        using var f = SparseFactors.Random(rng, dev, bits, group, outDim, inDim);
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var want = Check.Values(rng, (long)rows * outDim, 3f);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var ty = Tensor.From(want, [rows, outDim], dev);
        SparseLinear.Run(tx, f, ty);
        SparseLinear.Twin(x, f.Meta.ToArray<uint>(), f.Codes.ToArray<uint>(), f.Scales.ToArray<ushort>(), bits, group, want, rows, inDim, outDim);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{rows}, {inDim}] → {outDim}, 2:4 at {bits} bits, group {group}");
    });

    /// <summary>The many-tenant form: 1–11 tenants of one shape at their own bits and groups, 1–14 runs of rows drawn among
    /// them (most of 1–2 rows, some past one item's 8; more than 8 items take several launches), against the twin run by
    /// run.</summary>
    public static AuditCase ManyCase => new("sparse low-bit linear, many tenants", Check.F32Bound, (dev, rng) =>
    {
        int inDim = 4 * Check.Size(rng, 40), outDim = Check.Size(rng, 24), tenants = 1 + rng.Next(11);
        var fs = new List<SparseFactors>();
        try
        {
            for (int i = 0; i < tenants; i++) fs.Add(SparseFactors.Random(rng, dev, rng.Next(2) == 0 ? 2 : 4, 4 * (1 + rng.Next(40)), outDim, inDim));
            var runs = Check.Runs(rng, fs, 14, out int rows);
            var x = Check.Values(rng, (long)rows * inDim, 2f);
            var want = Check.Values(rng, (long)rows * outDim, 3f);
            using var tx = Tensor.From(x, [rows, inDim], dev);
            using var ty = Tensor.From(want, [rows, outDim], dev);
            SparseLinear.Run(tx, runs, ty);
            foreach (var (start, count, f) in runs)
                SparseLinear.Twin(x.AsSpan(start * inDim, count * inDim), f.Meta.ToArray<uint>(), f.Codes.ToArray<uint>(), f.Scales.ToArray<ushort>(), f.Bits,
                                  f.Group, want.AsSpan(start * outDim, count * outDim), count, inDim, outDim);
            return (Check.RelativeError(ty.ToFloatArray(), want),
                    $"{rows} rows in runs of {string.Join(",", runs.Select(r => r.Count))} over {tenants} tenants, [{inDim}] → {outDim}");
        }
        finally
        {
            foreach (var f in fs) f.Dispose();
        }
    });
}

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
/// y += x·Δᵀ for a <see cref="SparseFactors"/> delta, x f32 [rows, in], y f32 [rows, out]: a warp per output and pass of
/// up to 8 rows, lanes over the groups of four inputs, each decoding its group's two kept values once for the rows and
/// reading only the two inputs they weigh. On the managed CPU device Δ is decoded to f32 and the host matmul runs it.
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

    public static void Run(Tensor x, SparseFactors f, Tensor y)
    {
        Need.SameDevice(x, f.Codes, y);
        long rows = Need.DeltaRows("sparse", x, y, f.In, f.Out);
        if (rows == 0 || f.Out == 0) return;
        var dev = y.Device;
        if (!dev.IsIlgpu)
        {
            var d = Decode(f.Meta.Host<uint>(), f.Codes.Host<uint>(), f.Scales.Host<ushort>(), f.Bits, f.Group, f.In, f.Out);
            using var td = Tensor.From(d, [f.Out, f.In], dev);
            MatMul.Run(x, td, y, accumulate: true);
            return;
        }
        long warps = (long)f.Out * ((rows + 7) / 8);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<ushort>, ArrayView<float>, int, int, int, int, int>>(Kernel)(
            new KernelConfig((int)((warps + 3) / 4), 128), x.View<float>(), f.Meta.View<uint>(), f.Codes.View<uint>(), f.Scales.View<ushort>(), y.View<float>(),
            (int)rows, f.In, f.Out, f.Bits, f.Group);
    }

    static void Kernel(ArrayView<float> x, ArrayView<uint> meta, ArrayView<uint> codes, ArrayView<ushort> scales, ArrayView<float> y,
                       int rows, int inDim, int outDim, int bits, int group)
    {
        long g = (long)Grid.IdxX * 4 + Warp.WarpIdx;
        int passes = (rows + 7) / 8;
        if (g >= (long)outDim * passes) return;
        int o = (int)(g % outDim), r0 = (int)(g / outDim) * 8, n = IntrinsicMath.Min(8, rows - r0), lane = Warp.LaneIdx;
        long metaRow = (long)o * SparseFactors.MetaWords(inDim), codeRow = (long)o * PackedCodes.RowWords(inDim / 2, bits);
        int zero = 1 << (bits - 1), groups = (inDim + group - 1) / group;
        long scaleRow = (long)o * groups, xAt = (long)r0 * inDim;
        var acc = default(MatMul.Acc8);
        for (int q = lane; q < inDim / 4; q += 32)
        {
            uint nib = (meta[metaRow + q / 8] >> (q % 8 * 4)) & 15u;
            int a = (int)(nib & 3), b = (int)(nib >> 2);
            float va = PackedCodes.Half(scales[scaleRow + (4 * q + a) / group]) * (PackedCodes.Get(codes, codeRow, 2 * q, bits) - zero);
            float vb = PackedCodes.Half(scales[scaleRow + (4 * q + b) / group]) * (PackedCodes.Get(codes, codeRow, 2 * q + 1, bits) - zero);
            acc = MatMul.Fma8(acc, va, x, xAt + 4 * q + a, inDim, n);
            acc = MatMul.Fma8(acc, vb, x, xAt + 4 * q + b, inDim, n);
        }
        float sum = MatMul.WarpTotal8(acc, lane);
        int k = MatMul.RowOfLane(lane);
        if ((lane & 3) == 0 && k < n) y[(long)(r0 + k) * outDim + o] += sum;
    }
}

public static class SparseCases
{
    /// <summary>Random 2:4 factors: in a multiple of 4 but ragged against 32 and the group, 2- or 4-bit codes, every
    /// pair of kept positions (a &lt; b) drawn at random, f16 scales; rows across passes of 8; y starts random.</summary>
    public static AuditCase Case => new("sparse low-bit linear", Check.F32Bound, (dev, rng) =>
    {
        int inDim = 4 * Check.Size(rng, 60), outDim = Check.Size(rng, 70), rows = Check.Size(rng, 20), bits = rng.Next(2) == 0 ? 2 : 4;
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
}

using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models.Codecs;

/// <summary>
/// Delta-CoMe's codec (Ping et al., arXiv 2406.08903): Δ = U·diag(σ)·Vᵀ by SVD, the singular vectors of the largest σ kept
/// at more bits. Triplets go in slices of falling σ: 2 at 8 bits, 32 at 3 bits, and as many at 2 bits as fill the
/// budget; the rest are dropped. The reference's budget is 1 bit a weight of codes alone (run.sh: 2/32/968 for a 4096²
/// attention matrix); here every stored byte counts (codes, f16 scales and u8 zeros per group, f32 σ), so that the file
/// is as small as BitDelta's at the default 1 bit a weight; at 7B shapes that leaves about a tenth fewer 2-bit triplets.
/// Per slice, V's rows are quantized first (GPTQ, with the linear's input Hessian H = Σ x·xᵀ), then U's rows, with the
/// Hessian of U's input y = σ ⊙ (x·V_qᵀ), which is diag(σ)·V_q·H·V_qᵀ·diag(σ) and needs no second pass over the data.
/// Asymmetric grid, groups of 128 along each row. Without calibration it rounds to nearest (the documented
/// fallback). σ is kept in f32.
/// </summary>
public static class LowRankMp
{
    public const string Codec = "lowrank-mp";
    public static readonly int[] DefaultBits = [8, 3, 2];
    public static readonly int[] DefaultFixedRanks = [2, 32];
    public const int DefaultGroup = 128;
    public const double DefaultBudget = 1.0;

    /// <summary>Bits a slice of <paramref name="r"/> triplets at <paramref name="b"/> bits stores for [out, in]: V's and U's
    /// packed rows, a 16-bit scale and an 8-bit zero per group, and σ in f32 (<see cref="LowRankFactors"/>).</summary>
    public static long SliceBits(int r, int b, int outDim, int inDim, int group) =>
        32L * r * PackedCodes.RowWords(inDim, b) + 24L * r * ((inDim + group - 1) / group)
        + 32L * outDim * PackedCodes.RowWords(r, b) + 24L * outDim * ((r + group - 1) / group) + 32L * r;

    /// <summary>Ranks per slice for an [out, in] matrix within <paramref name="budget"/> bits a weight (everything counted,
    /// <see cref="SliceBits"/>): the fixed ranks while the budget lasts, then the last slice as many as fit, capped by
    /// min(out, in) triplets in all.</summary>
    public static int[] Ranks(int outDim, int inDim, int[] bits, int[] fixedRanks, int group, double budget = DefaultBudget)
    {
        long left = (long)(budget * outDim * inDim);
        int room = Math.Min(outDim, inDim);
        var ranks = new int[bits.Length];
        for (int s = 0; s < bits.Length; s++)
        {
            int want = s < fixedRanks.Length ? fixedRanks[s] : room;
            int lo = 0, hi = Math.Min(want, room);   // the most that fit: cost grows with r
            while (lo < hi)
            {
                int mid = (lo + hi + 1) / 2;
                if (SliceBits(mid, bits[s], outDim, inDim, group) <= left) lo = mid; else hi = mid - 1;
            }
            ranks[s] = lo;
            if (lo > 0) left -= SliceBits(lo, bits[s], outDim, inDim, group);
            room -= lo;
        }
        return ranks;
    }

    /// <summary>One linear's delta [out, in] (f64) to packed factors on the host, within <paramref name="budget"/> bits a
    /// weight. <paramref name="h"/>: the input Hessian [in, in] (null: round to nearest).</summary>
    public static LowRankFactors Compress(double[] delta, int outDim, int inDim, double[]? h, int[] bits, int[] fixedRanks, int group,
                                          double budget = DefaultBudget)
    {
        var ranks = Ranks(outDim, inDim, bits, fixedRanks, group, budget);
        int total = ranks.Sum();
        // Jacobi where it is cheap; the randomized range finder for large matrices.
        var svd = (long)outDim * inDim * Math.Min(outDim, inDim) <= 2L << 30
            ? Svd.Full(delta, outDim, inDim)
            : Svd.Randomized(delta, outDim, inDim, Math.Max(1, total), oversample: 16, powerIterations: 2);
        var vCodes = new List<uint>();
        var vScales = new List<float>();
        var vZeros = new List<byte>();
        var uCodes = new List<uint>();
        var uScales = new List<float>();
        var uZeros = new List<byte>();
        var sigma = new List<float>();
        int first = 0;
        for (int s = 0; s < ranks.Length; s++)
        {
            int r = ranks[s], b = bits[s];
            if (r == 0) continue;
            // V_s rows [r, in] = singular vectors first … first + r − 1; U_s [out, r].
            var v = new double[(long)r * inDim];
            var u = new double[(long)outDim * r];
            var sg = new double[r];
            for (int j = 0; j < r; j++)
            {
                sg[j] = svd.S[first + j];
                for (int i = 0; i < inDim; i++) v[(long)j * inDim + i] = svd.V[(long)i * svd.K + first + j];
                for (int o = 0; o < outDim; o++) u[(long)o * r + j] = svd.U[(long)o * svd.K + first + j];
            }
            var qv = Gptq.Quantize(v, r, inDim, h, b, group, symmetric: false, sparse24: false);
            double[]? hu = h != null ? OutputHessian(qv.Dequantized, sg, h, r, inDim) : null;
            var qu = Gptq.Quantize(u, outDim, r, hu, b, group, symmetric: false, sparse24: false);
            vCodes.AddRange(Quant.Pack(qv.Codes, r, inDim, b));
            vScales.AddRange(qv.Scales);
            vZeros.AddRange(qv.Zeros);
            uCodes.AddRange(Quant.Pack(qu.Codes, outDim, r, b));
            uScales.AddRange(qu.Scales);
            uZeros.AddRange(qu.Zeros);
            sigma.AddRange(sg.Select(x => (float)x));
            first += r;
        }
        var keptRanks = ranks.Where(r => r > 0).ToArray();
        var keptBits = bits.Where((_, s) => ranks[s] > 0).ToArray();
        var table = LowRankFactors.MakeTable(keptRanks, keptBits, outDim, inDim, group);
        return new LowRankFactors(
            Tensor.From(vCodes.ToArray(), [vCodes.Count], dtype: DType.U32), Tensor.From(vScales.ToArray(), [vScales.Count], dtype: DType.F16),
            Tensor.From(vZeros.ToArray(), [vZeros.Count]), Tensor.From(uCodes.ToArray(), [uCodes.Count], dtype: DType.U32),
            Tensor.From(uScales.ToArray(), [uScales.Count], dtype: DType.F16), Tensor.From(uZeros.ToArray(), [uZeros.Count]),
            Tensor.From(sigma.ToArray(), [sigma.Count]), Tensor.From(table, [table.Length]), keptRanks, keptBits, group, outDim, inDim);
    }

    /// <summary>H_u = diag(σ)·V_q·H·V_qᵀ·diag(σ) [r, r]: the Hessian of U's input σ ⊙ (x·V_qᵀ) over the same x.</summary>
    static double[] OutputHessian(double[] vq, double[] sigma, double[] h, int r, int inDim)
    {
        var vh = Linalg.MatMul(vq, h, r, inDim, inDim);                        // [r, in]
        var hu = Linalg.MatMul(vh, Svd.Transpose(vq, r, inDim), r, inDim, r);  // [r, r]
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) hu[a * r + b] *= sigma[a] * sigma[b];
        return hu;
    }
}

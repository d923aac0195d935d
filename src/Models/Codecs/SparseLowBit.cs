using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models.Codecs;

/// <summary>
/// DeltaZip's codec (Yao et al., arXiv 2312.05215): Δ pruned to 2:4 structured sparsity and quantized to 2 or 4 bits in
/// one SparseGPT pass (<see cref="Gptq"/>, the linear's input Hessian; its reference, sparsegpt.py::fasterprune, prunes and
/// quantizes column by column the same way), on a symmetric grid (scale = 2·max|w| / (2^b − 1), zero 2^(b−1), as its
/// reference's sym quantizer). Its reference keeps one scale per row; we take groups of 128 inputs (a finer grid for a few
/// bits more per row). Then the packed layout of <see cref="SparseFactors"/>; the file's lossless stage (zstd) is the
/// delta file's (DeltaFile.cs).
/// </summary>
public static class SparseLowBit
{
    public const string Codec = "sparse-lowbit";
    public const int DefaultBits = 2;
    public const int DefaultGroup = 128;

    public static SparseFactors Compress(double[] delta, int outDim, int inDim, double[]? h, int bits, int group)
    {
        if (bits != 2 && bits != 4) throw new BitDeltaException($"sparse-lowbit: --bits must be 2 or 4, got {bits}");
        if (inDim % 4 != 0) throw new BitDeltaException($"sparse-lowbit: 2:4 sparsity needs the input size in fours, got {inDim}");
        var q = Gptq.Quantize(delta, outDim, inDim, h, bits, group, symmetric: true, sparse24: true);
        int mw = SparseFactors.MetaWords(inDim), half = inDim / 2;
        var meta = new uint[(long)outDim * mw];
        var kept = new byte[(long)outDim * half];
        for (int o = 0; o < outDim; o++)
            for (int g4 = 0; g4 < inDim / 4; g4++)
            {
                int a = -1, b = -1;
                for (int i = 0; i < 4; i++)
                    if (q.Kept![(long)o * inDim + 4 * g4 + i]) { if (a < 0) a = i; else b = i; }
                meta[(long)o * mw + g4 / 8] |= (uint)(a | b << 2) << (g4 % 8 * 4);
                kept[(long)o * half + 2 * g4] = q.Codes[(long)o * inDim + 4 * g4 + a];
                kept[(long)o * half + 2 * g4 + 1] = q.Codes[(long)o * inDim + 4 * g4 + b];
            }
        var codes = Quant.Pack(kept, outDim, half, bits);
        return new SparseFactors(Tensor.From(meta, [outDim, mw], dtype: DType.U32), Tensor.From(codes, [outDim, codes.Length / Math.Max(1, outDim)], dtype: DType.U32),
            Tensor.From(q.Scales, [outDim, q.Groups], dtype: DType.F16), bits, q.Group, outDim, inDim);
    }
}

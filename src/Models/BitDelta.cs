namespace BitDeltaNative.Models;

/// <summary>
/// BitDelta's binarization (Liu et al., arXiv 2402.10193, §3.1): for a linear weight, Δ = W_finetuned − W_base
/// in f32 is replaced by α·sign(Δ) with one scale per matrix, α = mean(|Δ|) (the L2-optimal scale for a fixed
/// sign matrix). The sign bit is 1 where Δ ≥ 0 (an exact zero counts as +1, as the reference's comparison
/// does) and 0 where Δ &lt; 0; it decodes to ±1. Signs are packed 32 per uint32 word along the input dimension,
/// least significant bit first, each row padded to whole words: <see cref="DType.Sign1"/>. That is the
/// reference's packing, and the one a GEMV wants: a warp reading a row of W reads the same row's sign words.
/// </summary>
public static class BitDelta
{
    public const string Codec = "bitdelta";

    /// <summary>Packs sign(Δ) of row-major [rows, cols] matrices into <paramref name="signs"/>
    /// ([rows, ceil(cols/32)] words) and returns α = mean(|Δ|), summed in f64 and rounded to f32.</summary>
    public static float Binarize(ReadOnlySpan<float> fineTuned, ReadOnlySpan<float> baseWeight, int rows, int cols, Span<uint> signs, string name = "weight")
    {
        int words = DTypes.SignWordsPerRow(cols);
        if (fineTuned.Length != (long)rows * cols || baseWeight.Length != fineTuned.Length || signs.Length != (long)rows * words)
            throw new ArgumentException($"{name}: sizes do not match [{rows}, {cols}]");
        signs.Clear();
        double sumAbs = 0;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                float d = fineTuned[r * cols + c] - baseWeight[r * cols + c];
                if (!float.IsFinite(d)) throw new BitDeltaException($"{name}: the delta at [{r}, {c}] is {d} (a weight is not finite)");
                sumAbs += Math.Abs(d);
                if (d >= 0) signs[r * words + c / 32] |= 1u << (c % 32);
            }
        return rows * (long)cols == 0 ? 0f : (float)(sumAbs / ((long)rows * cols));
    }

    /// <summary>Binarizes two weight tensors of any float dtype (host or device): packed signs on the host and α.</summary>
    public static (Tensor Signs, float Scale) Binarize(Tensor fineTuned, Tensor baseWeight, string name)
    {
        if (fineTuned.Rank != 2 || !fineTuned.Shape.SequenceEqual(baseWeight.Shape))
            throw new BitDeltaException($"{name}: fine-tune {fineTuned.ShapeString} and base {baseWeight.ShapeString} differ in shape");
        int rows = fineTuned.Dim(0), cols = fineTuned.Dim(1);
        var signs = Tensor.Empty([rows, cols], DType.Sign1, Device.Cpu);
        float scale = Binarize(fineTuned.ToFloatArray(), baseWeight.ToFloatArray(), rows, cols, signs.Host<uint>(), name);
        return (signs, scale);
    }
}

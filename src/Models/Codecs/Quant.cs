using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models.Codecs;

/// <summary>
/// Uniform quantization of groups of values to b-bit codes, the grid GPTQ uses (Frantar et al., arXiv 2210.17323;
/// quant/quantizer.py of its reference): per group a scale and an integer zero point, value = scale·(code − zero).
/// Asymmetric (Delta-CoMe): the group's [min, max], widened to hold 0, over 2^b − 1 steps. Symmetric (DeltaZip):
/// scale = 2·max|x| / (2^b − 1), zero = 2^(b−1), so codes span −2^(b−1) … 2^(b−1) − 1 steps and exact 0 is a code. Scales
/// are rounded to f16 before any code is chosen, as they are stored, so the codes fit the scale the kernels read.
/// </summary>
public static class Quant
{
    public static int MaxCode(int bits) => (1 << bits) - 1;

    /// <summary>Scale (an f16 value) and zero point for a group of values.</summary>
    public static (float Scale, int Zero) Params(ReadOnlySpan<double> values, int bits, bool symmetric)
    {
        int maxq = MaxCode(bits);
        double lo = 0, hi = 0;
        foreach (var v in values)
        {
            lo = Math.Min(lo, v);
            hi = Math.Max(hi, v);
        }
        if (symmetric)
        {
            double amax = Math.Max(-lo, hi);
            float s = ToF16(amax > 0 ? 2 * amax / maxq : 1);
            return (s, (maxq + 1) / 2);
        }
        if (hi == lo) return (1f, 0);   // an all-zero group: any scale, code 0 is 0
        float scale = ToF16((hi - lo) / maxq);
        if (scale == 0) scale = ToF16(6.1e-5);   // under f16's normal range: the smallest normal step
        int zero = (int)Math.Clamp(Math.Round(-lo / scale), 0, maxq);
        return (scale, zero);
    }

    public static int Code(double x, float scale, int zero, int bits) => (int)Math.Clamp(Math.Round(x / scale) + zero, 0, MaxCode(bits));

    public static double Value(int code, float scale, int zero) => (double)scale * (code - zero);

    /// <summary>x rounded to the nearest f16, as a float.</summary>
    public static float ToF16(double x) => (float)(Half)x;

    /// <summary>Words of one row of <paramref name="count"/> b-bit codes packed as a bit stream.</summary>
    public static int RowWords(int count, int bits) => (int)(((long)count * bits + 31) / 32);

    /// <summary>Codes [rows, cols] (one per byte) packed per row as a bit stream, code j at bits j·b … j·b + b − 1 from the
    /// row's first word, least significant first: b-bit codes cost b bits, 3-bit ones too (a code may straddle two
    /// words). Rows start on whole words.</summary>
    public static uint[] Pack(ReadOnlySpan<byte> codes, int rows, int cols, int bits)
    {
        int rw = RowWords(cols, bits);
        var words = new uint[(long)rows * rw];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                long bit = (long)c * bits;
                int w = (int)(bit >> 5), sh = (int)(bit & 31);
                ulong v = (ulong)codes[r * cols + c] << sh;
                words[(long)r * rw + w] |= (uint)v;
                if (sh + bits > 32) words[(long)r * rw + w + 1] |= (uint)(v >> 32);
            }
        return words;
    }

    /// <summary>Code <paramref name="col"/> of a packed row starting at <paramref name="rowStart"/> (the kernels' twin).</summary>
    public static int Unpack(ReadOnlySpan<uint> words, long rowStart, int col, int bits) => PackedCodes.Get(words, rowStart, col, bits);
}

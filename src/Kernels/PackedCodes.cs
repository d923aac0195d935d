using ILGPU;

namespace BitDeltaNative.Kernels;

/// <summary>
/// b-bit codes packed as a bit stream per row (the low-rank and sparse codecs' storage, Models/Codecs/Quant.cs): code j
/// of a row at bits j·b … j·b + b − 1 from the row's first word, least significant first, a code possibly straddling two
/// words; a row starts on a whole word. Read the same way by the kernels and their twins.
/// </summary>
public static class PackedCodes
{
    public static int RowWords(int count, int bits) => (int)(((long)count * bits + 31) / 32);

    public static int Get(ReadOnlySpan<uint> words, long rowStart, int col, int bits)
    {
        long bit = (long)col * bits;
        long w = rowStart + (bit >> 5);
        int sh = (int)(bit & 31);
        ulong v = words[(int)w] >> sh;
        if (sh + bits > 32) v |= (ulong)words[(int)w + 1] << (32 - sh);
        return (int)(v & ((1u << bits) - 1));
    }

    public static int Get(ArrayView<uint> words, long rowStart, int col, int bits)
    {
        long bit = (long)col * bits;
        long w = rowStart + (bit >> 5);
        int sh = (int)(bit & 31);
        uint v = words[w] >> sh;
        if (sh + bits > 32) v |= words[w + 1] << (32 - sh);
        return (int)(v & ((1u << bits) - 1));
    }

    /// <summary>An f16 stored as its bits, as f32.</summary>
    public static float Half(ushort bits) => (float)Interop.IntAsFloat(bits);
}

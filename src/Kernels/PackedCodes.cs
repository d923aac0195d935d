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

    /// <summary>i / group for i &lt; 2^22 from a reciprocal: (i + ½)·(1/group) is at least ½/group from an integer and its
    /// rounding error is under i·2^−23/group, so the floor is exact; 3 instructions where an integer division takes ~20.</summary>
    public static int GroupOf(int i, float inverseGroup) => (int)((i + 0.5f) * inverseGroup);

    /// <summary>The most inputs a row may have for <see cref="GroupOf"/>.</summary>
    public const int MaxGroupedIndex = 1 << 22;

    /// <summary>An f16 stored as its bits, as f32.</summary>
    public static float Half(ushort bits) => (float)Interop.IntAsFloat(bits);
}

/// <summary>
/// A thread's walk over codes first, first + stride, first + 2·stride, … of one packed row (<see cref="PackedCodes"/>), for a
/// stride that is a multiple of 32: each step moves stride·b bits, whole words, so where a code sits in its word and
/// whether it straddles the next are the same for the whole walk, and a step costs a load, a shift and a mask.
/// </summary>
public struct CodeWalk
{
    int word, shift, step;
    uint mask;
    bool straddles;

    /// <param name="first">the walk's first code, counted from the start of the row the walk reads (a view that starts there)</param>
    public CodeWalk(int first, int bits, int stride)
    {
        int bit = first * bits;
        word = bit >> 5;
        shift = bit & 31;
        straddles = shift + bits > 32;
        step = stride / 32 * bits;
        mask = (1u << bits) - 1;
    }

    /// <summary>The code of step m, from <paramref name="row"/>: a view that starts at the row's first word.</summary>
    public readonly int At(ArrayView<uint> row, int m)
    {
        int w = word + m * step;
        uint v = row[w] >> shift;
        if (straddles) v |= row[w + 1] << (32 - shift);
        return (int)(v & mask);
    }
}

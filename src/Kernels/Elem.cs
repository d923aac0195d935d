using ILGPU;

namespace BitDeltaNative.Kernels;

/// <summary>
/// How kernels read and write elements whose dtype is known only at run time. Every 16- or 32-bit
/// float tensor is passed to a kernel as an <c>ArrayView&lt;ushort&gt;</c> plus a code: f16 and bf16 are one
/// ushort per element, f32 two (low half first, little-endian). The code is uniform across a launch, so
/// the branch costs nothing on the GPU, and one kernel serves checkpoints in any of the three dtypes.
/// </summary>
public static class Elem
{
    public const int F16 = 0, BF16 = 1, F32 = 2;

    public static int Code(DType t) => t switch
    {
        DType.F16 => F16,
        DType.BF16 => BF16,
        DType.F32 => F32,
        _ => throw new NotSupportedException($"{t} is not a float dtype kernels read"),
    };

    public static float Load(ArrayView<ushort> v, long i, int code)
    {
        if (code != F32) return Widen(v[i], code);
        return Interop.IntAsFloat((uint)v[2 * i] | ((uint)v[2 * i + 1] << 16));
    }

    /// <summary>A half's bits (<see cref="F16"/> or <see cref="BF16"/>) as f32, exactly.</summary>
    public static float Widen(ushort bits, int code) =>
        code == F16 ? (float)Interop.IntAsFloat(bits) : Interop.IntAsFloat((uint)bits << 16);

    /// <summary>Stores f32 rounded to nearest even (the same rounding as <see cref="Casts"/>).</summary>
    public static void Store(ArrayView<ushort> v, long i, int code, float x)
    {
        if (code == F16) v[i] = Casts.F32BitsToF16(Interop.FloatAsInt(x));
        else if (code == BF16) v[i] = Casts.F32BitsToBf16(Interop.FloatAsInt(x));
        else
        {
            uint b = Interop.FloatAsInt(x);
            v[2 * i] = (ushort)b;
            v[2 * i + 1] = (ushort)(b >> 16);
        }
    }

    /// <summary>The tensor's storage in the form kernels take (see the class comment).</summary>
    public static ArrayView<ushort> View(Tensor t) => t.View<ushort>();
}

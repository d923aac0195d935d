using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative;

/// <summary>
/// f16 and bf16 to and from f32, rounding to nearest, ties to even (IEEE 754 §4.3.1), NaN and ±Inf kept.
/// The scalar functions are integer-only so the same code runs in ILGPU kernels and on the host;
/// the span functions are the SIMD host path. The GPU kernels launch the scalar ones per element.
/// </summary>
public static class Casts
{
    public static float Bf16ToF32(ushort h) => BitConverter.Int32BitsToSingle(h << 16);

    /// <summary>bf16 is the top half of an f32: round the low 16 bits away, ties to even.
    /// NaN keeps its sign and top payload bits and is made quiet so it cannot round to Inf.</summary>
    public static ushort F32ToBf16(float f)
    {
        uint bits = (uint)BitConverter.SingleToInt32Bits(f);
        return F32BitsToBf16(bits);
    }

    public static ushort F32BitsToBf16(uint bits)
    {
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((bits >> 16) | 0x0040u);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>f16 → f32, exact: every f16 value (subnormals too) is an f32 value.</summary>
    public static float F16ToF32(ushort h) => BitConverter.Int32BitsToSingle((int)F16ToF32Bits(h));

    public static uint F16ToF32Bits(ushort h)
    {
        uint sign = (uint)(h & 0x8000) << 16;
        uint exp = (uint)(h >> 10) & 0x1Fu;
        uint mant = h & 0x3FFu;
        if (exp == 0x1F) return sign | 0x7F80_0000u | (mant << 13);           // Inf, NaN (payload kept)
        if (exp != 0) return sign | ((exp + 112u) << 23) | (mant << 13);      // normal: rebias 15 → 127
        if (mant == 0) return sign;                                            // ±0
        // Subnormal: value = mant · 2^-24; normalise the mantissa.
        int shift = 0;
        while ((mant & 0x400u) == 0) { mant <<= 1; shift++; }
        return sign | ((uint)(113 - shift) << 23) | ((mant & 0x3FFu) << 13);
    }

    /// <summary>f32 → f16, round to nearest even; overflow goes to ±Inf, NaN stays a (quiet) NaN.</summary>
    public static ushort F32ToF16(float f) => F32BitsToF16((uint)BitConverter.SingleToInt32Bits(f));

    public static ushort F32BitsToF16(uint bits)
    {
        uint sign = (bits >> 16) & 0x8000u;
        uint a = bits & 0x7FFF_FFFFu;
        if (a > 0x7F80_0000u) return (ushort)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));   // NaN
        if (a >= 0x4780_0000u) return (ushort)(sign | 0x7C00u);                          // ≥ 65536 or Inf
        if (a < 0x3880_0000u)
        {
            // Result is subnormal or zero: align the mantissa to 2^-24 units, then round half to even.
            if (a < 0x3300_0000u) return (ushort)sign;                                    // < 2^-25: rounds to 0
            uint e = a >> 23;
            uint m = (a & 0x7FFFFFu) | 0x800000u;
            int shift = (int)(126 - e);            // 14..24 bits to drop (value = m·2^(e-150), unit 2^-24)
            uint q = m >> shift;
            uint rem = m & ((1u << shift) - 1);
            uint half = 1u << (shift - 1);
            if (rem > half || (rem == half && (q & 1) != 0)) q++;
            return (ushort)(sign | q);
        }
        // Normal: rebias 127 → 15 and round the 13 dropped bits half to even; a carry into the
        // exponent is right (and gives Inf at the top).
        uint r = a + 0xC800_0000u + 0xFFFu + ((a >> 13) & 1u);   // 0xC8000000 = -(112 << 23) mod 2^32
        return (ushort)(sign | (r >> 13));
    }

    // ---- host spans (SIMD) ----

    public static void ToF32(ReadOnlySpan<byte> src, DType srcType, Span<float> dst)
    {
        switch (srcType)
        {
            case DType.F32: MemoryMarshal.Cast<byte, float>(src).CopyTo(dst); break;
            case DType.F16: TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, System.Half>(src), dst); break;
            case DType.BF16: Bf16ToF32(MemoryMarshal.Cast<byte, ushort>(src), dst); break;
            default: throw new NotSupportedException($"cast from {srcType} to F32");
        }
    }

    public static void FromF32(ReadOnlySpan<float> src, DType dstType, Span<byte> dst)
    {
        switch (dstType)
        {
            case DType.F32: src.CopyTo(MemoryMarshal.Cast<byte, float>(dst)); break;
            case DType.F16: TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, System.Half>(dst)); break;
            case DType.BF16: F32ToBf16(src, MemoryMarshal.Cast<byte, ushort>(dst)); break;
            default: throw new NotSupportedException($"cast from F32 to {dstType}");
        }
    }

    public static void Bf16ToF32(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        var d = MemoryMarshal.Cast<float, uint>(dst);
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var s = MemoryMarshal.Cast<ushort, Vector<ushort>>(src);
            var o = MemoryMarshal.Cast<uint, Vector<uint>>(d);
            for (int v = 0; v < s.Length; v++)
            {
                Vector.Widen(s[v], out var lo, out var hi);
                o[2 * v] = lo << 16;
                o[2 * v + 1] = hi << 16;
            }
            i = s.Length * Vector<ushort>.Count;
        }
        for (; i < src.Length; i++) d[i] = (uint)src[i] << 16;
    }

    public static void F32ToBf16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        var s = MemoryMarshal.Cast<float, uint>(src);
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var sv = MemoryMarshal.Cast<uint, Vector<uint>>(s);
            var dv = MemoryMarshal.Cast<ushort, Vector<ushort>>(dst);
            var absMask = new Vector<uint>(0x7FFF_FFFFu);
            var inf = new Vector<uint>(0x7F80_0000u);
            for (int v = 0; v + 1 < sv.Length; v += 2)
            {
                dv[v / 2] = Vector.Narrow(RoundBf16(sv[v], absMask, inf), RoundBf16(sv[v + 1], absMask, inf));
            }
            i = sv.Length / 2 * 2 * Vector<uint>.Count;
        }
        for (; i < src.Length; i++) dst[i] = F32BitsToBf16(s[i]);
    }

    static Vector<uint> RoundBf16(Vector<uint> b, Vector<uint> absMask, Vector<uint> inf)
    {
        var rounded = (b + new Vector<uint>(0x7FFFu) + ((b >> 16) & Vector<uint>.One)) >> 16;
        var nan = (b >> 16) | new Vector<uint>(0x0040u);
        return Vector.ConditionalSelect(Vector.GreaterThan(b & absMask, inf), nan, rounded);
    }

    // ---- device kernels: one thread per element, the scalar functions above as the body ----

    static void F16ToF32Kernel(Index1D i, ArrayView<ushort> src, ArrayView<float> dst) =>
        dst[i] = Interop.IntAsFloat(F16ToF32Bits(src[i]));
    static void Bf16ToF32Kernel(Index1D i, ArrayView<ushort> src, ArrayView<float> dst) =>
        dst[i] = Interop.IntAsFloat((uint)src[i] << 16);
    static void F32ToF16Kernel(Index1D i, ArrayView<float> src, ArrayView<ushort> dst) =>
        dst[i] = F32BitsToF16(Interop.FloatAsInt(src[i]));
    static void F32ToBf16Kernel(Index1D i, ArrayView<float> src, ArrayView<ushort> dst) =>
        dst[i] = F32BitsToBf16(Interop.FloatAsInt(src[i]));

    /// <summary>Casts between float dtypes on an ILGPU device; f16 ↔ bf16 goes through f32 in a temporary.</summary>
    internal static void OnDevice(Tensor src, Tensor dst)
    {
        var dev = src.Device;
        long n = src.ElementCount;
        if (n == 0) return;
        switch (src.DType, dst.DType)
        {
            case (DType.F16, DType.F32):
                dev.Kernel<Action<Index1D, ArrayView<ushort>, ArrayView<float>>>(F16ToF32Kernel)((int)n, src.View<ushort>(), dst.View<float>());
                break;
            case (DType.BF16, DType.F32):
                dev.Kernel<Action<Index1D, ArrayView<ushort>, ArrayView<float>>>(Bf16ToF32Kernel)((int)n, src.View<ushort>(), dst.View<float>());
                break;
            case (DType.F32, DType.F16):
                dev.Kernel<Action<Index1D, ArrayView<float>, ArrayView<ushort>>>(F32ToF16Kernel)((int)n, src.View<float>(), dst.View<ushort>());
                break;
            case (DType.F32, DType.BF16):
                dev.Kernel<Action<Index1D, ArrayView<float>, ArrayView<ushort>>>(F32ToBf16Kernel)((int)n, src.View<float>(), dst.View<ushort>());
                break;
            case (DType.F16, DType.BF16) or (DType.BF16, DType.F16):
                using (var tmp = Tensor.Empty(src.Shape, DType.F32, dev))
                {
                    OnDevice(src, tmp);
                    OnDevice(tmp, dst);
                }
                break;
            default:
                throw new NotSupportedException($"cast from {src.DType} to {dst.DType}");
        }
    }
}

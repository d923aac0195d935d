using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Tensors;

[Collection(IlgpuCpuCollection.Name)]
public class CastTests
{
    /// <summary>Exact bf16 reference by arithmetic in f64: the two bf16 neighbours of x, the nearer one,
    /// ties to the even mantissa; past the largest finite value the next step up is 2^128 (Inf).</summary>
    static ushort Bf16Reference(float x)
    {
        if (float.IsNaN(x)) return 0x7FC0;
        uint bits = (uint)BitConverter.SingleToInt32Bits(x);
        uint sign = bits & 0x8000_0000u, mag = bits & 0x7FFF_FFFFu;
        uint lo = mag & 0xFFFF_0000u;
        if (lo == mag) return (ushort)((sign | lo) >> 16);
        uint hi = lo + 0x1_0000u;
        double v = BitConverter.Int32BitsToSingle((int)mag);
        double vlo = BitConverter.Int32BitsToSingle((int)lo);
        double vhi = hi == 0x7F80_0000u ? Math.Pow(2, 128) : BitConverter.Int32BitsToSingle((int)hi);
        double dlo = v - vlo, dhi = vhi - v;
        uint pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo >> 16) & 1) == 0 ? lo : hi;
        return (ushort)((sign | pick) >> 16);
    }

    [Fact]
    public void F16ToF32_matches_System_Half_for_every_f16()
    {
        for (int b = 0; b < 65536; b++)
        {
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)b);
            float got = Casts.F16ToF32((ushort)b);
            if (float.IsNaN(want)) Assert.True(float.IsNaN(got), $"0x{b:X4}");
            else Assert.Equal(BitConverter.SingleToInt32Bits(want), BitConverter.SingleToInt32Bits(got));
        }
    }

    static IEnumerable<float> Edges()
    {
        float[] e = [0f, -0f, 1f, -1f, 65504f, 65519.996f, 65520f, 65536f, float.MaxValue, float.Epsilon,
            6.1035156e-05f, 6.0975552e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f, 1.7881393e-07f,
            float.PositiveInfinity, float.NegativeInfinity, float.NaN, 3.3895314e38f, 3.3961775e38f, 1.00390625f, 1.01171875f];
        foreach (var x in e) { yield return x; yield return -x; }
    }

    [Fact]
    public void F32ToF16_and_Bf16_are_round_to_nearest_even_on_edges()
    {
        foreach (var x in Edges()) CheckOne(x);
    }

    [Property(MaxTest = 20)]
    public void F32ToF16_and_Bf16_are_round_to_nearest_even_on_random_bits(int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < 20000; i++) CheckOne(BitConverter.Int32BitsToSingle(rng.Next() ^ (rng.Next() << 1)));
    }

    static void CheckOne(float x)
    {
        ushort h = Casts.F32ToF16(x);
        Half want = (Half)x;
        if (Half.IsNaN(want)) Assert.True(Half.IsNaN(BitConverter.UInt16BitsToHalf(h)), $"{x}");
        else Assert.Equal(BitConverter.HalfToUInt16Bits(want), h);

        ushort b = Casts.F32ToBf16(x);
        if (float.IsNaN(x))
        {
            Assert.True(float.IsNaN(Casts.Bf16ToF32(b)), $"NaN 0x{BitConverter.SingleToInt32Bits(x):X8} -> 0x{b:X4}");
            Assert.Equal(BitConverter.SingleToInt32Bits(x) < 0, (b & 0x8000) != 0);
        }
        else Assert.Equal(Bf16Reference(x), b);
    }

    [Property(MaxTest = 30)]
    public void Simd_span_casts_equal_the_scalar_ones(PositiveInt len, int seed)
    {
        int n = len.Get % 1000 + 1;        // ragged: rarely a multiple of the vector width
        var rng = new Random(seed);
        var f = new float[n];
        for (int i = 0; i < n; i++)
            f[i] = i % 97 == 3 ? float.NaN : i % 89 == 5 ? float.PositiveInfinity : (float)(rng.NextDouble() * 2 - 1) * MathF.Pow(2, rng.Next(-30, 30));
        var bf = new ushort[n];
        Casts.F32ToBf16(f, bf);
        var back = new float[n];
        Casts.Bf16ToF32(bf, back);
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(Casts.F32ToBf16(f[i]), bf[i]);
            Assert.Equal(BitConverter.SingleToInt32Bits(Casts.Bf16ToF32(bf[i])), BitConverter.SingleToInt32Bits(back[i]));
        }
        var hb = new byte[n * 2];
        Casts.FromF32(f, DType.F16, hb);
        var hf = new float[n];
        Casts.ToF32(hb, DType.F16, hf);
        for (int i = 0; i < n; i++)
        {
            ushort bits = BitConverter.ToUInt16(hb, 2 * i);
            if (float.IsNaN(f[i])) { Assert.True(float.IsNaN(hf[i])); continue; }
            Assert.Equal(Casts.F32ToF16(f[i]), bits);
            Assert.Equal(Casts.F16ToF32(bits), hf[i]);
        }
    }

    public static TheoryData<string> Devices => TestDevices.Names;

    [Theory]
    [MemberData(nameof(Devices))]
    public void Device_casts_equal_the_host_casts(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(1234);
        foreach (int n in new[] { 1, 7, 31, 33, 1000, 4099 })
        {
            var f = new float[n];
            for (int i = 0; i < n; i++) f[i] = i % 101 == 7 ? float.NaN : (float)(rng.NextDouble() * 4 - 2) * MathF.Pow(2, rng.Next(-27, 18));
            using var src = Tensor.From(f, [n], dev);
            foreach (var dt in new[] { DType.F16, DType.BF16 })
            {
                using var narrow = src.Cast(dt);
                var want = new byte[n * 2];
                Casts.FromF32(f, dt, want);
                Assert.Equal(want, narrow.ToArray<byte>());
                using var wide = narrow.Cast(DType.F32);
                var wantF = new float[n];
                Casts.ToF32(want, dt, wantF);
                Assert.Equal(wantF, wide.ToArray<float>());
            }
            using var h = src.Cast(DType.F16);
            using var b = h.Cast(DType.BF16);
            var hostB = Tensor.From(h.ToArray<ushort>(), [n], Device.Cpu, DType.F16).Cast(DType.BF16);
            Assert.Equal(hostB.ToArray<ushort>(), b.ToArray<ushort>());
        }
    }
}

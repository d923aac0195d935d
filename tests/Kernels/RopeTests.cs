using BitDeltaNative.Kernels;

namespace BitDeltaNative.Tests.Kernels;

public class RopeTests
{
    [Fact]
    public void Default_inv_freq_by_hand()
    {
        // d = 8, θ = 10⁴: 1/θ^(2i/d) = 1/10^i, and 10⁴^(i/4) is exact in f32, so each entry is f32(1/10^i).
        Assert.Equal([1f, 0.1f, 0.01f, 0.001f], RopeTable.InverseFrequencies(8, 10_000, null));
    }

    [Fact]
    public void Llama3_inv_freq_by_hand_covers_the_three_bands()
    {
        // d = 8, θ = 10⁴, factor 8, low 1, high 4, original 1000: the low-frequency wavelength limit is
        // 1000/1 = 1000 and the high-frequency one 1000/4 = 250. Wavelengths 2π·10^i are 6.28 and 62.8
        // (below 250: kept), 628 (between: smoothed) and 6283 (above 1000: divided by 8).
        var inv = RopeTable.InverseFrequencies(8, 10_000, new Llama3RopeScaling(8, 1, 4, 1000));
        Assert.Equal(1f, inv[0]);
        Assert.Equal(0.1f, inv[1]);
        Assert.Equal(0.001f / 8, inv[3]);
        // smooth = (1000 / (2π/0.01) − 1) / (4 − 1) = (10/(2π) − 1)/3; inv = 0.01·((1 − smooth)/8 + smooth).
        double smooth = (10 / (2 * Math.PI) - 1) / 3;
        double want = 0.01 * ((1 - smooth) / 8 + smooth);
        Assert.Equal(0.0029753525068469477, want, 1e-15);
        Assert.True(Math.Abs(inv[2] - want) / want < 1e-6, $"{inv[2]} vs {want}");
        // torch 1.13 (CPU, f32) evaluating _compute_llama3_parameters' expressions gives these bits.
        Assert.Equal(0x3B42FE21u, BitConverter.SingleToUInt32Bits(inv[2]));
        Assert.Equal(0x3903126Fu, BitConverter.SingleToUInt32Bits(inv[3]));
    }

    [Fact]
    public void Llama31_8b_bands()
    {
        // Llama-3.1-8B: d = 128, θ = 5·10⁵, rope_scaling {factor 8, low 1, high 4, original 8192}.
        // Kept while 2π/inv < 2048, i.e. 5·10⁵^(i/64) < 2048/2π ⇔ i < 64·ln(325.95)/ln(5·10⁵) = 28.2;
        // divided by 8 once 2π/inv > 8192 ⇔ i > 64·ln(1303.8)/ln(5·10⁵) = 34.98; smoothed between.
        var plain = RopeTable.InverseFrequencies(128, 500_000, null);
        var inv = RopeTable.InverseFrequencies(128, 500_000, new Llama3RopeScaling(8, 1, 4, 8192));
        for (int i = 0; i <= 28; i++) Assert.Equal(plain[i], inv[i]);
        for (int i = 29; i <= 34; i++) Assert.True(inv[i] > plain[i] / 8 && inv[i] < plain[i], $"i = {i}: {inv[i]} of {plain[i]}");
        for (int i = 35; i < 64; i++) Assert.Equal(plain[i] / 8, inv[i]);
    }

    [Fact]
    public void Table_holds_cos_and_sin_of_the_f32_angle()
    {
        using var t = RopeTable.Create(64, 10_000, null, 5000, Device.Cpu);
        var cos = t.Cos.ToFloatArray();
        var sin = t.Sin.ToFloatArray();
        for (int i = 0; i < 32; i++)
        {
            Assert.Equal(1f, cos[i]);
            Assert.Equal(0f, sin[i]);
        }
        foreach (int p in new[] { 1, 7, 4095, 4999 })
            for (int i = 0; i < 32; i++)
            {
                double angle = (float)p * t.InvFreq[i];
                Assert.Equal((float)Math.Cos(angle), cos[p * 32 + i]);
                Assert.Equal((float)Math.Sin(angle), sin[p * 32 + i]);
            }
    }

    [Fact]
    public void Rotation_depends_only_on_the_relative_position()
    {
        // RoPE's point (Su et al. 2021, §3.4.2): ⟨rope(q, m), rope(k, n)⟩ is a function of m − n.
        const int d = 16;
        using var table = RopeTable.Create(d, 10_000, null, 64, Device.Cpu);
        var rng = new Random(3);
        var q = Check.Values(rng, d);
        var k = Check.Values(rng, d);
        double Dot(int m, int n)
        {
            using var tq = Tensor.From((float[])q.Clone(), [1, 1, d]);
            using var tk = Tensor.From((float[])k.Clone(), [1, 1, d]);
            Rope.Run(tq, Tensor.From(new[] { m }, [1]), table);
            Rope.Run(tk, Tensor.From(new[] { n }, [1]), table);
            return tq.ToFloatArray().Zip(tk.ToFloatArray(), (a, b) => (double)a * b).Sum();
        }
        Assert.Equal(Dot(5, 2), Dot(40, 37), 1e-4);
        Assert.Equal(Dot(0, 9), Dot(30, 39), 1e-4);
    }

    [Fact]
    public void Position_outside_the_table_throws_on_the_host_and_is_nan_on_a_device()
    {
        const int d = 8, heads = 3;
        using var hostTable = RopeTable.Create(d, 10_000, null, 16, Device.Cpu);
        using var hx = Tensor.From(new float[2 * heads * d], [2, heads, d]);
        Assert.Throws<ArgumentException>(() => Rope.Run(hx, Tensor.From(new[] { 3, 16 }, [2]), hostTable));

        var dev = Device.IlgpuCpu();
        using var table = RopeTable.Create(d, 10_000, null, 16, dev);
        var x = Check.Values(new Random(1), 2 * heads * d);
        using var tx = Tensor.From(x, [2, heads, d], dev);
        using var tp = Tensor.From(new[] { 3, -1 }, [2], dev);
        Rope.Run(tx, tp, table);
        var got = tx.ToFloatArray();
        Assert.All(got[..(heads * d)], v => Assert.True(float.IsFinite(v)));
        Assert.All(got[(heads * d)..], v => Assert.True(float.IsNaN(v)));
    }

    [Fact]
    public void Bad_shapes_are_refused()
    {
        using var table = RopeTable.Create(8, 10_000, null, 4, Device.Cpu);
        using var pos = Tensor.From(new[] { 0, 1 }, [2]);
        Assert.Throws<ArgumentException>(() => Rope.Run(Tensor.From(new float[2 * 3 * 6], [2, 3, 6]), pos, table));
        Assert.Throws<ArgumentException>(() => RopeTable.InverseFrequencies(7, 10_000, null));
    }
}

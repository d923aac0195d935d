using BitDeltaNative.Kernels;

namespace BitDeltaNative.Tests.Kernels;

public class SamplingTests
{
    [Fact]
    public void Uniforms_are_a_function_of_seed_step_and_row()
    {
        var a = Sampling.Uniforms(42, 7, 1000);
        Assert.Equal(a, Sampling.Uniforms(42, 7, 1000));
        Assert.Equal(a[..10], Sampling.Uniforms(42, 7, 10));    // a row's draw does not depend on the batch size
        Assert.NotEqual(a, Sampling.Uniforms(42, 8, 1000));
        Assert.NotEqual(a, Sampling.Uniforms(43, 7, 1000));
        Assert.All(a, u => Assert.InRange(u, 0f, Math.BitDecrement(1f)));
        // Mean of n uniforms: 0.5 ± 5σ, σ = sqrt(1/12/n).
        var many = Sampling.Uniforms(1, 0, 200_000);
        Assert.InRange(many.Average(u => (double)u), 0.5 - 5 * Math.Sqrt(1.0 / 12 / many.Length), 0.5 + 5 * Math.Sqrt(1.0 / 12 / many.Length));
        Assert.True(many.Distinct().Count() > 190_000);
    }

    [Fact]
    public void Exp_in_f64_rounds_like_math_exp()
    {
        // The kernel's exp must give the twin's f32 probabilities: it may differ from (float)Math.Exp only
        // where e^x lies within f64 rounding of an f32 rounding boundary (~1e-8 of draws).
        var rng = new Random(5);
        int differ = 0;
        for (int i = 0; i < 1_000_000; i++)
        {
            double x = -112 * rng.NextDouble();
            float got = Sampling.ExpToFloat(x), want = (float)Math.Exp(x);
            if (got != want)
            {
                differ++;
                Assert.True(Math.Abs(BitConverter.SingleToInt32Bits(got) - BitConverter.SingleToInt32Bits(want)) <= 1, $"e^{x}: {got} vs {want}");
            }
        }
        Assert.True(differ <= 2, $"{differ} of 10⁶ differ");
        Assert.Equal(1f, Sampling.ExpToFloat(0));
    }

    static int[] Sample(Device dev, float[] logits, int rows, int vocab, float t, int k, float p, float[] u)
    {
        using var tx = Tensor.From(logits, [rows, vocab], dev);
        using var tu = Tensor.From(u, [rows], dev);
        using var tk = Tensor.Empty([rows], DType.I32, dev);
        tk.Fill(Check.Poison);
        Sampling.Run(tx, t, k, p, tu, tk);
        return tk.ToArray<int>();
    }

    [Theory]
    [InlineData(0.7f, 50, 0.9f)]
    [InlineData(1.0f, 0, 0.95f)]
    [InlineData(1.3f, 0, 1f)]
    [InlineData(0.6f, 2000, 1f)]
    public void Kernel_matches_twin_on_a_llama_sized_vocabulary(float t, int k, float p)
    {
        const int rows = 2, vocab = 32_000;
        var rng = new Random(11);
        var x = new float[rows * vocab];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(3 * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        var u = Sampling.Uniforms(9, 3, rows);
        var want = new int[rows];
        Sampling.Twin(x, rows, vocab, t, k, p, u, want);
        Assert.Equal(want, Sample(Device.IlgpuCpu(), x, rows, vocab, t, k, p, u));
    }

    static readonly float[] SmallLogits = [1.5f, -0.25f, 0.75f, 2.25f, -1.5f, 0.5f, 1.0f];

    /// <summary>The warped, renormalised distribution of <see cref="SmallLogits"/>, by hand in f64:
    /// z = x/T; top-k keeps the k largest z; top-p walks down by probability and keeps a token while the
    /// mass before it is &lt; p.</summary>
    static double[] Warped(float t, int k, float p)
    {
        var x = SmallLogits;
        int vocab = x.Length;
        var z = x.Select(v => (double)(v / t)).ToArray();
        var rank = Enumerable.Range(0, vocab).OrderByDescending(i => z[i]).ToArray();
        var keep = new bool[vocab];
        for (int r = 0; r < (k == 0 ? vocab : k); r++) keep[rank[r]] = true;
        double zmax = z.Max();
        var w = z.Select((v, i) => keep[i] ? Math.Exp(v - zmax) : 0).ToArray();
        double mass = w.Sum(), before = 0;
        foreach (var i in rank.Where(i => keep[i]))
        {
            keep[i] = before < p * mass;
            before += w[i];
        }
        double kept = Enumerable.Range(0, vocab).Where(i => keep[i]).Sum(i => w[i]);
        return Enumerable.Range(0, vocab).Select(i => keep[i] ? w[i] / kept : 0).ToArray();
    }

    static int[] Counts(Device dev, float t, int k, float p, float[] u)
    {
        int n = u.Length, vocab = SmallLogits.Length;
        var x = new float[n * vocab];
        for (int r = 0; r < n; r++) SmallLogits.CopyTo(x, r * vocab);
        var count = new int[vocab];
        foreach (var tok in Sample(dev, x, n, vocab, t, k, p, u)) count[tok]++;
        return count;
    }

    /// <summary>The spec (the twin, which the kernel equals token for token) with the seeded generator:
    /// over n draws the count c_j of token j is Binomial(n, p_j), so |c_j − n·p_j| ≤ 5σ,
    /// σ = sqrt(n·p_j·(1 − p_j)), fails a correct sampler with probability below 6·10⁻⁷ per token.
    /// Tokens the warpers remove are never drawn.</summary>
    [Theory]
    [InlineData(1.0f, 0, 1f)]
    [InlineData(0.8f, 5, 1f)]
    [InlineData(1.5f, 0, 0.9f)]
    [InlineData(0.8f, 5, 0.75f)]
    public void Frequencies_over_seeded_draws_match_the_renormalised_distribution(float t, int k, float p)
    {
        const int n = 200_000;
        var want = Warped(t, k, p);
        var count = Counts(Device.Cpu, t, k, p, Sampling.Uniforms(2024, 1, n));
        for (int j = 0; j < want.Length; j++)
        {
            if (want[j] == 0) { Assert.Equal(0, count[j]); continue; }
            double sigma = Math.Sqrt(n * want[j] * (1 - want[j]));
            Assert.True(Math.Abs(count[j] - n * want[j]) <= 5 * sigma, $"token {j}: {count[j]} of {n}, expected {n * want[j]:F0} ± {sigma:F0}");
        }
    }

    /// <summary>The kernel itself, with stratified uniforms u_j = (j + ½)/n: inverse-CDF sampling then
    /// draws token i for the grid points inside its interval of the cumulative distribution, of length
    /// p_i, which holds ⌊n·p_i⌋ or ⌈n·p_i⌉ of them; so |c_i − n·p_i| &lt; 1, or &lt; 2 if a grid point lies
    /// within rounding of an interval's end. Few draws suffice (the CPU accelerator is slow).</summary>
    [Theory]
    [InlineData(1.5f, 0, 0.9f)]
    [InlineData(0.8f, 5, 0.75f)]
    public void Kernel_frequencies_over_a_uniform_grid_match_the_renormalised_distribution(float t, int k, float p)
    {
        const int n = 100;
        var want = Warped(t, k, p);
        var u = Enumerable.Range(0, n).Select(j => (j + 0.5f) / n).ToArray();
        var count = Counts(Device.IlgpuCpu(), t, k, p, u);
        for (int j = 0; j < want.Length; j++)
            Assert.True(Math.Abs(count[j] - n * want[j]) < (want[j] == 0 ? 0.5 : 2), $"token {j}: {count[j]} of {n}, expected {n * want[j]:F2}");
    }

    [Fact]
    public void Greedy_and_degenerate_settings_give_the_argmax()
    {
        var rng = new Random(4);
        const int rows = 3, vocab = 257;
        var x = Check.Values(rng, rows * vocab, 5f);
        var u = Sampling.Uniforms(1, 1, rows);
        var argmax = new int[rows];
        Argmax.Twin(x, argmax, rows, vocab);
        var dev = Device.IlgpuCpu();
        Assert.Equal(argmax, Sample(dev, x, rows, vocab, 0f, 0, 1f, u));
        Assert.Equal(argmax, Sample(dev, x, rows, vocab, 0.9f, 1, 1f, u));     // top-k 1
        Assert.Equal(argmax, Sample(dev, x, rows, vocab, 0.9f, 0, 0f, u));     // top-p 0 keeps the most probable
        Assert.Equal(argmax, Sample(Device.Cpu, x, rows, vocab, 0.9f, 0, 0f, u));
    }

    [Fact]
    public void Bad_arguments_are_refused()
    {
        using var x = Tensor.From(new float[6], [2, 3]);
        using var u = Tensor.From(new float[2], [2]);
        using var tok = Tensor.Empty([2], DType.I32, Device.Cpu);
        Assert.Throws<ArgumentException>(() => Sampling.Run(x, -1f, 0, 1f, u, tok));
        Assert.Throws<ArgumentException>(() => Sampling.Run(x, 1f, -1, 1f, u, tok));
        Assert.Throws<ArgumentException>(() => Sampling.Run(x, 1f, 0, 1.5f, u, tok));
        Assert.Throws<ArgumentException>(() => Sampling.Run(x, 1f, 0, float.NaN, u, tok));
    }
}

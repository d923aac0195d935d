using BitDeltaNative.Autograd;
using BitDeltaNative.Kernels;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Autograd;

public class TapeTests
{
    [Fact]
    public void Backward_runs_the_steps_last_to_first_and_clears()
    {
        var tape = new Tape();
        var order = new List<int>();
        for (int i = 0; i < 3; i++)
        {
            int k = i;
            tape.Record(() => order.Add(k));
        }
        tape.Backward();
        Assert.Equal([2, 1, 0], order);
        Assert.Empty(tape.Steps);
    }

    /// <summary>
    /// x → linear (frozen W₁) → RMSNorm (frozen w) → BitDelta linear (W₂ + α·S) → MSE against a teacher, run with
    /// the float kernel twins and taped; dα from the tape against central differences (h = 1e-6) of the whole chain
    /// in f64, and dx likewise. The taped forward keeps f32 activations, where the f64 chain does not, so the bound is 1e-5 rather
    /// than the single ops' 1e-6.
    /// </summary>
    [Property(MaxTest = 100)]
    public void Chain_linear_rmsnorm_bitlinear_mse_dscale_and_dx_match_finite_differences(int seed)
    {
        var rng = new Random(seed);
        // d0 ≥ 2: with one input feature each row of h1 is x_r times a fixed vector, which RMSNorm scales away, so dx is
        // only the eps term (~1e-5 of J), below what central differences resolve.
        int rows = rng.Next(1, 6), d0 = rng.Next(2, 10), d1 = rng.Next(2, 10), d2 = rng.Next(1, 40);
        const float eps = 1e-5f;
        var x = Check.Values(rng, rows * d0);
        var w1 = Check.Values(rng, d1 * d0);
        var norm = Check.Values(rng, d1);
        var w2 = Check.Values(rng, d2 * d1, 0.3f);
        int words = DTypes.SignWordsPerRow(d1);
        var signs = new uint[d2 * words];
        for (int i = 0; i < signs.Length; i++) signs[i] = (uint)rng.NextInt64(0, 1L << 32);
        float scale = Check.Value(rng, 0.2f);
        var teacher = Check.Values(rng, rows * d2, 2f);

        // Forward, taped.
        var tape = new Tape();
        var h1 = new float[rows * d1];
        MatMul.Twin(x, w1, h1, rows, d0, d1);
        var dh1 = new float[h1.Length];
        var dx = new float[x.Length];
        tape.Record(() => LinearGrad.Twin(dh1, w1, dx, rows, d0, d1));
        var h2 = new float[h1.Length];
        RmsNorm.Twin(h1, norm, h2, rows, d1, eps);
        var dh2 = new float[h2.Length];
        tape.Record(() => RmsNormGrad.Twin(h1, norm, dh2, dh1, rows, d1, eps));
        var y = new float[rows * d2];
        MatMul.Twin(h2, w2, y, rows, d1, d2);
        BitLinear.Twin(h2, signs, scale, y, rows, d1, d2);
        var dy = new float[y.Length];
        float dScale = 0;
        tape.Record(() => dScale = BitLinearGrad.Twin(h2, w2, signs, scale, dy, dh2, rows, d1, d2));
        float loss = LossGrad.Mse(y, teacher, dy);   // the last op: its gradient is the seed of the backward pass
        tape.Backward();

        // The chain in f64.
        var xd = Array.ConvertAll(x, v => (double)v);
        double F(double a)
        {
            var g1 = new double[rows * d1];
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < d1; o++)
                    for (int i = 0; i < d0; i++) g1[r * d1 + o] += xd[r * d0 + i] * w1[o * d0 + i];
            for (int r = 0; r < rows; r++)
            {
                double ss = 0;
                for (int i = 0; i < d1; i++) ss += g1[r * d1 + i] * g1[r * d1 + i];
                double rho = 1 / Math.Sqrt(ss / d1 + eps);
                for (int i = 0; i < d1; i++) g1[r * d1 + i] *= rho * norm[i];
            }
            double sum = 0;
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < d2; o++)
                {
                    double v = 0;
                    for (int i = 0; i < d1; i++) v += g1[r * d1 + i] * (w2[o * d1 + i] + a * BitLinear.Sign(signs, words, o, i));
                    double e = v - teacher[r * d2 + o];
                    sum += e * e;
                }
            return sum / (rows * d2);
        }
        Assert.True(Math.Abs(loss - F(scale)) <= 1e-5 * F(scale), $"loss {loss} vs {F(scale)}");
        const double h = 1e-6;
        double want = (F(scale + h) - F(scale - h)) / (2 * h);
        Assert.True(Math.Abs(dScale - want) <= 1e-5 * Math.Abs(want) + 1e-9, $"dα {dScale:R} vs {want:R}");
        // And dx, the gradient that went back through every rule on the tape.
        double num = 0, den = 0;
        for (int i = 0; i < xd.Length; i++)
        {
            double keep = xd[i];
            xd[i] = keep + h;
            double plus = F(scale);
            xd[i] = keep - h;
            double minus = F(scale);
            xd[i] = keep;
            double g = (plus - minus) / (2 * h);
            num += (dx[i] - g) * (dx[i] - g);
            den += g * g;
        }
        Assert.True(Math.Sqrt(num) <= 1e-5 * Math.Sqrt(den) + 1e-9, $"dx relative error {Math.Sqrt(num / den):G3} rows {rows} d0 {d0} d1 {d1} d2 {d2}");
    }
}

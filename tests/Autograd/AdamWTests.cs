using BitDeltaNative.Autograd;

namespace BitDeltaNative.Tests.Autograd;

public class AdamWTests
{
    /// <summary>
    /// Two steps worked by hand from torch.optim.AdamW's documented update, lr 0.1, weight_decay 0.1,
    /// betas (0.9, 0.999), eps 1e-8; bias corrections 1 − 0.9ᵗ = 0.1, 0.19 and 1 − 0.999ᵗ = 0.001, 0.001999.
    /// <code>
    /// p₀ = 1, g = 0.5 then −0.25:
    ///   step 1: p = 1·(1 − 0.1·0.1) = 0.99; m = 0.1·0.5 = 0.05; v = 0.001·0.25 = 0.00025
    ///           m̂ = 0.05/0.1 = 0.5; √v̂ = √(0.00025/0.001) = 0.5; p = 0.99 − 0.1·0.5/(0.5 + 1e-8) = 0.890000002
    ///   step 2: p = 0.890000002·0.99 = 0.88110000198; m = 0.9·0.05 + 0.1·(−0.25) = 0.02;
    ///           v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225; m̂ = 0.02/0.19 = 0.10526315789;
    ///           √v̂ = √(0.00031225/0.001999) = 0.39522538070; p = 0.88110000198 − 0.1·0.10526315789/0.39522539070
    ///           = 0.85446629869
    /// p₁ = −0.5, g = 0 (weight decay alone; 0/(0 + eps) is 0): −0.5·0.99 = −0.495, then −0.49005
    /// p₂ = 0, g = 1e-6 twice (eps added to √v̂, not inside the root: m̂ = √v̂ = 1e-6 both steps):
    ///   step 1: 0 − 0.1·1e-6/(1e-6 + 1e-8) = −0.1/1.01 = −0.0990099010
    ///   step 2: −0.0990099010·0.99 − 0.0990099010 = −0.1970297030
    /// </code>
    /// </summary>
    [Fact]
    public void Two_steps_by_hand()
    {
        var p = new float[] { 1f, -0.5f, 0f };
        var opt = new AdamW(3) { WeightDecay = 0.1 };
        opt.Step(p, [0.5f, 0f, 1e-6f], 0.1);
        Assert.Equal(1, opt.Steps);
        Near(0.890000002, p[0]);
        Near(-0.495, p[1]);
        Near(-0.0990099010, p[2]);
        Near(0.05, opt.M[0]);
        Near(0.00025, opt.V[0]);
        opt.Step(p, [-0.25f, 0f, 1e-6f], 0.1);
        Near(0.85446629869, p[0]);
        Near(-0.49005, p[1]);
        Near(-0.1970297030, p[2]);
        Near(0.02, opt.M[0]);
        Near(0.00031225, opt.V[0]);
    }

    static void Near(double want, float got) =>
        Assert.True(Math.Abs(got - want) <= 1e-6 * Math.Abs(want), $"{got:R} vs {want:R}");

    [Fact]
    public void Defaults_are_torch_defaults()
    {
        var opt = new AdamW(1);
        Assert.Equal((0.9, 0.999, 1e-8, 1e-2), (opt.Beta1, opt.Beta2, opt.Eps, opt.WeightDecay));
    }

    [Fact]
    public void Cosine_schedule_at_start_middle_and_end()
    {
        // CosineAnnealingLR(T_max = 100, eta_min = 0): base·½(1 + cos(π·t/100)).
        Assert.Equal(1e-3, LrSchedule.Cosine(1e-3, 0, 100), 1e-15);
        Assert.Equal(0.5e-3, LrSchedule.Cosine(1e-3, 50, 100), 1e-15);
        Assert.Equal(1e-3 * 0.5 * (1 + Math.Cos(Math.PI * 0.25)), LrSchedule.Cosine(1e-3, 25, 100), 1e-15);
        Assert.Equal(1e-3 * 0.5 * (1 + Math.Cos(Math.PI * 0.99)), LrSchedule.Cosine(1e-3, 99, 100), 1e-15);
        Assert.Equal(0, LrSchedule.Cosine(1e-3, 100, 100));
        Assert.Equal(0, LrSchedule.Cosine(1e-3, 150, 100));
        // With 10 warmup steps (transformers' get_cosine_schedule_with_warmup): 0, linear up, base at 10,
        // half at 10 + 90/2 = 55, 0 at 100.
        Assert.Equal(0, LrSchedule.Cosine(1e-3, 0, 100, 10));
        Assert.Equal(0.5e-3, LrSchedule.Cosine(1e-3, 5, 100, 10), 1e-15);
        Assert.Equal(1e-3, LrSchedule.Cosine(1e-3, 10, 100, 10), 1e-15);
        Assert.Equal(0.5e-3, LrSchedule.Cosine(1e-3, 55, 100, 10), 1e-15);
        Assert.Equal(0, LrSchedule.Cosine(1e-3, 100, 100, 10));
        Assert.Throws<ArgumentException>(() => LrSchedule.Cosine(1e-3, 0, 0));
    }
}

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of SwiGLU h = silu(g)·u (forward: <see cref="Kernels.SwiGlu"/>; Shazeer 2020, arXiv 2002.05202), with
/// silu(g) = g·σ(g) and silu′(g) = σ(g) + g·σ(g)·(1 − σ(g)) = σ(g)·(1 + g·(1 − σ(g))):
/// dg = dh·u·silu′(g), du = dh·silu(g).
/// </summary>
public static class SwiGluGrad
{
    /// <summary>The spec, elementwise in f64.</summary>
    public static void Twin(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, ReadOnlySpan<float> dh, Span<float> dGate, Span<float> dUp)
    {
        for (int i = 0; i < dh.Length; i++)
        {
            double g = gate[i], sig = 1 / (1 + Math.Exp(-g));
            dGate[i] = (float)(dh[i] * (double)up[i] * sig * (1 + g * (1 - sig)));
            dUp[i] = (float)(dh[i] * g * sig);
        }
    }
}

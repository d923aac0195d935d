namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of rotary embeddings (forward: <see cref="Kernels.Rope"/>, Hugging Face's rotate_half layout).
/// Each pair (a, b) = (x_i, x_{i+d/2}) is rotated by the angle θ = p·inv_freq[i]:
/// (a, b) ↦ (a·c − b·s, b·c + a·s), an orthogonal map R(θ). Its Jacobian is R(θ) itself, so dx = R(θ)ᵀ·dy = R(−θ)·dy:
/// dx_i = dy_i·c + dy_{i+d/2}·s, dx_{i+d/2} = dy_{i+d/2}·c − dy_i·s, the inverse rotation of dy.
/// </summary>
public static class RopeGrad
{
    /// <summary>The spec, in place on <paramref name="dy"/> (which becomes dx), with the same [T, heads, headDim]
    /// layout, positions and cos/sin tables [maxPositions, headDim/2] as <see cref="Kernels.Rope.Twin"/>.</summary>
    public static void Twin(Span<float> dy, ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, int heads, int headDim)
    {
        int half = headDim / 2;
        for (int t = 0; t < positions.Length; t++)
        {
            int p = positions[t];
            for (int h = 0; h < heads; h++)
            {
                var v = dy.Slice((t * heads + h) * headDim, headDim);
                for (int i = 0; i < half; i++)
                {
                    double c = cos[p * half + i], s = sin[p * half + i];
                    double a = v[i], b = v[i + half];
                    v[i] = (float)(a * c + b * s);
                    v[i + half] = (float)(b * c - a * s);
                }
            }
        }
    }
}

using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

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

    /// <summary>One thread per rotated pair, as the forward kernel (<see cref="Rope"/>), turning the other way. A
    /// position outside the table makes that token's dy NaN, as in the forward.</summary>
    static void Kernel(Index1D idx, ArrayView<float> dy, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin,
                       int heads, int half, int maxPositions)
    {
        int i = idx % half;
        int row = idx / half;                  // token·heads + head
        long b = (long)row * 2 * half + i;
        int p = positions[row / heads];
        if ((uint)p >= (uint)maxPositions)
        {
            dy[b] = float.NaN;
            dy[b + half] = float.NaN;
            return;
        }
        long e = (long)p * half + i;
        float c = cos[e], s = sin[e];
        float a = dy[b], bb = dy[b + half];
        dy[b] = a * c + bb * s;
        dy[b + half] = bb * c - a * s;
    }

    /// <summary>In place: dy f32 [N, heads, headDim] (or [N, heads·headDim]) becomes dx; positions I32 [N] and the
    /// table are the forward's.</summary>
    public static void Run(Tensor dy, Tensor positions, RopeTable table)
    {
        int heads = Rope.Heads("rope backward", dy, positions, table), d = table.HeadDim;
        if (dy.ElementCount == 0) return;
        if (!dy.Device.IsIlgpu)
        {
            Twin(dy.Host<float>(), Rope.HostPositions("rope backward", positions, table), table.Cos.Host<float>(), table.Sin.Host<float>(), heads, d);
            return;
        }
        dy.Device.Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>>(Kernel)(
            (int)(dy.ElementCount / 2), dy.View<float>(), positions.View<int>(), table.Cos.View<float>(), table.Sin.View<float>(),
            heads, d / 2, table.MaxPositions);
    }
}

using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Llama 3.1's "llama3" rope_scaling (Hugging Face config.json: rope_scaling.factor, low_freq_factor,
/// high_freq_factor, original_max_position_embeddings; e.g. 8, 1, 4, 8192 for Llama-3.1-8B).
/// </summary>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>
/// The cos and sin tables of rotary embeddings (Su et al. 2021, arXiv 2104.09864), built on the host the
/// way Hugging Face builds them and kept on the device: <see cref="Cos"/> and <see cref="Sin"/> are f32
/// [maxPositions, headDim/2], entry [p, i] = cos/sin((float)p · invFreq[i]).
/// <para>Why a table: the angle reaches maxPositions radians (10⁵ and more), where fast GPU sin/cos
/// (sin.approx) lose all accuracy and argument reduction in f32 is costly; a table lookup is exact and one
/// coalesced load.</para>
/// <para>Matching Hugging Face transformers (modeling_rope_utils.py, models/llama/modeling_llama.py):
/// inv_freq is computed in f32 step by step as torch does it; the angle is the single f32 product
/// (float)pos · inv_freq (LlamaRotaryEmbedding.forward forms it as a K=1 matmul in f32 with autocast
/// off); cos/sin are evaluated in f64 and rounded to f32, i.e. the correctly rounded value of what torch's
/// f32 cos/sin approximate to within an ulp. Two known differences: torch's f32 pow (Sleef on CPU, ≤ 1
/// ulp) can differ from our correctly rounded pow in the last bit of an inv_freq; and HF casts cos/sin to
/// the model dtype (f16/bf16) before the multiply, where this table stays f32 (activations are f32 here).
/// The "default" attention_scaling of 1 applies to both rope types supported.</para>
/// </summary>
public sealed class RopeTable : IDisposable
{
    public int HeadDim { get; }
    public int MaxPositions { get; }
    /// <summary>inv_freq[i], i &lt; headDim/2, exactly as the f32 tensor Hugging Face computes.</summary>
    public IReadOnlyList<float> InvFreq { get; }
    /// <summary>f32 [MaxPositions, HeadDim/2] on the table's device.</summary>
    public Tensor Cos { get; }
    public Tensor Sin { get; }
    public Device Device => Cos.Device;

    RopeTable(int headDim, int maxPositions, float[] invFreq, Tensor cos, Tensor sin)
    {
        HeadDim = headDim;
        MaxPositions = maxPositions;
        InvFreq = invFreq;
        Cos = cos;
        Sin = sin;
    }

    public static RopeTable Create(int headDim, double theta, Llama3RopeScaling? scaling, int maxPositions, Device dev)
    {
        if (maxPositions < 1) throw new ArgumentException($"rope: maxPositions must be at least 1, got {maxPositions}");
        var inv = InverseFrequencies(headDim, theta, scaling);
        var (cos, sin) = Tables(inv, maxPositions);
        int half = headDim / 2;
        var tc = Tensor.From(cos, [maxPositions, half], dev);
        try { return new RopeTable(headDim, maxPositions, inv, tc, Tensor.From(sin, [maxPositions, half], dev)); }
        catch { tc.Dispose(); throw; }
    }

    /// <summary>
    /// inv_freq as Hugging Face computes it, each step an f32 operation as in torch:
    /// default (_compute_default_rope_parameters): 1 / theta^(f32(2i) / d), where torch evaluates
    /// <c>1.0 / t</c> as <c>t.reciprocal() * 1.0</c> (torch/_tensor.py __rtruediv__);
    /// llama3 (_compute_llama3_parameters): wavelen = 2π / inv_freq; wavelengths above
    /// original_max / low_freq_factor are divided by factor, those below original_max / high_freq_factor
    /// kept, and the band between interpolated with smooth = (original_max / wavelen − low) / (high − low):
    /// (1 − smooth)·inv/factor + smooth·inv. Python scalars meet f32 tensors as f32 (torch's type promotion).
    /// Scalar divisors are divided as on torch's CPU (true division); torch on CUDA multiplies by the
    /// reciprocal instead, which can change the last bit in the interpolated band.
    /// </summary>
    public static float[] InverseFrequencies(int headDim, double theta, Llama3RopeScaling? scaling)
    {
        if (headDim < 2 || headDim % 2 != 0) throw new ArgumentException($"rope: head dim must be even and positive, got {headDim}");
        if (!(theta > 0) || double.IsInfinity(theta)) throw new ArgumentException($"rope: theta must be positive, got {theta}");
        int half = headDim / 2;
        float baseF = (float)theta, dimF = headDim;
        var inv = new float[half];
        for (int i = 0; i < half; i++)
        {
            float exponent = (float)(2 * i) / dimF;
            // torch's pow(f32, f32): we take the correctly rounded result (the f64 pow of two f32 values, rounded).
            float pow = (float)Math.Pow(baseF, exponent);
            inv[i] = 1f / pow;
        }
        if (scaling == null) return inv;

        var s = scaling;
        if (!(s.Factor > 0) || !(s.HighFreqFactor > s.LowFreqFactor) || !(s.LowFreqFactor > 0) || s.OriginalMaxPositionEmbeddings < 1)
            throw new ArgumentException($"rope: invalid llama3 rope_scaling {s}");
        float factor = (float)s.Factor, low = (float)s.LowFreqFactor, old = s.OriginalMaxPositionEmbeddings;
        float lowWavelen = (float)(s.OriginalMaxPositionEmbeddings / s.LowFreqFactor);
        float highWavelen = (float)(s.OriginalMaxPositionEmbeddings / s.HighFreqFactor);
        float span = (float)(s.HighFreqFactor - s.LowFreqFactor);
        float twoPi = (float)(2 * Math.PI);
        for (int i = 0; i < half; i++)
        {
            float f = inv[i];
            float wavelen = 1f / f * twoPi;
            float scaled = wavelen > lowWavelen ? f / factor : f;
            float smooth = (1f / wavelen * old - low) / span;
            float smoothed = (1f - smooth) * scaled / factor + smooth * scaled;
            bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
            inv[i] = medium ? smoothed : scaled;
        }
        return inv;
    }

    /// <summary>cos/sin [maxPositions, invFreq.Length] on the host: angle = f32((float)p · invFreq[i]),
    /// evaluated in f64 and rounded to f32.</summary>
    public static (float[] Cos, float[] Sin) Tables(IReadOnlyList<float> invFreq, int maxPositions)
    {
        int half = invFreq.Count;
        var cos = new float[(long)maxPositions * half];
        var sin = new float[cos.Length];
        Parallel.For(0, maxPositions, p =>
        {
            for (int i = 0; i < half; i++)
            {
                float angle = (float)p * invFreq[i];
                var (sn, cs) = Math.SinCos((double)angle);
                cos[(long)p * half + i] = (float)cs;
                sin[(long)p * half + i] = (float)sn;
            }
        });
        return (cos, sin);
    }

    public void Dispose()
    {
        Cos.Dispose();
        Sin.Dispose();
    }
}

/// <summary>
/// Rotary embeddings applied in place to x f32 [T, heads, headDim] (or [T, heads·headDim]), token t at
/// position positions[t] (I32 [T]: a batch may hold sequences at different positions). Hugging Face's
/// rotate_half layout (modeling_llama.py rotate_half / apply_rotary_pos_emb, out = x·cos + rotate_half(x)·sin):
/// element i pairs with i + d/2, out_i = x_i·cos − x_{i+d/2}·sin, out_{i+d/2} = x_{i+d/2}·cos + x_i·sin,
/// with cos/sin of angle p·inv_freq[i] from <see cref="RopeTable"/>.
/// <para>Positions outside [0, maxPositions): the op throws when positions are on the host; on a device
/// the kernel writes NaN into that token's x (a visible failure, never a read outside the table).</para>
/// </summary>
public static class Rope
{
    public static void Twin(Span<float> x, ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, int heads, int headDim)
    {
        int half = headDim / 2;
        for (int t = 0; t < positions.Length; t++)
        {
            int p = positions[t];
            for (int h = 0; h < heads; h++)
            {
                var v = x.Slice((t * heads + h) * headDim, headDim);
                for (int i = 0; i < half; i++)
                {
                    float c = cos[p * half + i], s = sin[p * half + i];
                    float a = v[i], b = v[i + half];
                    v[i] = a * c - b * s;
                    v[i + half] = b * c + a * s;
                }
            }
        }
    }

    /// <summary>One thread per rotated pair (i, i + d/2): consecutive threads read consecutive x and table
    /// entries, so every load is coalesced; each element is read and written by one thread only.</summary>
    static void Kernel(Index1D idx, ArrayView<float> x, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin,
                       int heads, int half, int maxPositions)
    {
        int i = idx % half;
        int row = idx / half;                  // token·heads + head
        long b = (long)row * 2 * half + i;
        int p = positions[row / heads];
        if ((uint)p >= (uint)maxPositions)
        {
            x[b] = float.NaN;
            x[b + half] = float.NaN;
            return;
        }
        long e = (long)p * half + i;
        float c = cos[e], s = sin[e];
        float x0 = x[b], x1 = x[b + half];
        x[b] = x0 * c - x1 * s;
        x[b + half] = x1 * c + x0 * s;
    }

    /// <summary>Checks x [T, heads, headDim] (or [T, heads·headDim]) f32 against positions I32 [T] and the table;
    /// returns heads. Shared with the backward (RopeGrad), which takes the same arguments.</summary>
    internal static int Heads(string what, Tensor x, Tensor positions, RopeTable table)
    {
        Need.SameDevice(x, positions, table.Cos);
        Need.F32($"{what} x", x);
        if (positions.DType != DType.I32 || positions.Rank != 1) throw new ArgumentException($"{what} positions: expected I32 [T], got {positions}");
        int tokens = positions.Dim(0), d = table.HeadDim;
        long perToken = tokens == 0 ? 0 : x.ElementCount / tokens;
        if (x.Rank < 2 || x.Dim(0) != tokens || perToken % d != 0 || (x.Rank == 3 && x.Dim(-1) != d))
            throw new ArgumentException($"{what} x: expected [{tokens}, heads, {d}], got {x}");
        return (int)(perToken / d);
    }

    /// <summary>The positions of a host call, each checked against the table (a kernel reads past it unchecked).</summary>
    internal static ReadOnlySpan<int> HostPositions(string what, Tensor positions, RopeTable table)
    {
        var pos = positions.Host<int>();
        foreach (var p in pos)
            if ((uint)p >= (uint)table.MaxPositions)
                throw new ArgumentException($"{what}: position {p} outside the table's [0, {table.MaxPositions})");
        return pos;
    }

    public static void Run(Tensor x, Tensor positions, RopeTable table)
    {
        int heads = Heads("rope", x, positions, table), d = table.HeadDim;
        if (x.ElementCount == 0) return;
        if (!x.Device.IsIlgpu)
        {
            Twin(x.Host<float>(), HostPositions("rope", positions, table), table.Cos.Host<float>(), table.Sin.Host<float>(), heads, d);
            return;
        }
        x.Device.Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>>(Kernel)(
            (int)(x.ElementCount / 2), x.View<float>(), positions.View<int>(), table.Cos.View<float>(), table.Sin.View<float>(),
            heads, d / 2, table.MaxPositions);
    }

    public static AuditCase Case => new("rope", Check.F32Bound, (dev, rng) =>
    {
        int tokens = Check.Size(rng, 17), heads = Check.Size(rng, 9), d = 2 * Check.Size(rng, 80);
        int maxPos = Check.Size(rng, 3000);
        double theta = new[] { 10_000.0, 500_000.0, 1_000_000.0 }[rng.Next(3)];
        var scaling = rng.Next(2) == 0 ? null : new Llama3RopeScaling(8, 1, 4, Check.Size(rng, 8192));
        using var table = RopeTable.Create(d, theta, scaling, maxPos, dev);
        var pos = new int[tokens];
        for (int t = 0; t < tokens; t++) pos[t] = rng.Next(maxPos);
        var x = Check.Values(rng, (long)tokens * heads * d, 2f);
        using var tx = Tensor.From(x, [tokens, heads, d], dev);
        using var tp = Tensor.From(pos, [tokens], dev);
        Run(tx, tp, table);
        var want = (float[])x.Clone();
        Twin(want, pos, table.Cos.ToFloatArray(), table.Sin.ToFloatArray(), heads, d);
        return (Check.RelativeError(tx.ToFloatArray(), want), $"[{tokens}, {heads}, {d}] max pos {maxPos} theta {theta}{(scaling == null ? "" : " llama3")}");
    });
}

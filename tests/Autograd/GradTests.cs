using System.Runtime.InteropServices;
using BitDeltaNative.Autograd;
using BitDeltaNative.Kernels;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Autograd;

/// <summary>
/// Every backward twin against central finite differences of an f64 forward, on random small ragged shapes and
/// never-zero values. The objective is J = Σ c ⊙ y with a random never-zero cotangent c (so dy = c): the analytic
/// gradient must equal (J(x + h·eᵢ) − J(x − h·eᵢ)) / 2h, h = 1e-6, to ‖got − want‖/‖want‖ &lt; 1e-6. In f64 the
/// difference's truncation error is O(h²) ≈ 1e-12 and its rounding error ≈ 1e-16/h = 1e-10, so what is left is
/// the twins' one rounding of each gradient to f32 (≈ 6e-8). Each f64 forward is first checked against the
/// float kernel twin (< 1e-5), so the function differentiated is the one the engine runs.
/// </summary>
public class GradTests
{
    const double H = 1e-6, Bound = 1e-6;

    static double[] D(float[] a) => Array.ConvertAll(a, v => (double)v);

    /// <summary>Central differences of <paramref name="j"/> with respect to every element of <paramref name="x"/>
    /// (perturbed in place and restored).</summary>
    static double[] Fd(double[] x, Func<double> j)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + H;
            double plus = j();
            x[i] = keep - H;
            double minus = j();
            x[i] = keep;
            g[i] = (plus - minus) / (2 * H);
        }
        return g;
    }

    static double Dot(double[] c, double[] y)
    {
        double s = 0;
        for (int i = 0; i < y.Length; i++) s += c[i] * y[i];
        return s;
    }

    static void Close(ReadOnlySpan<float> got, double[] want, string what)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++)
        {
            double d = got[i] - want[i];
            num += d * d;
            den += want[i] * want[i];
        }
        Assert.True(den > 0, $"{what}: the reference gradient is zero");
        double err = Math.Sqrt(num / den);
        Assert.True(err < Bound, $"{what}: relative error {err:G3}");
    }

    static void SameForward(float[] twin, double[] f64, string what)
    {
        double err = Check.RelativeError(twin, Array.ConvertAll(f64, v => (float)v));
        Assert.True(err < 1e-5, $"{what} forward: f64 helper vs kernel twin {err:G3}");
    }

    // ---- f64 forwards ----

    static double[] Linear(double[] x, double[] w, int rows, int inDim, int outDim)
    {
        var y = new double[rows * outDim];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
                for (int i = 0; i < inDim; i++) y[r * outDim + o] += x[r * inDim + i] * w[o * inDim + i];
        return y;
    }

    static double[] BitLinearF(double[] x, double[] w, uint[] signs, double scale, int rows, int inDim, int outDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        var y = new double[rows * outDim];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
                for (int i = 0; i < inDim; i++)
                    y[r * outDim + o] += x[r * inDim + i] * (w[o * inDim + i] + scale * BitLinear.Sign(signs, words, o, i));
        return y;
    }

    static double[] RmsNormF(double[] x, double[] w, int rows, int dim, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += x[r * dim + i] * x[r * dim + i];
            double rho = 1 / Math.Sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++) y[r * dim + i] = w[i] * x[r * dim + i] * rho;
        }
        return y;
    }

    static double[] RopeF(double[] x, int[] pos, float[] cos, float[] sin, int heads, int d)
    {
        var y = (double[])x.Clone();
        int half = d / 2;
        for (int t = 0; t < pos.Length; t++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++)
                {
                    int a = (t * heads + h) * d + i;
                    double c = cos[pos[t] * half + i], s = sin[pos[t] * half + i];
                    y[a] = x[a] * c - x[a + half] * s;
                    y[a + half] = x[a + half] * c + x[a] * s;
                }
        return y;
    }

    static double[] AttentionF(double[] q, double[] k, double[] v, int T, int H, int KV, int D, int window, double scale)
    {
        var o = new double[T * H * D];
        int group = H / KV;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
            {
                int first = Attention.FirstKey(t, window), qa = (t * H + h) * D;
                var s = new double[t + 1];
                double max = double.NegativeInfinity, sum = 0;
                for (int j = first; j <= t; j++)
                {
                    int ka = (j * KV + h / group) * D;
                    for (int d = 0; d < D; d++) s[j] += q[qa + d] * k[ka + d];
                    s[j] *= scale;
                    max = Math.Max(max, s[j]);
                }
                for (int j = first; j <= t; j++) sum += s[j] = Math.Exp(s[j] - max);
                for (int j = first; j <= t; j++)
                    for (int d = 0; d < D; d++) o[qa + d] += s[j] / sum * v[(j * KV + h / group) * D + d];
            }
        return o;
    }

    /// <summary>Padding bits past inDim set, so a rule that reads them is caught.</summary>
    static uint[] RandomSigns(Random rng, int outDim, int inDim) => Check.Signs(rng, outDim, inDim);

    // ---- properties ----

    [Property(MaxTest = 200)]
    public void Linear_dx_matches_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int rows = rng.Next(1, 8), inDim = rng.Next(1, 10), outDim = rng.Next(1, 10);
        var x = Check.Values(rng, rows * inDim);
        var w = Check.Values(rng, outDim * inDim);
        var c = Check.Values(rng, rows * outDim);
        var y = new float[rows * outDim];
        MatMul.Twin(x, w, y, rows, inDim, outDim);
        double[] xd = D(x), wd = D(w), cd = D(c);
        SameForward(y, Linear(xd, wd, rows, inDim, outDim), "linear");

        var dx = new float[x.Length];
        LinearGrad.Twin(c, w, dx, rows, inDim, outDim);
        Close(dx, Fd(xd, () => Dot(cd, Linear(xd, wd, rows, inDim, outDim))), "linear dx");
        // accumulate adds onto what dx holds
        var acc = Check.Values(rng, x.Length);
        var sum = (float[])acc.Clone();
        LinearGrad.Twin(c, w, sum, rows, inDim, outDim, accumulate: true);
        for (int i = 0; i < x.Length; i++) Assert.Equal(acc[i] + dx[i], sum[i], 1e-5);
    }

    [Property(MaxTest = 200)]
    public void BitLinear_dx_and_dscale_match_finite_differences(int seed)
    {
        var rng = new Random(seed);
        // in up to 70: one, two and three sign words, ragged.
        int rows = rng.Next(1, 8), inDim = rng.Next(2) == 0 ? rng.Next(1, 10) : rng.Next(1, 71), outDim = rng.Next(1, 10);
        var x = Check.Values(rng, rows * inDim);
        var w = Check.Values(rng, outDim * inDim, 0.1f);
        var signs = RandomSigns(rng, outDim, inDim);
        float scale = Check.Value(rng, 0.05f);
        var c = Check.Values(rng, rows * outDim);
        var y = new float[rows * outDim];
        MatMul.Twin(x, w, y, rows, inDim, outDim);
        BitLinear.Twin(x, signs, scale, y, rows, inDim, outDim);
        double[] xd = D(x), wd = D(w), cd = D(c);
        SameForward(y, BitLinearF(xd, wd, signs, scale, rows, inDim, outDim), "bitlinear");

        var dx = new float[x.Length];
        float dScale = BitLinearGrad.Twin(x, w, signs, scale, c, dx, rows, inDim, outDim);
        Close(dx, Fd(xd, () => Dot(cd, BitLinearF(xd, wd, signs, scale, rows, inDim, outDim))), "bitlinear dx");
        var s = new double[] { scale };
        Close([dScale], Fd(s, () => Dot(cd, BitLinearF(xd, wd, signs, s[0], rows, inDim, outDim))), "bitlinear dscale");
        // Without dx the same dα.
        Assert.Equal(dScale, BitLinearGrad.Twin(x, w, signs, scale, c, [], rows, inDim, outDim));
    }

    [Property(MaxTest = 200)]
    public void RmsNorm_dx_matches_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int rows = rng.Next(1, 8), dim = rng.Next(1, 10);
        // eps large next to mean(x²) sometimes, so its term is exercised. With one element and a small eps the
        // norm is nearly sign(x): dx ≈ eps·ρ³·w·dy is ~1e-5 of J, below what central differences resolve in f64.
        float eps = rng.Next(2) == 0 && dim > 1 ? 1e-5f : 0.3f;
        var x = Check.Values(rng, rows * dim, 2f);
        var w = Check.Values(rng, dim);
        var c = Check.Values(rng, rows * dim);
        var y = new float[x.Length];
        RmsNorm.Twin(x, w, y, rows, dim, eps);
        double[] xd = D(x), wd = D(w), cd = D(c);
        SameForward(y, RmsNormF(xd, wd, rows, dim, eps), "rmsnorm");

        var dx = new float[x.Length];
        RmsNormGrad.Twin(x, w, c, dx, rows, dim, eps);
        Close(dx, Fd(xd, () => Dot(cd, RmsNormF(xd, wd, rows, dim, eps))), "rmsnorm dx");
    }

    [Property(MaxTest = 200)]
    public void Rope_dx_is_the_inverse_rotation_and_matches_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int tokens = rng.Next(1, 8), heads = rng.Next(1, 4), d = 2 * rng.Next(1, 6), maxPos = rng.Next(1, 3000);
        var scaling = rng.Next(2) == 0 ? null : new Llama3RopeScaling(8, 1, 4, rng.Next(1, 8193));
        var (cos, sin) = RopeTable.Tables(RopeTable.InverseFrequencies(d, 500_000, scaling), maxPos);
        var pos = new int[tokens];
        for (int t = 0; t < tokens; t++) pos[t] = rng.Next(maxPos);
        var x = Check.Values(rng, tokens * heads * d);
        var c = Check.Values(rng, x.Length);
        var y = (float[])x.Clone();
        Rope.Twin(y, pos, cos, sin, heads, d);
        double[] xd = D(x), cd = D(c);
        SameForward(y, RopeF(xd, pos, cos, sin, heads, d), "rope");

        var dx = (float[])c.Clone();
        RopeGrad.Twin(dx, pos, cos, sin, heads, d);
        Close(dx, Fd(xd, () => Dot(cd, RopeF(xd, pos, cos, sin, heads, d))), "rope dx");
        // The inverse rotation undoes the rotation: backward of forward of x is x.
        RopeGrad.Twin(y, pos, cos, sin, heads, d);
        Assert.True(Check.RelativeError(y, x) < 1e-6);
    }

    [Property(MaxTest = 200)]
    public void SwiGlu_dgate_and_dup_match_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int n = rng.Next(1, 40);
        var g = Check.Values(rng, n, 6f);
        var u = Check.Values(rng, n, 2f);
        var c = Check.Values(rng, n);
        var y = new float[n];
        SwiGlu.Twin(g, u, y);
        double[] gd = D(g), ud = D(u), cd = D(c);
        double[] F()
        {
            var h = new double[n];
            for (int i = 0; i < n; i++) h[i] = gd[i] / (1 + Math.Exp(-gd[i])) * ud[i];
            return h;
        }
        SameForward(y, F(), "swiglu");

        var dg = new float[n];
        var du = new float[n];
        SwiGluGrad.Twin(g, u, c, dg, du);
        Close(dg, Fd(gd, () => Dot(cd, F())), "swiglu dgate");
        Close(du, Fd(ud, () => Dot(cd, F())), "swiglu dup");
    }

    [Property(MaxTest = 200)]
    public void Attention_dq_dk_dv_match_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int T = rng.Next(1, 8), KV = rng.Next(1, 4), group = rng.Next(1, 4), H = KV * group, D = rng.Next(1, 10);
        int window = rng.Next(2) == 0 ? 0 : rng.Next(1, T + 2);
        float scale = 1f / MathF.Sqrt(D);
        // Values up to 2 so the softmax is far from uniform.
        var q = Check.Values(rng, T * H * D, 2f);
        var k = Check.Values(rng, T * KV * D, 2f);
        var v = Check.Values(rng, T * KV * D);
        var c = Check.Values(rng, T * H * D);
        double[] qd = GradTests.D(q), kd = GradTests.D(k), vd = GradTests.D(v), cd = GradTests.D(c);
        double[] F() => AttentionF(qd, kd, vd, T, H, KV, D, window, scale);

        // The kernel twin reads a cache [slot, kv head, maxSeq, D]: one slot holding this sequence.
        var kc = new float[k.Length];
        var vc = new float[v.Length];
        for (int j = 0; j < T; j++)
            for (int h = 0; h < KV; h++)
                for (int d = 0; d < D; d++)
                {
                    kc[(h * T + j) * D + d] = k[(j * KV + h) * D + d];
                    vc[(h * T + j) * D + d] = v[(j * KV + h) * D + d];
                }
        var o = new float[q.Length];
        var positions = Enumerable.Range(0, T).ToArray();
        Attention.Twin(q, MemoryMarshal.AsBytes(kc.AsSpan()), MemoryMarshal.AsBytes(vc.AsSpan()), DType.F32, new int[T], positions, o,
                       H, 1, KV, T, D, window, scale);
        SameForward(o, F(), "attention");

        var dq = new float[q.Length];
        var dk = new float[k.Length];
        var dv = new float[v.Length];
        AttentionGrad.Twin(q, k, v, c, dq, dk, dv, T, H, KV, D, window, scale);
        string shape = $"T {T} H {H} KV {KV} D {D} window {window}";
        // One token (or a window of 1) has a softmax of one key, constant in q and k: their gradient is 0.
        if (Enumerable.Range(0, T).Any(t => t - Attention.FirstKey(t, window) > 0))
        {
            Close(dq, Fd(qd, () => Dot(cd, F())), $"attention dq {shape}");
            Close(dk, Fd(kd, () => Dot(cd, F())), $"attention dk {shape}");
        }
        else
        {
            Assert.All(dq, g => Assert.True(Math.Abs(g) < 1e-12));
            Assert.All(dk, g => Assert.True(Math.Abs(g) < 1e-12));
        }
        Close(dv, Fd(vd, () => Dot(cd, F())), $"attention dv {shape}");
    }

    [Property(MaxTest = 200)]
    public void Softmax_dx_matches_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int rows = rng.Next(1, 8), n = rng.Next(1, 10);
        var x = Check.Values(rng, rows * n, 4f);
        var c = Check.Values(rng, rows * n);
        double[] xd = D(x), cd = D(c);
        double[] F()
        {
            var y = new double[xd.Length];
            for (int r = 0; r < rows; r++)
            {
                double max = double.NegativeInfinity, sum = 0;
                for (int i = 0; i < n; i++) max = Math.Max(max, xd[r * n + i]);
                for (int i = 0; i < n; i++) sum += y[r * n + i] = Math.Exp(xd[r * n + i] - max);
                for (int i = 0; i < n; i++) y[r * n + i] /= sum;
            }
            return y;
        }
        var y = new float[x.Length];
        Softmax.Twin(x, y, rows, n);
        SameForward(y, F(), "softmax");

        var dx = new float[x.Length];
        SoftmaxGrad.Twin(y, c, dx, rows, n);
        if (n == 1)
            Assert.All(dx, g => Assert.True(Math.Abs(g) < 1e-12));   // one element: y = 1 whatever x
        else
            Close(dx, Fd(xd, () => Dot(cd, F())), "softmax dx");
        // In place (dx = dy) gives the same.
        var inPlace = (float[])c.Clone();
        SoftmaxGrad.Twin(y, inPlace, inPlace, rows, n);
        Assert.Equal(dx, inPlace);
    }

    [Property(MaxTest = 200)]
    public void Embedding_dtable_matches_finite_differences(int seed)
    {
        var rng = new Random(seed);
        // A small vocabulary, so ids repeat and their gradients must add up.
        int vocab = rng.Next(1, 6), dim = rng.Next(1, 8), tokens = rng.Next(1, 10);
        var ids = new int[tokens];
        for (int t = 0; t < tokens; t++) ids[t] = rng.Next(vocab);
        var table = Check.Values(rng, vocab * dim);
        var c = Check.Values(rng, tokens * dim);
        double[] td = D(table), cd = D(c);
        double[] F()
        {
            var y = new double[tokens * dim];
            for (int t = 0; t < tokens; t++)
                for (int i = 0; i < dim; i++) y[t * dim + i] = td[ids[t] * dim + i];
            return y;
        }
        var y = new float[tokens * dim];
        Embedding.Twin(ids, table, y, dim);
        SameForward(y, F(), "embedding");

        // dTable starts at zero; rows no id names get no gradient (exactly 0).
        var dTable = new float[table.Length];
        EmbeddingGrad.Twin(ids, c, dTable, dim);
        var want = Fd(td, () => Dot(cd, F()));
        if (want.Any(g => g != 0)) Close(dTable, want, "embedding dtable");
        for (int id = 0; id < vocab; id++)
            if (!ids.Contains(id))
                for (int i = 0; i < dim; i++) Assert.Equal(0f, dTable[id * dim + i]);
        // It adds onto what dTable holds.
        var start = Check.Values(rng, table.Length);
        var sum = (float[])start.Clone();
        EmbeddingGrad.Twin(ids, c, sum, dim);
        for (int i = 0; i < sum.Length; i++) Assert.Equal(start[i] + dTable[i], sum[i], 1e-5);
    }

    [Property(MaxTest = 200)]
    public void Mse_loss_and_gradient_match_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int n = rng.Next(1, 60);
        var s = Check.Values(rng, n, 3f);
        var t = Check.Values(rng, n, 3f);
        double[] sd = D(s), td = D(t);
        double F()
        {
            double sum = 0;
            for (int i = 0; i < n; i++) sum += (sd[i] - td[i]) * (sd[i] - td[i]);
            return sum / n;
        }
        var ds = new float[n];
        float loss = LossGrad.Mse(s, t, ds);
        Assert.Equal(F(), loss, F() * 1e-6);
        Close(ds, Fd(sd, F), "mse dstudent");
    }

    [Property(MaxTest = 200)]
    public void Cross_entropy_loss_and_gradient_match_finite_differences(int seed)
    {
        var rng = new Random(seed);
        int rows = rng.Next(1, 8), vocab = rng.Next(1, 10);
        var x = Check.Values(rng, rows * vocab, 4f);
        var targets = new int[rows];
        for (int r = 0; r < rows; r++) targets[r] = rng.Next(4) == 0 ? CrossEntropy.IgnoreIndex : rng.Next(vocab);
        targets[rng.Next(rows)] = rng.Next(vocab);   // at least one row counts
        int counted = targets.Count(t => t != CrossEntropy.IgnoreIndex);
        double[] xd = D(x);
        double F()
        {
            double sum = 0;
            for (int r = 0; r < rows; r++)
            {
                if (targets[r] == CrossEntropy.IgnoreIndex) continue;
                double z = 0;
                for (int i = 0; i < vocab; i++) z += Math.Exp(xd[r * vocab + i]);
                sum += Math.Log(z) - xd[r * vocab + targets[r]];
            }
            return sum / counted;
        }
        var nll = new float[rows];
        CrossEntropy.Twin(x, targets, nll, vocab);
        Assert.Equal(nll.Sum(v => (double)v) / counted, F(), 1e-5);

        var dx = new float[x.Length];
        float loss = LossGrad.CrossEntropyMean(x, targets, dx, vocab);
        Assert.Equal(F(), loss, 1e-5);
        if (vocab == 1)
            Assert.All(dx, g => Assert.True(Math.Abs(g) < 1e-12));   // one class: the loss is 0 whatever the logit
        else
            Close(dx, Fd(xd, F), "cross-entropy dlogits");
        for (int r = 0; r < rows; r++)
            if (targets[r] == CrossEntropy.IgnoreIndex)
                for (int i = 0; i < vocab; i++) Assert.Equal(0f, dx[r * vocab + i]);
    }

    [Fact]
    public void Cross_entropy_with_every_row_ignored_is_nan_with_a_zero_gradient()
    {
        // torch: F.cross_entropy(x, full(-100)) is 0/0 = nan.
        var dx = new float[] { 5, 5, 5, 5 };
        float loss = LossGrad.CrossEntropyMean(new float[] { 1, 2, 3, 4 }, [CrossEntropy.IgnoreIndex, CrossEntropy.IgnoreIndex], dx, 2);
        Assert.True(float.IsNaN(loss));
        Assert.All(dx, g => Assert.Equal(0f, g));
    }
}

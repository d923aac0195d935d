using BitDeltaNative.Kernels;
using BitDeltaNative.Models.Codecs;
using FsCheck;
using FsCheck.Fluent;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// The codecs' numerical parts on their own: the SVDs (the randomized one against the full one on small matrices, as the
/// codecs issue asks), the bit-stream packing, GPTQ and SparseGPT's 2:4 pruning, and Delta-CoMe's rank allocation.
/// </summary>
public class CodecMathTests
{
    static double[] Random(Random rng, int n) => Enumerable.Range(0, n).Select(_ => rng.NextDouble() * 2 - 1).ToArray();

    static double Norm(IEnumerable<double> v) => Math.Sqrt(v.Sum(x => x * x));

    /// <summary>‖A − U·diag(S)·Vᵀ‖ / ‖A‖ over the first k triplets.</summary>
    static double Residual(double[] a, Svd.Result r, int k)
    {
        double err = 0;
        for (int i = 0; i < r.M; i++)
            for (int j = 0; j < r.N; j++)
            {
                double s = 0;
                for (int t = 0; t < k; t++) s += r.U[i * r.K + t] * r.S[t] * r.V[j * r.K + t];
                err += (a[i * r.N + j] - s) * (a[i * r.N + j] - s);
            }
        return Math.Sqrt(err) / Norm(a);
    }

    static double OffOrthonormal(double[] q, int rows, int cols)
    {
        double worst = 0;
        for (int a = 0; a < cols; a++)
            for (int b = 0; b < cols; b++)
            {
                double s = 0;
                for (int i = 0; i < rows; i++) s += q[i * cols + a] * q[i * cols + b];
                worst = Math.Max(worst, Math.Abs(s - (a == b ? 1 : 0)));
            }
        return worst;
    }

    [Theory]
    [InlineData(13, 7)]
    [InlineData(7, 13)]
    [InlineData(1, 5)]
    [InlineData(40, 40)]
    public void Full_svd_reconstructs_with_orthonormal_factors_and_falling_values(int m, int n)
    {
        var a = Random(new Random(m * 31 + n), m * n);
        var r = Svd.Full(a, m, n);
        Assert.Equal(Math.Min(m, n), r.K);
        Assert.True(Residual(a, r, r.K) < 1e-12, $"residual {Residual(a, r, r.K):E2}");
        Assert.True(OffOrthonormal(r.U, m, r.K) < 1e-12);
        Assert.True(OffOrthonormal(r.V, n, r.K) < 1e-12);
        for (int i = 1; i < r.K; i++) Assert.True(r.S[i] <= r.S[i - 1]);
    }

    [Fact]
    public void Randomized_svd_finds_the_full_svds_top_triplets()
    {
        // A delta-like spectrum: σ_i = 0.8^i over 50 directions, plus noise far below the top ones.
        var rng = new Random(3);
        int m = 90, n = 60, k = 12;
        var basis = Svd.Full(Random(rng, m * n), m, n);
        var a = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 1e-6 * (rng.NextDouble() - 0.5);
                for (int t = 0; t < 50; t++) s += basis.U[i * basis.K + t] * Math.Pow(0.8, t) * basis.V[j * basis.K + (t + 7) % n];
                a[i * n + j] = s;
            }
        var full = Svd.Full(a, m, n);
        var fast = Svd.Randomized(a, m, n, k, oversample: 10, powerIterations: 2, seed: 5);
        Assert.Equal(k, fast.K);
        for (int t = 0; t < k; t++)
        {
            Assert.True(Math.Abs(fast.S[t] - full.S[t]) <= 1e-6 * full.S[0], $"σ_{t}: {fast.S[t]} against {full.S[t]}");
            // the same direction up to sign
            double dot = 0;
            for (int i = 0; i < m; i++) dot += fast.U[i * k + t] * full.U[i * full.K + t];
            Assert.True(Math.Abs(Math.Abs(dot) - 1) < 1e-4, $"u_{t}: |⟨u, u_full⟩| = {Math.Abs(dot)}");
        }
        Assert.True(Math.Abs(Residual(a, fast, k) - Residual(a, full, k)) < 1e-6);
    }

    [Fact]
    public void Packed_codes_read_back_for_every_width_and_ragged_row()
    {
        Prop.ForAll(ArbMap.Default.ArbFor<int>(), seed =>
        {
            var rng = new Random(seed);
            int bits = 1 + rng.Next(8), rows = 1 + rng.Next(4), cols = 1 + rng.Next(70);
            var codes = Enumerable.Range(0, rows * cols).Select(_ => (byte)rng.Next(1 << bits)).ToArray();
            var words = Quant.Pack(codes, rows, cols, bits);
            int rw = Quant.RowWords(cols, bits);
            bool ok = words.Length == rows * rw;
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) ok &= Quant.Unpack(words, (long)r * rw, c, bits) == codes[r * cols + c];
            return ok.Label($"{rows}×{cols} at {bits} bits");
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Gptq_with_an_identity_hessian_is_round_to_nearest()
    {
        var rng = new Random(8);
        int rows = 6, cols = 40;
        var w = Random(rng, rows * cols);
        var h = new double[cols * cols];
        for (int i = 0; i < cols; i++) h[i * cols + i] = 1;
        var g = Gptq.Quantize(w, rows, cols, h, 3, 16, symmetric: false, sparse24: false);
        var n = Gptq.Quantize(w, rows, cols, null, 3, 16, symmetric: false, sparse24: false);
        Assert.Equal(n.Codes, g.Codes);
        Assert.Equal(n.Scales, g.Scales);
    }

    /// <summary>The reason for GPTQ: on correlated inputs its outputs move less than round-to-nearest's.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Gptq_moves_the_outputs_less_than_round_to_nearest(bool sparse)
    {
        var rng = new Random(sparse ? 10 : 9);
        int rows = 24, cols = 64, tokens = 400;
        var w = Random(rng, rows * cols);
        var mix = Random(rng, cols * cols);   // correlated inputs: x = z·mix
        var x = new float[tokens * cols];
        for (int t = 0; t < tokens; t++)
        {
            var z = Random(rng, cols);
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int i = 0; i < cols; i++) s += z[i] * mix[i * cols + j];
                x[t * cols + j] = (float)s;
            }
        }
        var h = new double[cols * cols];
        Gptq.Hessian(x, tokens, cols, h);
        double OutputError(Gptq.Result q)
        {
            double e = 0;
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < rows; r++)
                {
                    double d = 0;
                    for (int i = 0; i < cols; i++) d += (w[r * cols + i] - q.Dequantized[r * cols + i]) * x[t * cols + i];
                    e += d * d;
                }
            return e;
        }
        var g = Gptq.Quantize(w, rows, cols, h, 2, 32, symmetric: sparse, sparse24: sparse);
        var n = Gptq.Quantize(w, rows, cols, null, 2, 32, symmetric: sparse, sparse24: sparse);
        Assert.True(OutputError(g) < 0.8 * OutputError(n), $"GPTQ {OutputError(g):E3} against round to nearest {OutputError(n):E3}");
    }

    [Fact]
    public void Sparse_24_keeps_two_of_every_four_and_prunes_to_zero()
    {
        var rng = new Random(11);
        int rows = 5, cols = 36;
        var w = Random(rng, rows * cols);
        var q = Gptq.Quantize(w, rows, cols, null, 4, 12, symmetric: true, sparse24: true);
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < cols / 4; g++)
            {
                var kept = Enumerable.Range(4 * g, 4).Where(c => q.Kept![r * cols + c]).ToArray();
                Assert.Equal(2, kept.Length);
                // without calibration the two largest |w| stay
                var largest = Enumerable.Range(4 * g, 4).OrderByDescending(c => Math.Abs(w[r * cols + c])).Take(2).Order().ToArray();
                Assert.Equal(largest, kept);
                foreach (var c in Enumerable.Range(4 * g, 4).Except(kept)) Assert.Equal(0, q.Dequantized[r * cols + c]);
            }
        Assert.Throws<ArgumentException>(() => Gptq.Quantize(w, rows, 35, null, 4, 12, true, true));
    }

    [Theory]
    [InlineData(4096, 4096)]
    [InlineData(11008, 4096)]
    [InlineData(256, 640)]
    [InlineData(16, 8)]
    public void Low_rank_ranks_fill_the_budget_and_no_more(int outDim, int inDim)
    {
        int[] bits = [8, 3, 2];
        var ranks = LowRankMp.Ranks(outDim, inDim, bits, [2, 32], 128);
        long used = ranks.Select((r, s) => r > 0 ? LowRankMp.SliceBits(r, bits[s], outDim, inDim, 128) : 0).Sum();
        Assert.True(used <= (long)outDim * inDim, $"{used} bits for {outDim}×{inDim}");
        Assert.True(ranks.Sum() <= Math.Min(outDim, inDim));
        int last = ranks[^1];
        if (ranks.Sum() < Math.Min(outDim, inDim))
            Assert.True(used - (last > 0 ? LowRankMp.SliceBits(last, 2, outDim, inDim, 128) : 0) + LowRankMp.SliceBits(last + 1, 2, outDim, inDim, 128) > (long)outDim * inDim,
                        "one more 2-bit triplet would still have fit");
        if (outDim >= 256) Assert.Equal([2, 32], ranks[..2]);
    }
}

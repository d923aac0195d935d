namespace BitDeltaNative.Models.Codecs;

/// <summary>
/// Singular value decompositions of a row-major f64 matrix A [m, n] = U·diag(S)·Vᵀ, for the low-rank codec
/// (Delta-CoMe, arXiv 2406.08903, decomposes each Δ by SVD). <see cref="Full"/> is one-sided Jacobi (Hestenes): exact to
/// f64 rounding and slow, O(sweeps·n²·m), the spec. <see cref="Randomized"/> is Halko, Martinsson and Tropp's range
/// finder (SIAM Review 2011, Algorithm 4.4: Gaussian sketch, q power iterations with re-orthonormalisation, then the SVD
/// of the small projected matrix), for the top k triplets of large matrices. Both return U [m, k] and V [n, k] column by
/// column in row-major arrays, S descending.
/// </summary>
public static class Svd
{
    public readonly record struct Result(double[] U, double[] S, double[] V, int M, int N, int K);

    /// <summary>All min(m, n) triplets by one-sided Jacobi on the columns of A (of Aᵀ when m &lt; n).</summary>
    public static Result Full(ReadOnlySpan<double> a, int m, int n)
    {
        if (m < n)
        {
            var t = Full(Transpose(a, m, n), n, m);
            return new Result(t.V, t.S, t.U, m, n, t.K);
        }
        // Orthogonalise the columns of W = A·V by plane rotations; then S = column norms, U = W / S. Columns are kept
        // as rows of wt (Wᵀ) and of vt (Vᵀ), so every dot product and rotation runs over contiguous memory.
        var wt = Transpose(a, m, n);
        var vt = new double[n * n];
        for (int i = 0; i < n; i++) vt[i * n + i] = 1;
        for (int sweep = 0; sweep < 60; sweep++)
        {
            double off = 0;
            for (int p = 0; p < n - 1; p++)
                for (int q = p + 1; q < n; q++)
                {
                    var wp = wt.AsSpan(p * m, m);
                    var wq = wt.AsSpan(q * m, m);
                    double alpha = Dot(wp, wp), beta = Dot(wq, wq), gamma = Dot(wp, wq);
                    if (gamma == 0 || Math.Abs(gamma) <= 1e-15 * Math.Sqrt(alpha * beta)) continue;
                    off = Math.Max(off, Math.Abs(gamma) / Math.Sqrt(alpha * beta));
                    double zeta = (beta - alpha) / (2 * gamma);
                    double tan = Math.Sign(zeta == 0 ? 1 : zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    double cos = 1 / Math.Sqrt(1 + tan * tan), sin = cos * tan;
                    Rotate(wp, wq, cos, sin);
                    Rotate(vt.AsSpan(p * n, n), vt.AsSpan(q * n, n), cos, sin);
                }
            if (off <= 1e-15) break;
        }
        var s = new double[n];
        for (int j = 0; j < n; j++) s[j] = Math.Sqrt(Dot(wt.AsSpan(j * m, m), wt.AsSpan(j * m, m)));
        var order = Enumerable.Range(0, n).OrderByDescending(j => s[j]).ToArray();
        var u = new double[m * n];
        var vs = new double[n * n];
        var ss = new double[n];
        for (int c = 0; c < n; c++)
        {
            int j = order[c];
            ss[c] = s[j];
            for (int i = 0; i < m; i++) u[i * n + c] = s[j] > 0 ? wt[j * m + i] / s[j] : 0;
            for (int i = 0; i < n; i++) vs[i * n + c] = vt[j * n + i];
        }
        return new Result(u, ss, vs, m, n, n);
    }

    static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b) => System.Numerics.Tensors.TensorPrimitives.Dot(a, b);

    static void Rotate(Span<double> p, Span<double> q, double cos, double sin)
    {
        for (int i = 0; i < p.Length; i++)
        {
            double ap = p[i], aq = q[i];
            p[i] = cos * ap - sin * aq;
            q[i] = sin * ap + cos * aq;
        }
    }

    /// <summary>The top <paramref name="k"/> triplets: sketch Y = A·Ω with k + <paramref name="oversample"/> Gaussian
    /// columns, <paramref name="powerIterations"/> rounds of Y = A·(Aᵀ·Q) with Q re-orthonormalised after each product
    /// (the singular values of a delta decay slowly, and without them the sketch mixes in the tail), then B = Qᵀ·A and
    /// the exact SVD of the small B: U = Q·U_B.</summary>
    public static Result Randomized(double[] a, int m, int n, int k, int oversample = 10, int powerIterations = 2, int seed = 0)
    {
        int l = Math.Min(Math.Min(m, n), k + oversample);
        k = Math.Min(k, l);
        var rng = new Random(seed);
        var omega = new double[n * l];
        for (int i = 0; i < omega.Length; i++) omega[i] = Gaussian(rng);
        var at = Transpose(a, m, n);
        var q = Orthonormal(Linalg.MatMul(a, omega, m, n, l), m, l);
        for (int it = 0; it < powerIterations; it++)
        {
            var z = Orthonormal(Linalg.MatMul(at, q, n, m, l), n, l);   // Aᵀ·Q
            q = Orthonormal(Linalg.MatMul(a, z, m, n, l), m, l);        // A·Z
        }
        var b = Linalg.MatMul(Transpose(q, m, l), a, l, m, n);            // [l, n]
        var sb = Full(b, l, n);                                           // U_B [l, l], V [n, l]
        var u = Linalg.MatMul(q, sb.U, m, l, l);
        return new Result(Columns(u, m, l, k), sb.S[..k], Columns(sb.V, n, l, k), m, n, k);
    }

    /// <summary>The first <paramref name="k"/> columns of a row-major [rows, cols] matrix.</summary>
    static double[] Columns(double[] a, int rows, int cols, int k)
    {
        var r = new double[rows * k];
        for (int i = 0; i < rows; i++) Array.Copy(a, i * cols, r, i * k, k);
        return r;
    }

    /// <summary>Orthonormal columns spanning those of Y [rows, cols]: modified Gram–Schmidt, twice (one pass loses
    /// orthogonality on the nearly dependent columns a power iteration makes).</summary>
    static double[] Orthonormal(double[] y, int rows, int cols)
    {
        for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < cols; j++)
            {
                for (int p = 0; p < j; p++)
                {
                    double dot = 0;
                    for (int i = 0; i < rows; i++) dot += y[i * cols + p] * y[i * cols + j];
                    for (int i = 0; i < rows; i++) y[i * cols + j] -= dot * y[i * cols + p];
                }
                double norm = 0;
                for (int i = 0; i < rows; i++) norm += y[i * cols + j] * y[i * cols + j];
                norm = Math.Sqrt(norm);
                for (int i = 0; i < rows; i++) y[i * cols + j] = norm > 1e-300 ? y[i * cols + j] / norm : 0;
            }
        return y;
    }

    public static double[] Transpose(ReadOnlySpan<double> a, int m, int n)
    {
        var t = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
        return t;
    }

    static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}

/// <summary>Host f64 matrix products for the codecs' compression (rows in parallel).</summary>
public static class Linalg
{
    /// <summary>C [m, p] = A [m, n] · B [n, p], row-major.</summary>
    public static double[] MatMul(double[] a, double[] b, int m, int n, int p)
    {
        var c = new double[m * p];
        Parallel.For(0, m, i =>
        {
            var ci = c.AsSpan(i * p, p);
            for (int k = 0; k < n; k++)
            {
                double aik = a[i * n + k];
                if (aik == 0) continue;
                var bk = b.AsSpan(k * p, p);
                for (int j = 0; j < p; j++) ci[j] += aik * bk[j];
            }
        });
        return c;
    }
}

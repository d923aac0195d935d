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
        // Pairs in round-robin order (the circle method: player N − 1 stays, the others turn): each round's N / 2 pairs
        // touch disjoint columns, so they rotate in parallel, where cyclic row order runs one pair at a time. A sweep
        // still meets every pair once.
        int players = n + (n & 1), perRound = players / 2;
        var offs = new double[perRound];
        bool parallel = (long)m * n >= 1 << 16;
        void Pair(int round, int t)
        {
            int i = t == 0 ? round % (players - 1) : (round + t) % (players - 1);
            int j = t == 0 ? players - 1 : (round - t + players - 1) % (players - 1);
            int p = Math.Min(i, j), q = Math.Max(i, j);
            offs[t] = 0;
            if (q >= n) return;
            var wp = wt.AsSpan(p * m, m);
            var wq = wt.AsSpan(q * m, m);
            double alpha = Dot(wp, wp), beta = Dot(wq, wq), gamma = Dot(wp, wq);
            if (gamma == 0 || Math.Abs(gamma) <= 1e-15 * Math.Sqrt(alpha * beta)) return;
            offs[t] = Math.Abs(gamma) / Math.Sqrt(alpha * beta);
            double zeta = (beta - alpha) / (2 * gamma);
            double tan = Math.Sign(zeta == 0 ? 1 : zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
            double cos = 1 / Math.Sqrt(1 + tan * tan), sin = cos * tan;
            Rotate(wp, wq, cos, sin);
            Rotate(vt.AsSpan(p * n, n), vt.AsSpan(q * n, n), cos, sin);
        }
        for (int sweep = 0; sweep < 60; sweep++)
        {
            double off = 0;
            for (int round = 0; round < players - 1; round++)
            {
                if (parallel) Parallel.For(0, perRound, t => Pair(round, t));
                else
                    for (int t = 0; t < perRound; t++) Pair(round, t);
                for (int t = 0; t < perRound; t++) off = Math.Max(off, offs[t]);
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
        int i = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            int w = System.Numerics.Vector<double>.Count;
            var vc = new System.Numerics.Vector<double>(cos);
            var vs = new System.Numerics.Vector<double>(sin);
            for (; i <= p.Length - w; i += w)
            {
                var ap = new System.Numerics.Vector<double>(p[i..]);
                var aq = new System.Numerics.Vector<double>(q[i..]);
                (vc * ap - vs * aq).CopyTo(p[i..]);
                (vs * ap + vc * aq).CopyTo(q[i..]);
            }
        }
        for (; i < p.Length; i++)
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
        var sb = SmallWide(b, l, n);                                      // U_B [l, l], V [n, l]
        var u = Linalg.MatMul(q, sb.U, m, l, l);
        return new Result(Columns(u, m, l, k), sb.S[..k], Columns(sb.V, n, l, k), m, n, k);
    }

    /// <summary>The SVD of a wide B [l, n] (l ≤ n) through its Gram matrix: B·Bᵀ = U_B·diag(S²)·U_Bᵀ by Jacobi on the
    /// l × l matrix, then V = Bᵀ·U_B·diag(1/S). Jacobi on B itself costs n/l times as much (4.5× at 4096²: 42 s of the
    /// 220 s a 4096² rank-898 SVD took, bench/NOTES.md). Squaring B squares its condition number, which costs the small
    /// singular values digits: in f64 a triplet keeps ~8 digits down to σ/σ₁ = 1e-4, far below what the codec keeps.
    /// Directions with S = 0 get V = 0.</summary>
    static Result SmallWide(double[] b, int l, int n)
    {
        var c = Linalg.MatMul(b, Transpose(b, l, n), l, n, l);
        var e = Full(c, l, l);
        var s = e.S.Select(x => Math.Sqrt(Math.Max(0, x))).ToArray();
        var v = Linalg.MatMul(Transpose(b, l, n), e.U, n, l, l);        // Bᵀ·U_B [n, l]
        for (int j = 0; j < l; j++)
        {
            double inv = s[j] > 1e-300 ? 1 / s[j] : 0;
            for (int i = 0; i < n; i++) v[(long)i * l + j] *= inv;
        }
        return new Result(e.U, s, v, l, n, l);
    }

    /// <summary>The first <paramref name="k"/> columns of a row-major [rows, cols] matrix.</summary>
    static double[] Columns(double[] a, int rows, int cols, int k)
    {
        var r = new double[rows * k];
        for (int i = 0; i < rows; i++) Array.Copy(a, i * cols, r, i * k, k);
        return r;
    }

    /// <summary>Orthonormal columns spanning those of Y [rows, cols]: CholeskyQR2 (Fukaya et al. 2014): Y ← Y·R⁻¹ with
    /// RᵀR = YᵀY, twice, all of it matrix products; the second pass restores the orthogonality the first loses to YᵀY's
    /// squared condition number. Where a pivot shows a column nearly dependent on the ones before (a delta of lower rank
    /// than the sketch: Cholesky would divide by noise), modified Gram–Schmidt instead, which zeroes such columns. The
    /// column-by-column Gram–Schmidt on row-major Y was 2.6 s of a 2048² rank-423 SVD's 10 s per call.</summary>
    static double[] Orthonormal(double[] y, int rows, int cols)
    {
        for (int pass = 0; pass < 2; pass++)
        {
            // YᵀY = L·Lᵀ with R = Lᵀ, so Y·R⁻¹ = Y·(L⁻¹)ᵀ. A pivot under 1e-12 of its diagonal entry keeps fewer than ~6
            // of f64's digits once the earlier columns are taken out: Cholesky would divide by noise.
            var l = Linalg.Cholesky(Linalg.MatMul(Transpose(y, rows, cols), y, cols, rows, cols), cols, minPivot: 1e-12);
            if (l == null) return GramSchmidt(y, rows, cols);
            y = Linalg.MatMul(y, Transpose(Linalg.LowerInverse(l, cols), cols, cols), rows, cols, cols);
        }
        return y;
    }

    /// <summary>Modified Gram–Schmidt, twice (one pass loses orthogonality on nearly dependent columns); columns that are
    /// dependent on the ones before become 0.</summary>
    static double[] GramSchmidt(double[] y, int rows, int cols)
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

/// <summary>Host f64 matrix products and factorizations for the codecs' compression (rows in parallel).</summary>
public static class Linalg
{
    /// <summary>Lower L with A = L·Lᵀ (A symmetric positive definite), or null where a pivot is not above
    /// <paramref name="minPivot"/> times its diagonal entry of A (0: not positive).</summary>
    public static double[]? Cholesky(double[] a, int n, double minPivot = 0)
    {
        var l = new double[(long)n * n];
        for (int j = 0; j < n; j++)
        {
            double d = a[(long)j * n + j];
            for (int k = 0; k < j; k++) d -= l[(long)j * n + k] * l[(long)j * n + k];
            if (!(d > minPivot * a[(long)j * n + j]) || !(d > 0)) return null;
            double ljj = Math.Sqrt(d);
            l[(long)j * n + j] = ljj;
            Parallel.For(j + 1, n, i =>
            {
                double s = a[(long)i * n + j];
                for (int k = 0; k < j; k++) s -= l[(long)i * n + k] * l[(long)j * n + k];
                l[(long)i * n + j] = s / ljj;
            });
        }
        return l;
    }

    /// <summary>L⁻¹ of a lower-triangular L, column by column (L·y = e_c by forward substitution), columns in parallel.</summary>
    public static double[] LowerInverse(double[] l, int n)
    {
        var li = new double[(long)n * n];
        Parallel.For(0, n, c =>
        {
            for (int i = c; i < n; i++)
            {
                double s = i == c ? 1 : 0;
                for (int k = c; k < i; k++) s -= l[(long)i * n + k] * li[(long)k * n + c];
                li[(long)i * n + c] = s / l[(long)i * n + i];
            }
        });
        return li;
    }

    /// <summary>C [m, p] = A [m, n] · B [n, p], row-major: blocks of 16 rows of C in parallel, each walking B in tiles of
    /// 64 rows so a tile (64·p doubles) serves all 16 rows from cache; each C row gets its k terms in order, as vector
    /// multiply-adds. Row by row, every row of C streamed all of B from memory: 1 s for 2048×2048·439, ~3.6 GFLOP/s on
    /// 2 cores (bench/NOTES.md).</summary>
    public static double[] MatMul(double[] a, double[] b, int m, int n, int p)
    {
        const int Rows = 16, Tile = 64;
        var c = new double[(long)m * p];
        Parallel.For(0, (m + Rows - 1) / Rows, blk =>
        {
            int i0 = blk * Rows, i1 = Math.Min(m, i0 + Rows);
            for (int k0 = 0; k0 < n; k0 += Tile)
            {
                int k1 = Math.Min(n, k0 + Tile);
                for (int i = i0; i < i1; i++)
                {
                    var ci = c.AsSpan((int)((long)i * p), p);
                    for (int k = k0; k < k1; k++)
                    {
                        double aik = a[(long)i * n + k];
                        if (aik != 0) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(b.AsSpan((int)((long)k * p), p), aik, ci, ci);
                    }
                }
            }
        });
        return c;
    }
}

namespace BitDeltaNative.Models.Codecs;

/// <summary>
/// Quantizing W [rows, cols] (a linear's rows = outputs, cols = inputs) so that the layer's outputs on calibration
/// inputs move least: GPTQ (Frantar et al., arXiv 2210.17323, Algorithm 1), and with <c>sparse24</c> SparseGPT's joint
/// 2:4 pruning (Frantar and Alistarh, arXiv 2301.00774, §3–4), which DeltaZip applies to deltas (arXiv 2312.05215).
/// H = Σ x·xᵀ over the calibration inputs (<see cref="Hessian"/>), damped by 1% of its mean diagonal; columns are
/// quantized in order, each one's error spread over the columns after it through the upper Cholesky factor of H⁻¹.
/// Given H the rows are independent, so each row walks its columns on its own thread (the reference's "lazy batch"
/// of 128 columns, §3.3, orders the same arithmetic for a GPU). A group's scale and zero are set when the walk enters
/// it, from the weights as updated so far. In 2:4 mode, on entering each 4 columns every row
/// drops the two with the least w² / [chol(H⁻¹)]_ii² (their code is the zero point, value 0) and quantizes the others.
/// Without calibration (<paramref name="h"/> null) it is round-to-nearest per group, the documented fallback; 2:4 then
/// keeps each row's two largest |w| of every four.
/// </summary>
public static class Gptq
{
    public const double Damp = 0.01;

    /// <summary>What <see cref="Quantize"/> gives: codes [rows, cols] (one per byte; pruned weights hold the zero point),
    /// per (row, group) scale and zero, the kept mask in 2:4 mode, and the dequantized weights.</summary>
    public sealed record Result(byte[] Codes, float[] Scales, byte[] Zeros, bool[]? Kept, double[] Dequantized, int Rows, int Cols, int Group)
    {
        public int Groups => (Cols + Group - 1) / Group;
    }

    /// <summary>H = Σ_t x_t·x_tᵀ [n, n] of rows x [tokens, n] added into <paramref name="h"/>.</summary>
    public static void Hessian(ReadOnlySpan<float> x, int tokens, int n, double[] h)
    {
        var xs = x.ToArray();
        Parallel.For(0, n, i =>
        {
            for (int t = 0; t < tokens; t++)
            {
                double xi = xs[(long)t * n + i];
                if (xi == 0) continue;
                for (int j = 0; j < n; j++) h[(long)i * n + j] += xi * xs[(long)t * n + j];
            }
        });
    }

    public static Result Quantize(double[] w, int rows, int cols, double[]? h, int bits, int group, bool symmetric, bool sparse24)
    {
        if (group <= 0) group = cols;
        if (sparse24 && cols % 4 != 0) throw new ArgumentException($"2:4 sparsity needs inputs in fours, got {cols}");
        int groups = (cols + group - 1) / group;
        var codes = new byte[(long)rows * cols];
        var scales = new float[(long)rows * groups];
        var zeros = new byte[(long)rows * groups];
        var kept = sparse24 ? new bool[(long)rows * cols] : null;
        var deq = new double[(long)rows * cols];
        var work = w.ToArray();
        var hinv = h != null ? InverseCholesky(h, cols, work, rows) : null;

        Parallel.For(0, rows, r =>
        {
            // Rows are independent given H: each walks its columns, spreading its own error.
            var row = work.AsSpan(r * cols, cols);
            float scale = 1;
            int zero = 0;
            for (int c = 0; c < cols; c++)
            {
                if (c % group == 0)
                {
                    (scale, zero) = Quant.Params(row.Slice(c, Math.Min(group, cols - c)), bits, symmetric);
                    scales[(long)r * groups + c / group] = scale;
                    zeros[(long)r * groups + c / group] = (byte)zero;
                }
                if (sparse24 && c % 4 == 0) Prune(row, hinv, cols, c, kept!, (long)r * cols);
                bool keep = !sparse24 || kept![(long)r * cols + c];
                int code = keep ? Quant.Code(row[c], scale, zero, bits) : zero;
                double q = Quant.Value(code, scale, zero);
                codes[(long)r * cols + c] = (byte)code;
                deq[(long)r * cols + c] = q;
                if (hinv == null) continue;
                double err = (row[c] - q) / hinv[(long)c * cols + c];
                for (int j = c + 1; j < cols; j++) row[j] -= err * hinv[(long)c * cols + j];
            }
        });
        return new Result(codes, scales, zeros, kept, deq, rows, cols, group);
    }

    /// <summary>Row's columns c … c + 3: keep the two of largest saliency w² / d² (d the Cholesky factor's diagonal;
    /// 1 without calibration), as SparseGPT's prunem = 4 does.</summary>
    static void Prune(Span<double> row, double[]? hinv, int cols, int c, bool[] kept, long at)
    {
        Span<double> sal = stackalloc double[4];
        for (int i = 0; i < 4; i++)
        {
            double d = hinv != null ? hinv[(long)(c + i) * cols + c + i] : 1;
            sal[i] = row[c + i] * row[c + i] / (d * d);
        }
        // the two smallest go; ties keep the earlier column
        int a = 0, b = 1;
        if (sal[b] > sal[a]) (a, b) = (b, a);   // a: the larger of the first two
        for (int i = 2; i < 4; i++)
        {
            if (sal[i] > sal[a]) (a, b) = (i, a);
            else if (sal[i] > sal[b]) b = i;
        }
        for (int i = 0; i < 4; i++) kept[at + c + i] = i == a || i == b;
    }

    /// <summary>The upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ·U), after damping H by <see cref="Damp"/> of its mean
    /// diagonal; inputs never seen (H_ii = 0) get H_ii = 1 and their weights set to 0, as GPTQ's reference does.</summary>
    static double[] InverseCholesky(double[] h0, int n, double[] w, int rows)
    {
        var h = h0.ToArray();
        double mean = 0;
        for (int i = 0; i < n; i++) mean += h[(long)i * n + i];
        mean /= n;
        for (int i = 0; i < n; i++)
        {
            if (h[(long)i * n + i] == 0)
            {
                h[(long)i * n + i] = 1;
                for (int r = 0; r < rows; r++) w[(long)r * n + i] = 0;
            }
            h[(long)i * n + i] += Damp * (mean > 0 ? mean : 1);
        }
        var l = Cholesky(h, n);                   // H = L·Lᵀ
        var inv = InverseFromCholesky(l, n);      // H⁻¹
        var lu = Cholesky(inv, n);                // H⁻¹ = L'·L'ᵀ, so U = L'ᵀ
        var u = new double[(long)n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) u[(long)j * n + i] = lu[(long)i * n + j];
        return u;
    }

    static double[] Cholesky(double[] a, int n) =>
        Linalg.Cholesky(a, n) ?? throw new BitDeltaException("the calibration Hessian is not positive definite after damping (non-finite activations?)");

    /// <summary>A⁻¹ from A = L·Lᵀ: L⁻¹ by forward substitution, then A⁻¹ = L⁻ᵀ·L⁻¹.</summary>
    static double[] InverseFromCholesky(double[] l, int n)
    {
        var li = Linalg.LowerInverse(l, n);
        var inv = new double[(long)n * n];
        Parallel.For(0, n, i =>
        {
            for (int j = 0; j <= i; j++)
            {
                double s = 0;
                for (int k = i; k < n; k++) s += li[(long)k * n + i] * li[(long)k * n + j];
                inv[(long)i * n + j] = s;
                inv[(long)j * n + i] = s;
            }
        });
        return inv;
    }
}

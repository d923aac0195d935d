namespace BitDeltaNative.Kernels;

/// <summary>Every kernel's check, in one list: the tests run them on ILGPU's CPU accelerator (and CUDA
/// when present), and <c>bitdelta audit</c> runs them on the user's GPU.</summary>
public static class Audit
{
    public static IReadOnlyList<AuditCase> All =>
    [
        .. ElementwiseCases.All,
        RmsNorm.Case,
        RmsNorm.PickCase,
        KvCache.Case,
        .. Attention.Cases,
        .. MatMul.Cases,
        GemvOne.Case,
        GemvNorm.Case,
        GemmHalf.Case,
        GemmWgmma.Case,
        BitLinear.Case,
        BitLinear.MaterializeCase,
        .. TenantLinear.Cases,
        Rope.Case,
        RopeCache.Case,
        Embedding.Case,
        Softmax.Case,
        Argmax.Case,
        Sampling.Case,
        CrossEntropy.Case,
        Transpose.Case,
        RandomFill.Case,
        Mma.Case,
        Mma.CaseShuffled,
        Mma.CaseB1,
        Wgmma.Case,
        BitLinear.SignsTCase,
        LowRankCases.Case,
        LowRankCases.ManyCase,
        SparseCases.Case,
        SparseCases.ManyCase,
        Axpy.Case,
        Dot.Case,
    ];

    public sealed record Result(string Kernel, int Cases, double WorstError, double Bound, string WorstShape)
    {
        public bool Passed => WorstError <= Bound;
    }

    /// <summary>Runs <paramref name="cases"/> random cases of every check of <see cref="All"/>; seeds are derived from
    /// <paramref name="seed"/> so a failure can be replayed.</summary>
    public static IEnumerable<Result> Run(Device dev, int cases, int seed, Func<string, bool>? filter = null) =>
        Run(All, dev, cases, seed, filter);

    /// <summary>The same over a list of checks: <see cref="All"/> and the backward ops' (which live in the Autograd
    /// assembly, above this one).</summary>
    public static IEnumerable<Result> Run(IEnumerable<AuditCase> checks, Device dev, int cases, int seed, Func<string, bool>? filter = null)
    {
        foreach (var c in checks)
        {
            if (filter != null && !filter(c.Kernel)) continue;
            double worst = 0;
            string shape = "";
            for (int i = 0; i < cases; i++)
            {
                var (err, s) = c.Run(dev, new Random(HashCode.Combine(seed, c.Kernel.GetHashCode(StringComparison.Ordinal) & 0x7fffffff, i)));
                if (double.IsNaN(err)) err = double.PositiveInfinity;
                if (err >= worst) { worst = err; shape = s; }
            }
            yield return new Result(c.Kernel, cases, worst, c.Bound, shape);
        }
    }
}

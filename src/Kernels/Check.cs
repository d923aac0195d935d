namespace BitDeltaNative.Kernels;

/// <summary>
/// What every kernel test and <c>bitdelta audit</c> share: random data that is never zero, shapes that
/// include 1, primes and sizes just past a tile, and the relative error ‖got − want‖/‖want‖ of
/// DESIGN.md. A case runs the kernel on an ILGPU device and its CPU twin on the same inputs, after
/// poisoning the kernel's output (NaN bytes), so an element the kernel forgot to write fails.
/// </summary>
public static class Check
{
    /// <summary>Runs of rows for the many-tenant audits: 1–14 runs, each of 1–2 rows (decode) or, one time in five, of
    /// 3 to 2 + <paramref name="longMax"/> rows (a prompt), each naming one of <paramref name="items"/>; the runs are back
    /// to back from row 0, and <paramref name="rows"/> is their total.</summary>
    public static List<(int Start, int Count, T Item)> Runs<T>(Random rng, IReadOnlyList<T> items, int longMax, out int rows)
    {
        var runs = new List<(int Start, int Count, T Item)>();
        int n = 1 + rng.Next(14);
        rows = 0;
        for (int i = 0; i < n; i++)
        {
            int count = rng.Next(5) == 0 ? 3 + rng.Next(longMax) : 1 + rng.Next(2);
            runs.Add((rows, count, items[rng.Next(items.Count)]));
            rows += count;
        }
        return runs;
    }

    /// <summary>fp32 throughout.</summary>
    public const double F32Bound = 1e-5;
    /// <summary>fp16/bf16 operands (or outputs) with fp32 accumulation.</summary>
    public const double HalfBound = 1e-2;

    /// <summary>Output poison: 0xFF bytes are a NaN in f32, f16 and bf16.</summary>
    public const byte Poison = 0xFF;

    static readonly int[] Special = [1, 2, 3, 5, 7, 13, 31, 32, 33, 61, 64, 65, 127, 129, 257];

    /// <summary>A size in [1, max]: often an edge (1, a prime, a tile ± 1), else uniform.</summary>
    public static int Size(Random rng, int max)
    {
        if (rng.Next(3) == 0)
        {
            var s = Special.Where(v => v <= max).ToArray();
            return s[rng.Next(s.Length)];
        }
        return rng.Next(1, max + 1);
    }

    /// <summary>Uniform in ±[0.1, 1]·scale: never zero, both signs.</summary>
    public static float Value(Random rng, float scale = 1f)
    {
        float m = 0.1f + 0.9f * (float)rng.NextDouble();
        return (rng.Next(2) == 0 ? m : -m) * scale;
    }

    public static float[] Values(Random rng, long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = Value(rng, scale);
        return a;
    }

    /// <summary>Values rounded to <paramref name="dtype"/> and back, so twin and kernel see the same numbers.</summary>
    public static float[] Rounded(float[] a, DType dtype)
    {
        if (dtype == DType.F32) return a;
        var bytes = new byte[dtype.ByteCount([a.Length])];
        Casts.FromF32(a, dtype, bytes);
        var r = new float[a.Length];
        Casts.ToF32(bytes, dtype, r);
        return r;
    }

    /// <summary>Random sign words for <paramref name="rows"/> rows of <paramref name="inDim"/> signs (Sign1's layout), the
    /// padding bits past in all set, so a kernel that reads them (or a twin that counts them) is caught.</summary>
    public static uint[] Signs(Random rng, int rows, int inDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        var s = new uint[rows * words];
        for (int i = 0; i < s.Length; i++) s[i] = (uint)rng.NextInt64(0, 1L << 32);
        if (inDim % 32 != 0)
            for (int o = 0; o < rows; o++) s[o * words + words - 1] |= ~0u << (inDim % 32);
        return s;
    }

    public static DType FloatType(Random rng) => rng.Next(3) switch { 0 => DType.F16, 1 => DType.BF16, _ => DType.F32 };

    public static double RelativeError(ReadOnlySpan<float> got, ReadOnlySpan<float> want)
    {
        if (got.Length != want.Length) throw new ArgumentException($"lengths {got.Length} and {want.Length}");
        double num = 0, den = 0;
        for (int i = 0; i < got.Length; i++)
        {
            if (!float.IsFinite(got[i]) && !(float.IsInfinity(want[i]) && got[i] == want[i])) return double.PositiveInfinity;
            double d = (double)got[i] - want[i];
            num += d * d;
            den += (double)want[i] * want[i];
        }
        return den == 0 ? (num == 0 ? 0 : double.PositiveInfinity) : Math.Sqrt(num / den);
    }

    /// <summary>‖got − want‖ / ‖magnitude‖, where magnitude[o] = Σ_i |x_i·w_oi| of each output's dot product: f32
    /// summation's error bound scales with it (Higham, Accuracy and Stability of Numerical Algorithms, §3.1), not with
    /// |want|, which cancellation can make small at a single output.</summary>
    public static double ErrorOfDots(ReadOnlySpan<float> got, ReadOnlySpan<float> want, ReadOnlySpan<double> magnitude)
    {
        if (got.Length != want.Length || got.Length != magnitude.Length) throw new ArgumentException($"lengths {got.Length}, {want.Length}, {magnitude.Length}");
        double num = 0, den = 0;
        for (int i = 0; i < got.Length; i++)
        {
            if (!float.IsFinite(got[i])) return double.PositiveInfinity;
            double d = (double)got[i] - want[i];
            num += d * d;
            den += magnitude[i] * magnitude[i];
        }
        return den == 0 ? (num == 0 ? 0 : double.PositiveInfinity) : Math.Sqrt(num / den);
    }

    /// <summary>An output tensor on <paramref name="dev"/>, poisoned.</summary>
    public static Tensor Poisoned(ReadOnlySpan<int> shape, DType dtype, Device dev)
    {
        var t = Tensor.Empty(shape, dtype, dev);
        t.Fill(Poison);
        return t;
    }
}

/// <summary>One kind of check: a kernel's name, its error bound, and a function that draws one random
/// case from the generator, runs kernel and twin, and returns the relative error and the shape drawn.</summary>
public sealed record AuditCase(string Kernel, double Bound, Func<Device, Random, (double Error, string Shape)> Run);

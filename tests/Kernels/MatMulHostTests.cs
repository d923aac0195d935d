using BitDeltaNative.Kernels;
using FsCheck;
using FsCheck.Fluent;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The host matmul (<see cref="MatMul.Host"/>, what <see cref="MatMul.Run"/> does on <see cref="Device.Cpu"/>)
/// against its spec <see cref="MatMul.Twin"/>: ragged shapes (tails of the 4-row W groups, the 2-row x pairs,
/// the vector width and the per-core blocks), every weight dtype, y = and y +=.
/// </summary>
public class MatMulHostTests
{
    /// <summary>Values past either end of y: the host path must not write them.</summary>
    const int Guard = 5;
    const float Sentinel = 12345f;

    [Fact]
    public void Host_matches_the_twin_on_ragged_shapes()
    {
        Prop.ForAll(ArbMap.Default.ArbFor<int>(), seed =>
        {
            var (err, shape) = HostCase(new Random(seed));
            return (err <= Check.F32Bound).Label($"seed {seed}, {shape}: relative error {err:E3} > {Check.F32Bound:E1}");
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(200));
    }

    /// <summary>rows 1..70, in and out 1..300, x at an unaligned offset now and then; y poisoned (NaN) unless
    /// accumulating, in which case it starts from random values, so a forgotten store or add shows.</summary>
    static (double Error, string Shape) HostCase(Random rng)
    {
        int rows = Check.Size(rng, 70), inDim = Check.Size(rng, 300), outDim = Check.Size(rng, 300);
        var wt = Check.FloatType(rng);
        bool accumulate = rng.Next(2) == 0;
        int xOffset = rng.Next(4);   // floats: shifts x off any vector alignment
        var x = Check.Values(rng, xOffset + (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), wt);
        var wBytes = new byte[wt.ByteCount([outDim, inDim])];
        Casts.FromF32(w, wt, wBytes);

        var start = accumulate ? Check.Values(rng, (long)rows * outDim, 3f) : null;
        var y = new float[rows * outDim + 2 * Guard];
        Array.Fill(y, Sentinel);
        if (start != null) start.CopyTo(y, Guard);
        else y.AsSpan(Guard, rows * outDim).Fill(float.NaN);

        MatMul.Host(x.AsSpan(xOffset), wBytes, wt, y.AsSpan(Guard, rows * outDim), rows, inDim, outDim, accumulate);

        var want = start ?? new float[rows * outDim];
        MatMul.Twin(x.AsSpan(xOffset), w, want, rows, inDim, outDim, accumulate);
        string shape = $"[{rows}, {inDim}]·[{outDim}, {inDim}]ᵀ w {wt}{(accumulate ? " +=" : "")} x at +{xOffset}";
        if (y.AsSpan(0, Guard).ContainsAnyExcept(Sentinel) || y.AsSpan(Guard + rows * outDim).ContainsAnyExcept(Sentinel))
            return (double.PositiveInfinity, shape + ", wrote outside y");
        return (Check.RelativeError(y.AsSpan(Guard, rows * outDim), want), shape);
    }

    /// <summary>On the managed CPU device every entry point (Run, Gemv, Gemm) goes to the host path:
    /// the audit's matmul cases, run there.</summary>
    [Fact]
    public void Audit_matmul_cases_pass_on_the_cpu_device()
    {
        foreach (var c in MatMul.Cases)
        {
            for (int seed = 0; seed < 40; seed++)
            {
                var (err, shape) = c.Run(Device.Cpu, new Random(seed));
                Assert.True(err <= c.Bound, $"{c.Kernel} on cpu: seed {seed}, {shape}: relative error {err:E3} > {c.Bound:E1}");
            }
        }
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void Run_on_the_cpu_device_takes_leading_dimensions_as_rows(DType wt)
    {
        // x [2, 37, 129] is 74 rows (many blocks in parallel); y is written in full.
        var rng = new Random(7);
        int inDim = 129, outDim = 203;
        var x = Check.Values(rng, 2 * 37 * inDim);
        var w = Check.Rounded(Check.Values(rng, outDim * inDim), wt);
        using var tx = Tensor.From(x, [2, 37, inDim]);
        using var tw = Tensor.From(w, [outDim, inDim], Device.Cpu, wt);
        using var ty = Check.Poisoned([2, 37, outDim], DType.F32, Device.Cpu);
        MatMul.Run(tx, tw, ty);
        var want = new float[74 * outDim];
        MatMul.Twin(x, w, want, 74, inDim, outDim);
        Assert.True(Check.RelativeError(ty.ToFloatArray(), want) <= Check.F32Bound);
    }

    [Fact]
    public void Empty_inner_dimension_gives_zeros_or_leaves_y()
    {
        var y = new[] { float.NaN, float.NaN, float.NaN, float.NaN, float.NaN, float.NaN };
        MatMul.Host([], [], DType.F16, y, rows: 2, inDim: 0, outDim: 3);
        Assert.All(y, v => Assert.Equal(0f, v));
        var z = new[] { 1f, 2f, 3f };
        MatMul.Host([], [], DType.BF16, z, rows: 1, inDim: 0, outDim: 3, accumulate: true);
        Assert.Equal([1f, 2f, 3f], z);
    }

    [Fact]
    public void Short_spans_throw()
    {
        var w = new byte[2 * 4 * 3];
        Assert.Throws<ArgumentException>(() => MatMul.Host(new float[5], w, DType.F16, new float[8], rows: 2, inDim: 3, outDim: 4));
        Assert.Throws<ArgumentException>(() => MatMul.Host(new float[6], w, DType.F32, new float[8], rows: 2, inDim: 3, outDim: 4));
        Assert.Throws<ArgumentException>(() => MatMul.Host(new float[6], w, DType.F16, new float[7], rows: 2, inDim: 3, outDim: 4));
        Assert.Throws<ArgumentException>(() => MatMul.Host(new float[6], w, DType.I32, new float[8], rows: 2, inDim: 3, outDim: 4));
    }
}

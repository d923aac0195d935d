using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// result[index] = (accumulate ? result[index] : 0) + Σ a⊙b over every element of two f32 tensors of equal count
/// (any shape): the gradient of a scale, dα = ⟨x, dy·S⟩ for a BitDelta linear (<c>BitLinearGrad</c>), summed into
/// its slot of the scales' gradient. Deterministic (<see cref="Partials"/>), up to 2³¹ − 1 elements.
/// </summary>
public static class Dot
{
    /// <summary>The spec: f64 sum (onto result[index] in f64), rounded once.</summary>
    public static void Twin(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> result, int index, bool accumulate)
    {
        double s = accumulate ? result[index] : 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        result[index] = (float)s;
    }

    /// <summary>Phase 1 of <see cref="Partials"/>: grid-strided (every step of a warp reads 128 contiguous bytes of
    /// each input), f32 per thread, then the group's sum into partials[group].</summary>
    static void Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> partials, long n)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        float s = 0;
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = (long)Grid.IdxX * Group.DimX + Group.IdxX; i < n; i += stride) s += a[i] * b[i];
        s = Reduce.GroupSum(s, scratch);
        if (Group.IdxX == 0) partials[Grid.IdxX] = s;
    }

    public static void Run(Tensor a, Tensor b, Tensor result, int index, bool accumulate)
    {
        Need.SameDevice(a, b, result);
        Need.F32("dot a", a);
        Need.F32("dot b", b);
        Need.Count("dot b", b, a.ElementCount);
        Partials.NeedResult("dot result", result, index);
        if (a.ElementCount > int.MaxValue) throw new ArgumentException($"dot: at most {int.MaxValue} elements, got {a}");
        if (!result.Device.IsIlgpu)
        {
            Host(a.Host<float>(), b.Host<float>(), result.Host<float>(), index, accumulate);
            return;
        }
        var dev = result.Device;
        int threads = Partials.Threads(dev), groups = Partials.Groups(a.ElementCount, threads);
        using var partials = Tensor.Empty([groups], DType.F32, dev);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long>>(Kernel)(
            new KernelConfig(groups, threads), a.View<float>(), b.View<float>(), partials.View<float>(), a.ElementCount);
        Partials.Finish(partials, groups, result, index, accumulate, 1.0);
    }

    /// <summary>Elements per block of the managed-CPU path: SIMD f32 within a block, blocks added in f64.</summary>
    const int HostBlock = 4096;

    /// <summary>The managed-CPU path: f32 SIMD dot products of 4096-element blocks, added in f64 in block order
    /// (so the result does not depend on the thread schedule).</summary>
    public static unsafe void Host(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> result, int index, bool accumulate)
    {
        int n = a.Length, blocks = (n + HostBlock - 1) / HostBlock;
        var sums = new double[blocks];
        fixed (float* pa = a, pb = b)
        {
            nint A = (nint)pa, B = (nint)pb;
            void Block(int k)
            {
                int at = k * HostBlock, len = Math.Min(HostBlock, n - at);
                sums[k] = TensorPrimitives.Dot(new ReadOnlySpan<float>((float*)A + at, len), new ReadOnlySpan<float>((float*)B + at, len));
            }
            if (blocks < 64) for (int k = 0; k < blocks; k++) Block(k);
            else Parallel.For(0, blocks, Block);
        }
        double s = accumulate ? result[index] : 0;
        foreach (var v in sums) s += v;
        result[index] = (float)s;
    }

    /// <summary>
    /// The error is measured against |result₀| + Σ|aᵢbᵢ|, the scale of what is summed, not against the sum itself:
    /// random signs cancel, and a sum near zero would make any correct f32 summation look wrong. The other elements
    /// of result must come back untouched (else the error is ∞).
    /// </summary>
    public static AuditCase Case => new("dot", Check.F32Bound, (dev, rng) =>
    {
        int n = Check.Size(rng, 20_000), slots = Check.Size(rng, 5), index = rng.Next(slots);
        bool accumulate = rng.Next(2) == 0;
        var a = Check.Values(rng, n, 2f);
        var b = Check.Values(rng, n, 2f);
        var r0 = Check.Values(rng, slots, 10f);
        using var ta = Tensor.From(a, [n], dev);
        using var tb = Tensor.From(b, [n], dev);
        using var tr = Tensor.From(r0, [slots], dev);
        Run(ta, tb, tr, index, accumulate);
        var want = (float[])r0.Clone();
        Twin(a, b, want, index, accumulate);
        return (Error(tr.ToFloatArray(), want, index, (accumulate ? Math.Abs(r0[index]) : 0) + AbsDot(a, b)),
                $"[{n}] into [{slots}][{index}]{(accumulate ? " +=" : "")}");
    });

    /// <summary>|got − want| at <paramref name="index"/> over <paramref name="magnitude"/>; ∞ if any other element
    /// moved or the result is not finite.</summary>
    public static double Error(float[] got, float[] want, int index, double magnitude)
    {
        for (int i = 0; i < got.Length; i++)
            if (i != index && BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i])) return double.PositiveInfinity;
        if (!float.IsFinite(got[index])) return double.PositiveInfinity;
        double d = Math.Abs((double)got[index] - want[index]);
        return d == 0 ? 0 : d / magnitude;
    }

    public static double AbsDot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += Math.Abs((double)a[i] * b[i]);
        return s;
    }
}

using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Deterministic sums over a whole tensor on a device, in two launches and no float atomics (whose order, and so
/// whose rounding, changes from run to run): a first kernel has each of <see cref="Groups"/> groups sum a
/// grid-strided share in f32 and write one partial; <see cref="Finish"/> has one warp add the partials in f64 and
/// write the total. Used by <see cref="Dot"/> and the losses.
/// <para>Precision: a thread adds at most ~<see cref="PerThread"/> terms in f32, the group tree adds log₂(threads)
/// more roundings, and the partials are added in f64: a relative error of about (16 + 8)·2⁻²⁴ ≈ 1.4e-6 of Σ|terms|
/// at worst, a few 1e-7 in practice (the roundings are random in sign).</para>
/// </summary>
public static class Partials
{
    /// <summary>Terms per thread the grid is sized for (fewer groups when there are fewer terms).</summary>
    public const int PerThread = 16;
    /// <summary>At most this many partials: 512·32000 logits are then ~16 terms a thread at 256 threads a group.</summary>
    public const int MaxGroups = 4096;

    /// <summary>Threads per first-phase group: 256 on a GPU; 64 on ILGPU's CPU accelerator, where every thread of a
    /// group is an OS thread meeting at each barrier.</summary>
    public static int Threads(Device dev) => dev.Kind == DeviceKind.IlgpuCpu ? 64 : 256;

    public static int Groups(long n, int threads) => (int)Math.Clamp((n + (long)threads * PerThread - 1) / ((long)threads * PerThread), 1, MaxGroups);

    /// <summary>result[index] = (accumulate ? result[index] : 0) + scale·Σ partials[0 … count), summed and scaled in
    /// f64 and rounded to f32 once. result is f32 1-D.</summary>
    public static void Finish(Tensor partials, int count, Tensor result, int index, bool accumulate, double scale)
    {
        result.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, int, ArrayView<float>, int, int, double>>(FinishKernel)(
            new KernelConfig(1, 32), partials.View<float>(), count, result.View<float>(), index, accumulate ? 1 : 0, scale);
    }

    /// <summary>One warp: lane l adds partials l, l + 32, … in f64, then a shuffle tree in f64.</summary>
    static void FinishKernel(ArrayView<float> partials, int count, ArrayView<float> result, int index, int accumulate, double scale)
    {
        double s = 0;
        for (int i = Group.IdxX; i < count; i += Group.DimX) s += partials[i];
        for (int o = 16; o > 0; o /= 2) s += Warp.ShuffleDown(s, o);
        if (Group.IdxX == 0) result[index] = (float)((accumulate != 0 ? result[index] : 0.0) + scale * s);
    }

    /// <summary>Checks shared by the ops that write one element of a 1-D f32 result.</summary>
    internal static void NeedResult(string what, Tensor result, int index)
    {
        Need.F32(what, result);
        if (result.Rank != 1 || (uint)index >= (uint)result.Dim(0))
            throw new ArgumentException($"{what}: expected a 1-D tensor with an element {index}, got {result}");
    }
}

using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>Reductions inside one thread group (block): a warp reduces by shuffles, then warp 0
/// reduces the per-warp partials from shared memory. Every thread of the group gets the result.
/// Call from every thread of the group (it has barriers).</summary>
public static class Reduce
{
    public static float WarpSum(float v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2) v += Warp.ShuffleDown(v, o);
        return Warp.Shuffle(v, 0);
    }

    public static float WarpMax(float v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2) v = MathF.Max(v, Warp.ShuffleDown(v, o));
        return Warp.Shuffle(v, 0);
    }

    /// <summary>Sum over the group. <paramref name="scratch"/> is shared memory of at least 33 floats
    /// (one per warp of a 1024-thread group, plus the result).</summary>
    public static float GroupSum(float v, ArrayView<float> scratch)
    {
        v = WarpSum(v);
        int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
        if (Warp.LaneIdx == 0) scratch[Warp.WarpIdx] = v;
        Group.Barrier();
        if (Warp.WarpIdx == 0)
        {
            float s = Warp.LaneIdx < warps ? scratch[Warp.LaneIdx] : 0f;
            s = WarpSum(s);
            if (Warp.LaneIdx == 0) scratch[32] = s;
        }
        Group.Barrier();
        float r = scratch[32];
        Group.Barrier();   // scratch may be reused right after
        return r;
    }

    public static float GroupMax(float v, ArrayView<float> scratch)
    {
        v = WarpMax(v);
        int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
        if (Warp.LaneIdx == 0) scratch[Warp.WarpIdx] = v;
        Group.Barrier();
        if (Warp.WarpIdx == 0)
        {
            float s = Warp.LaneIdx < warps ? scratch[Warp.LaneIdx] : float.NegativeInfinity;
            s = WarpMax(s);
            if (Warp.LaneIdx == 0) scratch[32] = s;
        }
        Group.Barrier();
        float r = scratch[32];
        Group.Barrier();
        return r;
    }
}

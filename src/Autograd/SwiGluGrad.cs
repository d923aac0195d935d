using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of SwiGLU h = silu(g)·u (forward: <see cref="Kernels.SwiGlu"/>; Shazeer 2020, arXiv 2002.05202), with
/// silu(g) = g·σ(g) and silu′(g) = σ(g) + g·σ(g)·(1 − σ(g)) = σ(g)·(1 + g·(1 − σ(g))):
/// dg = dh·u·silu′(g), du = dh·silu(g).
/// </summary>
public static class SwiGluGrad
{
    /// <summary>The spec, elementwise in f64.</summary>
    public static void Twin(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, ReadOnlySpan<float> dh, Span<float> dGate, Span<float> dUp)
    {
        for (int i = 0; i < dh.Length; i++)
        {
            double g = gate[i], sig = 1 / (1 + Math.Exp(-g));
            dGate[i] = (float)(dh[i] * (double)up[i] * sig * (1 + g * (1 - sig)));
            dUp[i] = (float)(dh[i] * g * sig);
        }
    }

    static void Kernel(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> dh, ArrayView<float> dGate, ArrayView<float> dUp)
    {
        float g = gate[i], sig = 1f / (1f + MathF.Exp(-g)), d = dh[i];
        dGate[i] = d * up[i] * sig * (1f + g * (1f - sig));
        dUp[i] = d * g * sig;
    }

    /// <summary>dGate and dUp (overwritten) from gate, up and dh, all f32 of one element count. The two outputs must
    /// be buffers of their own (checked): neither may share storage with an input or with each other.</summary>
    public static void Run(Tensor gate, Tensor up, Tensor dh, Tensor dGate, Tensor dUp)
    {
        Need.SameDevice(gate, up, dh, dGate, dUp);
        Need.F32("swiglu backward gate", gate);
        Need.F32("swiglu backward up", up);
        Need.F32("swiglu backward dh", dh);
        Need.F32("swiglu backward dgate", dGate);
        Need.F32("swiglu backward dup", dUp);
        long n = gate.ElementCount;
        Need.Count("swiglu backward up", up, n);
        Need.Count("swiglu backward dh", dh, n);
        Need.Count("swiglu backward dgate", dGate, n);
        Need.Count("swiglu backward dup", dUp, n);
        Need.Disjoint("swiglu backward", dGate, dUp, gate);
        Need.Disjoint("swiglu backward", dGate, dUp, up);
        Need.Disjoint("swiglu backward", dGate, dUp, dh);
        if (!dGate.Device.IsIlgpu) Twin(gate.Host<float>(), up.Host<float>(), dh.Host<float>(), dGate.Host<float>(), dUp.Host<float>());
        else if (n > 0)
            dGate.Device.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>>(Kernel)(
                (int)n, gate.View<float>(), up.View<float>(), dh.View<float>(), dGate.View<float>(), dUp.View<float>());
    }
}

using BitDeltaNative.Kernels;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of a BitDelta linear layer (arXiv 2402.10193 §3.1), y = x·W_baseᵀ + α·x·Sᵀ, with S the ±1 signs of
/// Δ packed as <see cref="DType.Sign1"/> (32 per word along the input dimension, least significant bit first,
/// bit 1 = +1; the forward is <see cref="MatMul"/> then <see cref="BitLinear"/>). x [rows, in], y [rows, out].
/// <list type="bullet">
/// <item>dx = dy·(W_base + α·S): dx[r,i] = Σ_o dy[r,o]·(W_base[o,i] + α·S[o,i]).</item>
/// <item>dα = Σ_{r,o} dy[r,o]·(x·Sᵀ)[r,o] = Σ_{r,o} dy[r,o]·Σ_i S[o,i]·x[r,i]: y is linear in α with
/// coefficient x·Sᵀ. This is the only gradient scale distillation trains on (§3.2); W_base and S are frozen.</item>
/// </list>
/// </summary>
public static class BitLinearGrad
{
    /// <summary>The spec: writes dx (omit it with an empty span, e.g. for a first layer whose input needs no
    /// gradient) and returns dα; f64 sums, each result rounded to f32 once.</summary>
    public static float Twin(ReadOnlySpan<float> x, ReadOnlySpan<float> wBase, ReadOnlySpan<uint> signs, float scale,
                             ReadOnlySpan<float> dy, Span<float> dx, int rows, int inDim, int outDim)
    {
        int words = DTypes.SignWordsPerRow(inDim);
        if (!dx.IsEmpty)
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < inDim; i++)
                {
                    double s = 0;
                    for (int o = 0; o < outDim; o++)
                        s += (double)dy[r * outDim + o] * ((double)wBase[o * inDim + i] + (double)scale * BitLinear.Sign(signs, words, o, i));
                    dx[r * inDim + i] = (float)s;
                }
        double dScale = 0;
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
            {
                double xs = 0;
                for (int i = 0; i < inDim; i++) xs += BitLinear.Sign(signs, words, o, i) * (double)x[r * inDim + i];
                dScale += dy[r * outDim + o] * xs;
            }
        return (float)dScale;
    }

    /// <summary>
    /// The backward of one BitDelta linear on tensors. x f32 [rows, in], W_base [out, in] (f16, bf16 or f32), signs
    /// Sign1 [out, in], dy f32 [rows, out]; dScale f32 1-D, the gradients of all scales. With G = dy·S:
    /// <list type="bullet">
    /// <item>dScale[index] += ⟨x, G⟩ (always added: the same scale may serve several calls, and the trainer zeroes
    /// dScale once a step). ⟨x, dy·S⟩ = Σ_{r,o} dy[r,o]·(x·Sᵀ)[r,o], the twin's dα, by associativity.</item>
    /// <item>when <paramref name="dx"/> is given: dx (+)= dy·W_base (<see cref="LinearGrad.Run"/>), then dx += α·G.</item>
    /// </list>
    /// Composed of tested ops: Sᵀ as f32 [in, out] (<see cref="BitLinear.SignsT"/>), G by <see cref="MatMul"/>,
    /// the dot by <see cref="Dot"/>, the sum by <see cref="Axpy"/>; on <see cref="Device.Cpu"/> through their host
    /// paths. Temporaries: Sᵀ (in·out floats) and G (rows·in floats).
    /// </summary>
    public static void Run(Tensor x, Tensor wBase, Tensor signs, float scale, Tensor dy, Tensor? dx, bool accumulateDx, Tensor dScale, int index)
    {
        Need.SameDevice(x, wBase, signs, dy, dScale);
        if (signs.DType != DType.Sign1 || signs.Rank != 2) throw new ArgumentException($"bitlinear backward signs: expected Sign1 [out, in], got {signs}");
        int outDim = signs.Dim(0), inDim = signs.Dim(1);
        Need.F32("bitlinear backward x", x);
        Need.F32("bitlinear backward dy", dy);
        Need.Shape("bitlinear backward base weight", wBase, outDim, inDim);
        if (x.Rank == 0 || x.Dim(-1) != inDim) throw new ArgumentException($"bitlinear backward x: expected last dimension {inDim} (signs {signs}), got {x}");
        long rows = x.ElementCount / Math.Max(inDim, 1);
        if (inDim == 0) rows = dy.ElementCount / Math.Max(outDim, 1);
        Need.Count("bitlinear backward dy", dy, rows * outDim);
        if (rows > int.MaxValue) throw new ArgumentException($"bitlinear backward x: too many rows in {x}");
        var dev = x.Device;
        using var st = Tensor.Empty([inDim, outDim], DType.F32, dev);
        BitLinear.SignsT(signs, inDim, st);
        using var g = Tensor.Empty([(int)rows, inDim], DType.F32, dev);
        using var dy2 = dy.Reshape((int)rows, outDim);
        MatMul.Run(dy2, st, g);
        using var x2 = x.Reshape((int)rows, inDim);
        Dot.Run(x2, g, dScale, index, accumulate: true);
        if (dx == null) return;
        Need.SameDevice(x, dx);
        LinearGrad.Run(dy, wBase, dx, accumulateDx);
        Axpy.Run(scale, g, dx);
    }
}

namespace BitDeltaNative.Autograd;

/// <summary>
/// A value of a differentiated computation on a device: its tensor, whether a gradient must flow back into it
/// (it depends on something that trains), and that gradient once one has. The value is reference-counted so that
/// only what a backward rule reads outlives the forward: the forward holds one reference and drops it with
/// <see cref="Release"/> when it has used the value; each <see cref="Tape"/> step that reads the value in backward
/// holds one more (<see cref="Retain"/>) and drops it after it has run. A value nobody kept is freed as soon as the
/// forward is done with it. The gradient has its own life: it is made by the first rule that adds into it and freed
/// by the rule of the op that made the value, once that has passed it on.
/// </summary>
public sealed class Var
{
    public Tensor Value { get; }
    public bool NeedsGrad { get; }
    /// <summary>dLoss/dValue, f32 with the value's shape; null until something flows into it.</summary>
    public Tensor? Grad { get; private set; }
    int refs = 1;

    public Var(Tensor value, bool needsGrad)
    {
        Value = value;
        NeedsGrad = needsGrad;
    }

    /// <summary>A new f32 value of <paramref name="shape"/> on <paramref name="dev"/> (contents unset).</summary>
    public static Var Empty(ReadOnlySpan<int> shape, Device dev, bool needsGrad) => new(Tensor.Empty(shape, DType.F32, dev), needsGrad);

    public Var Retain()
    {
        if (refs <= 0) throw new InvalidOperationException($"{Value}: retained after it was freed");
        refs++;
        return this;
    }

    public void Release()
    {
        if (refs <= 0) throw new InvalidOperationException($"{Value}: released more often than retained");
        if (--refs > 0) return;
        // Only the value: the gradient may still be on its way back to the op that made this value, whose rule
        // frees it (DropGrad) once it has propagated it.
        Value.Dispose();
    }

    /// <summary>
    /// Adds a gradient into this value: <paramref name="write"/> fills the tensor it is given (overwriting it). The
    /// first contribution is written straight into a new gradient buffer; later ones go through a scratch tensor
    /// and are summed in (a value used twice gets the sum of both uses' gradients).
    /// </summary>
    public void AddGrad(Action<Tensor> write)
    {
        if (!NeedsGrad) throw new InvalidOperationException($"{Value}: gradient for a value that needs none");
        if (Grad == null)
        {
            var g = Tensor.Empty(Value.Shape, DType.F32, Value.Device);
            try { write(g); }
            catch { g.Dispose(); throw; }
            Grad = g;
            return;
        }
        using var scratch = Tensor.Empty(Value.Shape, DType.F32, Value.Device);
        write(scratch);
        Kernels.Axpy.Run(1f, scratch, Grad);
    }

    /// <summary>The gradient buffer, zero-filled on first use, for rules that accumulate into it.</summary>
    public Tensor GradBuffer()
    {
        if (!NeedsGrad) throw new InvalidOperationException($"{Value}: gradient for a value that needs none");
        if (Grad == null)
        {
            Grad = Tensor.Empty(Value.Shape, DType.F32, Value.Device);
            Grad.Fill(0);
        }
        return Grad;
    }

    /// <summary>Frees the gradient: the rule of the op that made this value calls it once it has propagated it.</summary>
    public void DropGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }
}

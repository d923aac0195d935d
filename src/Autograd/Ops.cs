using BitDeltaNative.Kernels;

namespace BitDeltaNative.Autograd;

/// <summary>
/// The Llama forward pass as differentiable ops over <see cref="Var"/>s on one device. Each op runs its forward
/// kernel and, when a gradient must flow (an input needs one or the op has a trained parameter), records on the
/// <see cref="Tape"/> the backward rule (the *Grad kernels, each checked against its CPU twin, and the twins against
/// finite differences), retaining exactly the values that rule reads. Every rule adds into its inputs' gradients
/// and frees its output's gradient once propagated. Activations are f32 [rows, features] as in the inference
/// pass (LlamaModel); weights stay in checkpoint dtype and are frozen: what trains here are
/// the BitDelta scales α (arXiv 2402.10193 §3.2), whose gradients accumulate into a device vector.
/// </summary>
public static class Ops
{
    /// <summary>y = rmsnorm(x)·w (w frozen).</summary>
    public static Var RmsNorm(Tape tape, Var x, Tensor w, float eps)
    {
        var y = Var.Empty(x.Value.Shape, x.Value.Device, x.NeedsGrad);
        Kernels.RmsNorm.Run(x.Value, w, y.Value, eps);
        if (!x.NeedsGrad) return y;
        x.Retain();
        tape.Record(() =>
        {
            if (y.Grad != null) RmsNormGrad.Run(x.Value, w, y.Grad, x.GradBuffer(), eps, accumulate: true);
            y.DropGrad();
            x.Release();
        });
        return y;
    }

    /// <summary>y = x·Wᵀ with W [out, in] frozen (no dW): only dx = dy·W flows.</summary>
    public static Var Linear(Tape tape, Var x, Tensor w)
    {
        int rows = (int)(x.Value.ElementCount / w.Dim(1));
        var y = Var.Empty([rows, w.Dim(0)], x.Value.Device, x.NeedsGrad);
        MatMul.Run(x.Value, w, y.Value);
        if (!x.NeedsGrad) return y;
        tape.Record(() =>
        {
            if (y.Grad != null) LinearGrad.Run(y.Grad, w, x.GradBuffer(), accumulate: true);
            y.DropGrad();
        });
        return y;
    }

    /// <summary>
    /// A BitDelta linear, y = x·(W_base + α·S)ᵀ, whose scale α trains: its gradient, dα = ⟨x, dy·S⟩, is added to
    /// <paramref name="dScales"/>[<paramref name="index"/>]. Keeps x for that; dx flows when x needs it.
    /// </summary>
    public static Var BitLinear(Tape tape, Var x, Tensor wBase, Tensor signs, float scale, Tensor dScales, int index)
    {
        int rows = (int)(x.Value.ElementCount / wBase.Dim(1));
        var y = Var.Empty([rows, wBase.Dim(0)], x.Value.Device, needsGrad: true);
        Kernels.BitLinear.Apply(x.Value, wBase, signs, scale, y.Value);
        x.Retain();
        tape.Record(() =>
        {
            if (y.Grad != null)
                BitLinearGrad.Run(x.Value, wBase, signs, scale, y.Grad, x.NeedsGrad ? x.GradBuffer() : null, accumulateDx: true, dScales, index);
            y.DropGrad();
            x.Release();
        });
        return y;
    }

    /// <summary>Rotary embeddings in place on x [tokens, heads·headDim]; backward rotates the gradient back.</summary>
    public static void Rope(Tape tape, Var x, int heads, Tensor positions, RopeTable table)
    {
        int tokens = (int)(x.Value.ElementCount / ((long)heads * table.HeadDim));
        using (var x3 = x.Value.Reshape(tokens, heads, table.HeadDim))
            Kernels.Rope.Run(x3, positions, table);
        if (!x.NeedsGrad) return;
        // In place: the rule turns the gradient for the rotated value into the gradient for the value before it,
        // which is what the op that made x (recorded earlier, so run later) expects.
        tape.Record(() =>
        {
            if (x.Grad == null) return;
            using var g3 = x.Grad.Reshape(tokens, heads, table.HeadDim);
            RopeGrad.Run(g3, positions, table);
        });
    }

    /// <summary>
    /// Causal attention with GQA and an optional sliding window over <paramref name="sequences"/> sequences of equal
    /// length packed one after another: q [N, H·D], k and v [N, KV·D] (after RoPE), N = sequences·T, token b·T + t at
    /// position t. <paramref name="slots"/> and <paramref name="positions"/> are I32 [N] (b and t per token). The forward
    /// is the inference kernel over a scratch cache; backward recomputes the probabilities (<see cref="AttentionGrad"/>).
    /// </summary>
    public static Var Attention(Tape tape, Var q, Var k, Var v, int heads, int kvHeads, int headDim, int sequences,
                                Tensor slots, Tensor positions, int slidingWindow, float scale)
    {
        var dev = q.Value.Device;
        int n = (int)(q.Value.ElementCount / ((long)heads * headDim)), T = n / sequences;
        if (T * sequences != n) throw new ArgumentException($"attention: {n} tokens are not {sequences} sequences of equal length");
        bool needs = q.NeedsGrad || k.NeedsGrad || v.NeedsGrad;
        var o = Var.Empty([n, heads * headDim], dev, needs);
        using (var kc = Tensor.Empty([sequences, kvHeads, T, headDim], DType.F32, dev))
        using (var vc = Tensor.Empty([sequences, kvHeads, T, headDim], DType.F32, dev))
        using (var q3 = q.Value.Reshape(n, heads, headDim))
        using (var k3 = k.Value.Reshape(n, kvHeads, headDim))
        using (var v3 = v.Value.Reshape(n, kvHeads, headDim))
        using (var o3 = o.Value.Reshape(n, heads, headDim))
        {
            KvCache.Write(k3, v3, kc, vc, slots, positions);
            Kernels.Attention.Run(q3, kc, vc, slots, positions, o3, slidingWindow, scale);
        }
        if (!needs) return o;
        q.Retain(); k.Retain(); v.Retain();
        tape.Record(() =>
        {
            if (o.Grad != null)
            {
                using var dq = Tensor.Empty([n, heads, headDim], DType.F32, dev);
                using var dk = Tensor.Empty([n, kvHeads, headDim], DType.F32, dev);
                using var dv = Tensor.Empty([n, kvHeads, headDim], DType.F32, dev);
                using (var q3 = q.Value.Reshape(n, heads, headDim))
                using (var k3 = k.Value.Reshape(n, kvHeads, headDim))
                using (var v3 = v.Value.Reshape(n, kvHeads, headDim))
                using (var do3 = o.Grad.Reshape(n, heads, headDim))
                    AttentionGrad.Run(q3, k3, v3, do3, dq, dk, dv, sequences, slidingWindow, scale);
                AddInto(q, dq);
                AddInto(k, dk);
                AddInto(v, dv);
            }
            o.DropGrad();
            q.Release(); k.Release(); v.Release();
        });
        return o;
    }

    /// <summary>h = silu(gate)·up, Llama's MLP activation.</summary>
    public static Var SwiGlu(Tape tape, Var gate, Var up)
    {
        bool needs = gate.NeedsGrad || up.NeedsGrad;
        var h = Var.Empty(gate.Value.Shape, gate.Value.Device, needs);
        Kernels.SwiGlu.Run(gate.Value, up.Value, h.Value);
        if (!needs) return h;
        gate.Retain(); up.Retain();
        tape.Record(() =>
        {
            if (h.Grad != null)
            {
                var dev = h.Value.Device;
                using var dg = Tensor.Empty(gate.Value.Shape, DType.F32, dev);
                using var du = Tensor.Empty(up.Value.Shape, DType.F32, dev);
                SwiGluGrad.Run(gate.Value, up.Value, h.Grad, dg, du);
                AddInto(gate, dg);
                AddInto(up, du);
            }
            h.DropGrad();
            gate.Release(); up.Release();
        });
        return h;
    }

    /// <summary>y = a + b (the residual stream); the gradient passes to both unchanged.</summary>
    public static Var Add(Tape tape, Var a, Var b)
    {
        bool needs = a.NeedsGrad || b.NeedsGrad;
        var y = Var.Empty(a.Value.Shape, a.Value.Device, needs);
        Kernels.Add.Run(a.Value, b.Value, y.Value);
        if (!needs) return y;
        tape.Record(() =>
        {
            if (y.Grad != null)
            {
                if (a.NeedsGrad) Axpy.Run(1f, y.Grad, a.GradBuffer());
                if (b.NeedsGrad) Axpy.Run(1f, y.Grad, b.GradBuffer());
            }
            y.DropGrad();
        });
        return y;
    }

    /// <summary>
    /// The distillation loss, F.mse_loss(teacher, student) = mean (s − t)² over every element (arXiv 2402.10193 eq. 3
    /// as bitdelta/train.py computes it): writes it to <paramref name="loss"/> (F32 [1]) and sets the student's gradient,
    /// 2(s − t)/N: this seeds the backward pass.
    /// </summary>
    public static void Mse(Var student, Tensor teacher, Tensor loss) =>
        student.AddGrad(g => LossGrad.MseRun(student.Value, teacher, g, loss));

    /// <summary>Adds <paramref name="grad"/> (any shape of the same size, e.g. [tokens, heads, headDim]) into x's gradient.</summary>
    static void AddInto(Var x, Tensor grad)
    {
        if (!x.NeedsGrad) return;
        using var view = grad.Reshape(x.Value.Shape.ToArray());
        x.AddGrad(g => g.CopyFrom(view));
    }
}

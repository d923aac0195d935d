using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

// Elementwise ops over f32 activations, one thread per element (coalesced, one pass over memory).
// Each op: Twin (the CPU spec), Kernel (ILGPU), Run (launches either, by the tensors' device).

public static class Add
{
    public static void Twin(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = a[i] + b[i];
    }

    static void Kernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] + b[i];

    /// <summary>y = a + b (y may be a or b).</summary>
    public static void Run(Tensor a, Tensor b, Tensor y) => Binary.Run(a, b, y, Twin, Kernel);
}

public static class Mul
{
    public static void Twin(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = a[i] * b[i];
    }

    static void Kernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] * b[i];

    /// <summary>y = a ⊙ b (y may be a or b).</summary>
    public static void Run(Tensor a, Tensor b, Tensor y) => Binary.Run(a, b, y, Twin, Kernel);
}

/// <summary>SiLU(a)·b, the SwiGLU of Llama's MLP: down(SiLU(gate(x)) · up(x)).</summary>
public static class SwiGlu
{
    public static void Twin(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = Silu.Of(gate[i]) * up[i];
    }

    /// <summary>Grouped explicitly so that it is launched dependent (DependentLaunch.cs): between the gate/up and down
    /// linears of a multi-tenant decode step, it starts while the one ahead finishes.</summary>
    static void Kernel(ArrayView<float> gate, ArrayView<float> up, ArrayView<float> y, int n)
    {
        GridDependency.Release();
        GridDependency.Wait();
        int i = Grid.GlobalIndex.X;
        if (i < n) y[i] = gate[i] / (1f + MathF.Exp(-gate[i])) * up[i];
    }

    public static void Run(Tensor gate, Tensor up, Tensor y) => Binary.RunGrouped(gate, up, y, Twin, Kernel);
}

/// <summary>SiLU(x) = x·σ(x) = x / (1 + e^−x).</summary>
public static class Silu
{
    public static float Of(float x) => x / (1f + MathF.Exp(-x));

    public static void Twin(ReadOnlySpan<float> x, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = Of(x[i]);
    }

    static void Kernel(Index1D i, ArrayView<float> x, ArrayView<float> y) => y[i] = x[i] / (1f + MathF.Exp(-x[i]));

    public static void Run(Tensor x, Tensor y)
    {
        Need.SameDevice(x, y);
        Need.F32("silu x", x);
        Need.F32("silu y", y);
        Need.Count("silu y", y, x.ElementCount);
        if (!y.Device.IsIlgpu) Twin(x.Host<float>(), y.Host<float>());
        else if (y.ElementCount > 0)
            y.Device.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>>>(Kernel)((int)y.ElementCount, x.View<float>(), y.View<float>());
    }
}

/// <summary>y = s·x.</summary>
public static class Scale
{
    public static void Twin(ReadOnlySpan<float> x, float s, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = s * x[i];
    }

    static void Kernel(Index1D i, ArrayView<float> x, float s, ArrayView<float> y) => y[i] = s * x[i];

    public static void Run(Tensor x, float s, Tensor y)
    {
        Need.SameDevice(x, y);
        Need.F32("scale x", x);
        Need.F32("scale y", y);
        Need.Count("scale y", y, x.ElementCount);
        if (!y.Device.IsIlgpu) Twin(x.Host<float>(), s, y.Host<float>());
        else if (y.ElementCount > 0)
            y.Device.Kernel<Action<Index1D, ArrayView<float>, float, ArrayView<float>>>(Kernel)((int)y.ElementCount, x.View<float>(), s, y.View<float>());
    }
}

/// <summary>y += a·x (BLAS saxpy): the backward sums a scaled gradient into one that already holds others
/// (e.g. α·dy·S into dx of a BitDelta linear).</summary>
public static class Axpy
{
    public static void Twin(float a, ReadOnlySpan<float> x, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] += a * x[i];
    }

    static void Kernel(Index1D i, float a, ArrayView<float> x, ArrayView<float> y) => y[i] += a * x[i];

    public static void Run(float a, Tensor x, Tensor y)
    {
        Need.SameDevice(x, y);
        Need.F32("axpy x", x);
        Need.F32("axpy y", y);
        Need.Count("axpy y", y, x.ElementCount);
        if (!y.Device.IsIlgpu) Twin(a, x.Host<float>(), y.Host<float>());
        else if (y.ElementCount > 0)
            y.Device.Kernel<Action<Index1D, float, ArrayView<float>, ArrayView<float>>>(Kernel)((int)y.ElementCount, a, x.View<float>(), y.View<float>());
    }

    /// <summary>y starts random, so a kernel that overwrites instead of adding fails. The kernel may fuse the
    /// multiply-add (one rounding, the twin has two): a few ulps, within the f32 bound.</summary>
    public static AuditCase Case => new("axpy", Check.F32Bound, (dev, rng) =>
    {
        int n = Check.Size(rng, 70_000);
        float a = Check.Value(rng, 2f);
        var x = Check.Values(rng, n, 4f);
        var want = Check.Values(rng, n, 4f);
        using var tx = Tensor.From(x, [n], dev);
        using var ty = Tensor.From(want, [n], dev);
        Run(a, tx, ty);
        Twin(a, x, want);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{n}] a {a:G3}");
    });
}

static class Binary
{
    public delegate void TwinFn(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y);

    /// <summary>a, b and y f32 of one count on one device.</summary>
    static void Need3(Tensor a, Tensor b, Tensor y)
    {
        Need.SameDevice(a, b, y);
        Need.F32("a", a);
        Need.F32("b", b);
        Need.F32("y", y);
        Need.Count("b", b, a.ElementCount);
        Need.Count("y", y, a.ElementCount);
    }

    public static void Run(Tensor a, Tensor b, Tensor y, TwinFn twin, Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> kernel)
    {
        Need3(a, b, y);
        if (!y.Device.IsIlgpu) twin(a.Host<float>(), b.Host<float>(), y.Host<float>());
        else if (y.ElementCount > 0) y.Device.Kernel(kernel)((int)y.ElementCount, a.View<float>(), b.View<float>(), y.View<float>());
    }

    /// <summary>As <see cref="Run"/>, for an explicitly grouped kernel that takes the element count last (one thread an
    /// element, groups of 256), so that Device.GroupedKernel may launch it dependent.</summary>
    public static void RunGrouped(Tensor a, Tensor b, Tensor y, TwinFn twin, Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, int> kernel)
    {
        Need3(a, b, y);
        int n = (int)y.ElementCount;
        if (!y.Device.IsIlgpu) twin(a.Host<float>(), b.Host<float>(), y.Host<float>());
        else if (n > 0)
            y.Device.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>>(kernel)(
                new KernelConfig((n + 255) / 256, 256), a.View<float>(), b.View<float>(), y.View<float>(), n);
    }

    /// <summary>Audit case for a binary op: random length, random non-zero values.</summary>
    public static AuditCase Case(string name, Action<Tensor, Tensor, Tensor> run, TwinFn twin) => new(name, Check.F32Bound, (dev, rng) =>
    {
        int n = Check.Size(rng, 70_000);
        var a = Check.Values(rng, n, 4f);
        var b = Check.Values(rng, n, 4f);
        using var ta = Tensor.From(a, [n], dev);
        using var tb = Tensor.From(b, [n], dev);
        using var ty = Check.Poisoned([n], DType.F32, dev);
        run(ta, tb, ty);
        var want = new float[n];
        twin(a, b, want);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{n}]");
    });
}

public static class ElementwiseCases
{
    public static IEnumerable<AuditCase> All =>
    [
        Binary.Case("add", Add.Run, Add.Twin),
        Binary.Case("mul", Mul.Run, Mul.Twin),
        Binary.Case("swiglu", SwiGlu.Run, SwiGlu.Twin),
        Unary("silu", Silu.Run, Silu.Twin),
        Unary("scale", (x, y) => Scale.Run(x, -0.37f, y), (x, y) => Scale.Twin(x, -0.37f, y)),
        CastCase(DType.F16), CastCase(DType.BF16),
    ];

    delegate void UnaryTwin(ReadOnlySpan<float> x, Span<float> y);

    static AuditCase Unary(string name, Action<Tensor, Tensor> run, UnaryTwin twin) => new(name, Check.F32Bound, (dev, rng) =>
    {
        int n = Check.Size(rng, 70_000);
        var x = Check.Values(rng, n, 6f);
        using var tx = Tensor.From(x, [n], dev);
        using var ty = Check.Poisoned([n], DType.F32, dev);
        run(tx, ty);
        var want = new float[n];
        twin(x, want);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{n}]");
    });

    /// <summary>The casts of <see cref="Casts"/> are exact functions: the kernel must equal the host bit for bit.</summary>
    static AuditCase CastCase(DType to) => new($"cast f32->{to.ToString().ToLowerInvariant()}->f32", 0, (dev, rng) =>
    {
        int n = Check.Size(rng, 70_000);
        var x = Check.Values(rng, n, MathF.Pow(2, rng.Next(-20, 16)));
        using var tx = Tensor.From(x, [n], dev);
        using var narrow = tx.Cast(to);
        using var back = narrow.Cast(DType.F32);
        return (Check.RelativeError(back.ToFloatArray(), Check.Rounded(x, to)), $"[{n}]");
    });
}

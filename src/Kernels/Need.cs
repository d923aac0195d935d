namespace BitDeltaNative.Kernels;

/// <summary>Argument checks shared by the ops. A mismatch here is a programming error in the caller
/// (shapes come from a validated config), so it throws ArgumentException with both tensors named.</summary>
internal static class Need
{
    public static void SameDevice(Tensor a, params Tensor[] others)
    {
        foreach (var o in others)
            if (o.Device != a.Device) throw new ArgumentException($"{a} and {o} are on different devices");
    }

    public static void F32(string what, Tensor t)
    {
        if (t.DType != DType.F32) throw new ArgumentException($"{what}: expected F32, got {t}");
    }

    public static void Float(string what, Tensor t)
    {
        if (!t.DType.IsFloat()) throw new ArgumentException($"{what}: expected F32, F16 or BF16, got {t}");
    }

    public static void Count(string what, Tensor t, long n)
    {
        if (t.ElementCount != n) throw new ArgumentException($"{what}: expected {n} elements, got {t}");
    }

    public static void Shape(string what, Tensor t, params int[] shape)
    {
        if (!t.Shape.SequenceEqual(shape)) throw new ArgumentException($"{what}: expected shape [{string.Join(", ", shape)}], got {t}");
    }

    /// <summary>Host f32 values of any float tensor on the managed CPU device (a copy for f16/bf16).</summary>
    public static float[] HostF32(Tensor t) => t.DType == DType.F32 ? t.Host<float>().ToArray() : t.ToFloatArray();
}

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

    /// <summary>
    /// No two of <paramref name="tensors"/> share a byte of storage: for ops whose outputs must not overwrite an
    /// input (or each other) before it is read. Cheap: it compares address ranges, host or device.
    /// </summary>
    public static void Disjoint(string what, params Tensor[] tensors)
    {
        for (int i = 0; i < tensors.Length; i++)
            for (int j = i + 1; j < tensors.Length; j++)
            {
                var (a0, a1) = Range(tensors[i]);
                var (b0, b1) = Range(tensors[j]);
                if (a0 < b1 && b0 < a1) throw new ArgumentException($"{what}: {tensors[i]} and {tensors[j]} share storage; pass distinct buffers");
            }
    }

    static unsafe (long Start, long End) Range(Tensor t)
    {
        if (t.ByteLength == 0) return (0, 0);
        if (!t.Device.IsIlgpu)
            fixed (byte* p = t.HostBytes) return ((long)p, (long)p + t.ByteLength);
        var v = t.View<byte>();
        long start = ((ILGPU.IArrayView)v).Buffer.NativePtr.ToInt64() + ((ILGPU.IContiguousArrayView)v).IndexInBytes;
        return (start, start + t.ByteLength);
    }

    /// <summary>The rows of a delta term y += x·Δᵀ (BitLinear, LowRankLinear, SparseLinear): x f32 [.., in], y f32 with
    /// rows·out elements, rows the product of x's leading dimensions.</summary>
    public static long DeltaRows(string what, Tensor x, Tensor y, int inDim, int outDim)
    {
        F32(what + " x", x);
        F32(what + " y", y);
        if (x.Rank == 0 || x.Dim(-1) != inDim) throw new ArgumentException($"{what} x: expected last dimension {inDim}, got {x}");
        long rows = 1;   // the leading dimensions (this way in = 0 still has rows)
        for (int i = 0; i < x.Rank - 1; i++) rows *= x.Dim(i);
        Count(what + " y", y, rows * outDim);
        return rows;
    }

    /// <summary>Host f32 values of any float tensor on the managed CPU device (a copy for f16/bf16).</summary>
    public static float[] HostF32(Tensor t) => t.DType == DType.F32 ? t.Host<float>().ToArray() : t.ToFloatArray();
}

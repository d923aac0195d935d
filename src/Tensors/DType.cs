namespace BitDeltaNative;

/// <summary>Element types. The first group are what tensors compute with; the rest exist so that any
/// safetensors header a Llama/Mistral checkpoint can hold is parsed and checked.</summary>
public enum DType
{
    F32, F16, BF16, I32,
    /// <summary>1-bit signs packed 32 per uint32 word along the last dimension, least significant bit
    /// first; each row padded to whole words. Bit 1 means +1, bit 0 means −1 (BitDelta, arXiv 2402.10193 §3.1).</summary>
    Sign1,
    U8, I8, I16, U16, U32, I64, U64, F64, Bool, F8E4M3, F8E5M2,
}

public static class DTypes
{
    /// <summary>Bytes per element; for <see cref="DType.Sign1"/> the size of one packed word.</summary>
    public static int ElementSize(this DType t) => t switch
    {
        DType.U8 or DType.I8 or DType.Bool or DType.F8E4M3 or DType.F8E5M2 => 1,
        DType.F16 or DType.BF16 or DType.I16 or DType.U16 => 2,
        DType.F32 or DType.I32 or DType.U32 or DType.Sign1 => 4,
        DType.F64 or DType.I64 or DType.U64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Bytes that a contiguous tensor of this shape occupies; checked against overflow.</summary>
    public static long ByteCount(this DType t, ReadOnlySpan<int> shape)
    {
        if (t == DType.Sign1)
        {
            if (shape.Length == 0) return 4;
            long rows = 1;
            for (int i = 0; i < shape.Length - 1; i++) rows = checked(rows * shape[i]);
            return checked(rows * SignWordsPerRow(shape[^1]) * 4);
        }
        long n = 1;
        foreach (var d in shape) n = checked(n * d);
        return checked(n * t.ElementSize());
    }

    public static int SignWordsPerRow(int columns) => (columns + 31) / 32;

    /// <summary>The dtype's name in safetensors headers (https://github.com/huggingface/safetensors).
    /// Packed signs are stored as U32 words.</summary>
    public static string SafetensorsName(this DType t) => t switch
    {
        DType.F32 => "F32", DType.F16 => "F16", DType.BF16 => "BF16", DType.I32 => "I32",
        DType.Sign1 => "U32", DType.U8 => "U8", DType.I8 => "I8", DType.I16 => "I16",
        DType.U16 => "U16", DType.U32 => "U32", DType.I64 => "I64", DType.U64 => "U64",
        DType.F64 => "F64", DType.Bool => "BOOL", DType.F8E4M3 => "F8_E4M3", DType.F8E5M2 => "F8_E5M2",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static bool TryParseSafetensors(string name, out DType t)
    {
        t = name switch
        {
            "F32" => DType.F32, "F16" => DType.F16, "BF16" => DType.BF16, "I32" => DType.I32,
            "U8" => DType.U8, "I8" => DType.I8, "I16" => DType.I16, "U16" => DType.U16,
            "U32" => DType.U32, "I64" => DType.I64, "U64" => DType.U64, "F64" => DType.F64,
            "BOOL" => DType.Bool, "F8_E4M3" => DType.F8E4M3, "F8_E5M2" => DType.F8E5M2,
            _ => (DType)(-1),
        };
        return (int)t >= 0;
    }

    /// <summary>Parses a dtype as the CLI and config files spell it: f32/float32, f16/float16, bf16/bfloat16.</summary>
    public static DType Parse(string s) => s.ToLowerInvariant() switch
    {
        "f32" or "float32" or "float" => DType.F32,
        "f16" or "float16" or "half" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        "i32" or "int32" => DType.I32,
        _ => throw new BitDeltaException($"unknown dtype '{s}' (expected f32, f16 or bf16)"),
    };

    public static bool IsFloat(this DType t) => t is DType.F32 or DType.F16 or DType.BF16;
}

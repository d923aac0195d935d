namespace BitDeltaNative.Models;

/// <summary>
/// The key/value cache, preallocated for <see cref="Slots"/> sequences of up to <see cref="MaxSeq"/> tokens:
/// per layer a K and a V tensor [slots, kv_heads, max_seq, head_dim], in the kernels' layout
/// (<see cref="Kernels.KvCache"/>). A sequence owns one slot for its life; positions index the third axis.
/// </summary>
public sealed class KvCacheMemory : IDisposable
{
    public Tensor[] K { get; }
    public Tensor[] V { get; }
    public int Slots { get; }
    public int MaxSeq { get; }
    public DType DType { get; }

    public KvCacheMemory(LlamaConfig cfg, int slots, int maxSeq, DType dtype, Device device)
    {
        if (slots < 1) throw new BitDeltaException($"KV cache: at least one sequence slot is needed, got {slots}");
        if (maxSeq < 1) throw new BitDeltaException($"KV cache: max tokens must be positive, got {maxSeq}");
        Slots = slots;
        MaxSeq = maxSeq;
        DType = dtype;
        K = new Tensor[cfg.NumLayers];
        V = new Tensor[cfg.NumLayers];
        int[] shape = [slots, cfg.NumKvHeads, maxSeq, cfg.HeadDim];
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            K[l] = Tensor.Empty(shape, dtype, device);
            V[l] = Tensor.Empty(shape, dtype, device);
        }
    }

    public long ByteLength => K.Sum(t => t.ByteLength) + V.Sum(t => t.ByteLength);

    /// <summary>What a cache of these dimensions holds, before making one (keys and values, every layer).</summary>
    public static long ByteCount(LlamaConfig cfg, int slots, int maxSeq, DType dtype) =>
        2L * cfg.NumLayers * dtype.ByteCount([slots, cfg.NumKvHeads, maxSeq, cfg.HeadDim]);

    public void Dispose()
    {
        foreach (var t in K) t.Dispose();
        foreach (var t in V) t.Dispose();
    }
}

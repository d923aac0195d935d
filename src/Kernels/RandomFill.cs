using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Deterministic pseudo-random contents for a tensor, made where it lives: element i gets a value from a hash of
/// (seed, i) (SplitMix64's finalizer), so a 7B-shaped model's 13.5 GB of weights are made on the GPU in
/// milliseconds instead of being drawn on the host and copied. Float tensors get scale·u with u uniform in
/// [−1, 1); Sign1 tensors get random words (bits past the last column are whatever the hash gives: readers ignore
/// them). For benchmarks at real shapes without a checkpoint (<c>bitdelta bench multitenant --random-7b</c>).
/// </summary>
public static class RandomFill
{
    /// <summary>SplitMix64 (Steele, Lea and Flood 2014) of seed + i: uncorrelated for neighbouring i.</summary>
    public static ulong Hash(ulong seed, long i)
    {
        ulong z = seed + 0x9E3779B97F4A7C15UL * (ulong)(i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>u in [−1, 1) from the top 24 bits of the hash: exact in f32.</summary>
    public static float Uniform(ulong h) => (int)(h >> 40) * (1f / (1 << 23)) - 1f;

    /// <summary>The spec: element i (or word i of a Sign1 tensor) as <see cref="Hash"/> and <see cref="Uniform"/> make it.</summary>
    public static void Twin(Span<byte> bytes, DType dtype, ulong seed, float scale)
    {
        if (dtype == DType.Sign1)
        {
            var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(bytes);
            for (int i = 0; i < words.Length; i++) words[i] = (uint)Hash(seed, i);
            return;
        }
        var v = new float[bytes.Length / dtype.ElementSize()];
        for (int i = 0; i < v.Length; i++) v[i] = scale * Uniform(Hash(seed, i));
        Casts.FromF32(v, dtype, bytes);
    }

    public static void Run(Tensor t, ulong seed, float scale = 1f)
    {
        if (t.DType != DType.Sign1) Need.Float("random fill", t);
        if (t.ByteLength == 0) return;
        if (!t.Device.IsIlgpu)
        {
            Twin(t.HostBytes, t.DType, seed, scale);
            return;
        }
        if (t.DType == DType.Sign1)
        {
            long n = t.ByteLength / 4;
            t.Device.Kernel<Action<Index1D, ArrayView<uint>, ulong, long>>(WordsKernel)((int)Math.Min(n, 1 << 24), t.View<uint>(), seed, n);
        }
        else
        {
            long n = t.ElementCount;
            t.Device.Kernel<Action<Index1D, ArrayView<ushort>, int, ulong, float, long>>(FloatKernel)(
                (int)Math.Min(n, 1 << 24), Elem.View(t), Elem.Code(t.DType), seed, scale, n);
        }
    }

    /// <summary>A grid of at most 2²⁴ threads, each striding over the tensor (a 7B matrix has more elements than a
    /// grid dimension takes).</summary>
    static void WordsKernel(Index1D i, ArrayView<uint> w, ulong seed, long n)
    {
        for (long e = i; e < n; e += 1 << 24) w[e] = (uint)Hash(seed, e);
    }

    static void FloatKernel(Index1D i, ArrayView<ushort> v, int code, ulong seed, float scale, long n)
    {
        for (long e = i; e < n; e += 1 << 24) Elem.Store(v, e, code, scale * Uniform(Hash(seed, e)));
    }

    public static AuditCase Case => new("random fill", 0, (dev, rng) =>
    {
        var dt = rng.Next(4) switch { 0 => DType.F16, 1 => DType.BF16, 2 => DType.F32, _ => DType.Sign1 };
        int rows = Check.Size(rng, 9), cols = Check.Size(rng, 300);
        ulong seed = (ulong)rng.NextInt64();
        float scale = Check.Value(rng, 0.1f);
        using var t = Check.Poisoned([rows, cols], dt, dev);
        Run(t, seed, scale);
        var want = new byte[t.ByteLength];
        Twin(want, dt, seed, scale);
        var got = t.ToArray<byte>();
        double diff = got.AsSpan().SequenceEqual(want) ? 0 : 1;
        return (diff, $"{dt}[{rows}, {cols}]");
    });
}

using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The key/value cache of one layer: K and V are each <c>[slots, nKvHeads, maxSeq, headDim]</c> in f16,
/// bf16 or f32. A slot is one sequence's row of the cache (the scheduler hands slots out); position p of
/// that sequence lives at <c>[slot, h, p, :]</c>, so one head's keys of one sequence are one contiguous
/// run of <c>maxSeq · headDim</c> elements, which the attention kernels read with coalesced loads.
/// <para>
/// A token whose slot or position lies outside the cache is a padding token: it is not written (and
/// <see cref="Attention"/> gives it a zero output). Slot −1 is the way to say so, as vLLM's
/// PAD_SLOT_ID does. Two tokens of one launch must not name the same (slot, position): the kernel
/// writes them in no fixed order.
/// </para>
/// </summary>
public static class KvCache
{
    /// <summary>The spec: token t's k and v rows (f32 <c>[T, nKvHeads, headDim]</c>) go to
    /// <c>cache[slot_t, h, pos_t, :]</c>, rounded to the cache's dtype. The caches are raw bytes of
    /// <paramref name="cacheType"/>.</summary>
    public static void Twin(ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<byte> kCache, Span<byte> vCache, DType cacheType,
                            ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, int nSlots, int nKvHeads, int maxSeq, int headDim)
    {
        for (int t = 0; t < slots.Length; t++)
        {
            int slot = slots[t], pos = positions[t];
            if (!InCache(slot, pos, nSlots, maxSeq)) continue;
            for (int h = 0; h < nKvHeads; h++)
            {
                long dst = (((long)slot * nKvHeads + h) * maxSeq + pos) * headDim;
                long src = ((long)t * nKvHeads + h) * headDim;
                for (int d = 0; d < headDim; d++)
                {
                    HostElem.Store(kCache, cacheType, dst + d, k[(int)(src + d)]);
                    HostElem.Store(vCache, cacheType, dst + d, v[(int)(src + d)]);
                }
            }
        }
    }

    public static bool InCache(int slot, int pos, int nSlots, int maxSeq) => slot >= 0 && slot < nSlots && pos >= 0 && pos < maxSeq;

    /// <summary>One thread per (token, head, element): consecutive threads write consecutive elements
    /// of one cache row, so reads and writes are coalesced.</summary>
    static void WriteKernel(Index1D i, ArrayView<float> k, ArrayView<float> v, ArrayView<ushort> kCache, ArrayView<ushort> vCache, int code,
                            ArrayView<int> slots, ArrayView<int> positions, int nSlots, int nKvHeads, int maxSeq, int headDim)
    {
        int d = i % headDim;
        int row = i / headDim;              // t · nKvHeads + h
        int h = row % nKvHeads, t = row / nKvHeads;
        int slot = slots[t], pos = positions[t];
        if (slot < 0 || slot >= nSlots || pos < 0 || pos >= maxSeq) return;
        long dst = (((long)slot * nKvHeads + h) * maxSeq + pos) * headDim + d;
        Elem.Store(kCache, dst, code, k[i]);
        Elem.Store(vCache, dst, code, v[i]);
    }

    /// <summary>Writes token t's k and v (f32 <c>[T, nKvHeads, headDim]</c>) to
    /// <c>kCache/vCache[slots[t], h, positions[t], :]</c>; slots and positions are I32 <c>[T]</c>.</summary>
    public static void Write(Tensor k, Tensor v, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions)
    {
        Need.SameDevice(k, v, kCache, vCache, slots, positions);
        var (nSlots, nKvHeads, maxSeq, headDim) = CheckCache(kCache, vCache);
        Need.F32("kv write k", k);
        Need.F32("kv write v", v);
        int tokens = k.Rank == 3 ? k.Dim(0) : -1;
        Need.Shape("kv write k", k, tokens, nKvHeads, headDim);
        Need.Shape("kv write v", v, tokens, nKvHeads, headDim);
        CheckTokens(slots, positions, tokens);
        if (k.ElementCount == 0) return;
        if (!k.Device.IsIlgpu)
        {
            Twin(k.Host<float>(), v.Host<float>(), kCache.HostBytes, vCache.HostBytes, kCache.DType,
                 slots.Host<int>(), positions.Host<int>(), nSlots, nKvHeads, maxSeq, headDim);
            return;
        }
        k.Device.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, int,
                               ArrayView<int>, ArrayView<int>, int, int, int, int>>(WriteKernel)(
            (int)k.ElementCount, k.View<float>(), v.View<float>(), Elem.View(kCache), Elem.View(vCache), Elem.Code(kCache.DType),
            slots.View<int>(), positions.View<int>(), nSlots, nKvHeads, maxSeq, headDim);
    }

    /// <summary>Checks a K/V cache pair and returns its dimensions.</summary>
    internal static (int Slots, int KvHeads, int MaxSeq, int HeadDim) CheckCache(Tensor kCache, Tensor vCache)
    {
        Need.Float("k cache", kCache);
        if (kCache.Rank != 4) throw new ArgumentException($"k cache: expected [slots, nKvHeads, maxSeq, headDim], got {kCache}");
        if (vCache.DType != kCache.DType) throw new ArgumentException($"v cache {vCache} and k cache {kCache} differ in dtype");
        Need.Shape("v cache", vCache, kCache.Shape.ToArray());
        return (kCache.Dim(0), kCache.Dim(1), kCache.Dim(2), kCache.Dim(3));
    }

    internal static void CheckTokens(Tensor slots, Tensor positions, int tokens)
    {
        if (slots.DType != DType.I32) throw new ArgumentException($"slots: expected I32, got {slots}");
        if (positions.DType != DType.I32) throw new ArgumentException($"positions: expected I32, got {positions}");
        Need.Shape("slots", slots, tokens);
        Need.Shape("positions", positions, tokens);
    }

    /// <summary>Tokens for the cache writes' audits: distinct (slot, position) pairs, and about one in
    /// <paramref name="padOneIn"/> a padding token (slot −1).</summary>
    internal static (int[] Slots, int[] Positions) DrawTokens(Random rng, int tokens, int nSlots, int maxSeq, int padOneIn)
    {
        var taken = new HashSet<(int, int)>();
        var slots = new int[tokens];
        var positions = new int[tokens];
        for (int t = 0; t < tokens; t++)
        {
            if (rng.Next(padOneIn) == 0) { slots[t] = -1; positions[t] = rng.Next(maxSeq); continue; }
            int s, p;
            do { s = rng.Next(nSlots); p = rng.Next(maxSeq); } while (!taken.Add((s, p)));
            slots[t] = s;
            positions[t] = p;
        }
        return (slots, positions);
    }

    /// <summary>Random cache over random earlier contents; tokens at distinct (slot, position) pairs,
    /// some of them padding (slot −1). The write is exact (the kernel rounds as <see cref="Casts"/>
    /// does), so the bound is 0. The caches are not poisoned: they are updated in place, and every
    /// element the op must leave alone is checked to be unchanged.</summary>
    public static AuditCase Case => new("kv cache write", 0, (dev, rng) =>
    {
        int nSlots = Check.Size(rng, 5), nKv = Check.Size(rng, 4), maxSeq = Check.Size(rng, 70), headDim = HeadDims.Draw(rng);
        var ct = Check.FloatType(rng);
        var (slots, positions) = DrawTokens(rng, Math.Min(Check.Size(rng, 40), nSlots * maxSeq), nSlots, maxSeq, padOneIn: 8);
        int tokens = slots.Length;
        int[] cacheShape = [nSlots, nKv, maxSeq, headDim];
        long cacheCount = (long)nSlots * nKv * maxSeq * headDim;
        var k = Check.Values(rng, (long)tokens * nKv * headDim);
        var v = Check.Values(rng, (long)tokens * nKv * headDim);
        var kOld = Check.Rounded(Check.Values(rng, cacheCount), ct);
        var vOld = Check.Rounded(Check.Values(rng, cacheCount), ct);
        using var tk = Tensor.From(k, [tokens, nKv, headDim], dev);
        using var tv = Tensor.From(v, [tokens, nKv, headDim], dev);
        using var tkc = Tensor.From(kOld, cacheShape, dev, ct);
        using var tvc = Tensor.From(vOld, cacheShape, dev, ct);
        using var ts = Tensor.From(slots, [tokens], dev);
        using var tp = Tensor.From(positions, [tokens], dev);
        Write(tk, tv, tkc, tvc, ts, tp);

        var kWant = HostElem.Bytes(kOld, ct);
        var vWant = HostElem.Bytes(vOld, ct);
        Twin(k, v, kWant, vWant, ct, slots, positions, nSlots, nKv, maxSeq, headDim);
        var got = tkc.ToFloatArray().Concat(tvc.ToFloatArray()).ToArray();
        var want = HostElem.Floats(kWant, ct, cacheCount).Concat(HostElem.Floats(vWant, ct, cacheCount)).ToArray();
        return (Check.RelativeError(got, want), $"T {tokens}, cache [{nSlots}, {nKv}, {maxSeq}, {headDim}] {ct}");
    });
}

/// <summary>Scalar access to one element of a host float tensor's bytes (f16, bf16 or f32): what the
/// twins use to read and write caches in place, with no copy of the whole cache.</summary>
internal static class HostElem
{
    public static float Load(ReadOnlySpan<byte> b, DType t, long i) => t switch
    {
        DType.F16 => Casts.F16ToF32(BitConverter.ToUInt16(b.Slice((int)(2 * i), 2))),
        DType.BF16 => Casts.Bf16ToF32(BitConverter.ToUInt16(b.Slice((int)(2 * i), 2))),
        DType.F32 => BitConverter.ToSingle(b.Slice((int)(4 * i), 4)),
        _ => throw new NotSupportedException($"{t} is not a float dtype"),
    };

    public static void Store(Span<byte> b, DType t, long i, float x)
    {
        switch (t)
        {
            case DType.F16: BitConverter.TryWriteBytes(b.Slice((int)(2 * i), 2), Casts.F32ToF16(x)); break;
            case DType.BF16: BitConverter.TryWriteBytes(b.Slice((int)(2 * i), 2), Casts.F32ToBf16(x)); break;
            case DType.F32: BitConverter.TryWriteBytes(b.Slice((int)(4 * i), 4), x); break;
            default: throw new NotSupportedException($"{t} is not a float dtype");
        }
    }

    public static byte[] Bytes(float[] values, DType t)
    {
        var b = new byte[t.ByteCount([values.Length])];
        Casts.FromF32(values, t, b);
        return b;
    }

    public static float[] Floats(byte[] bytes, DType t, long count)
    {
        var f = new float[count];
        Casts.ToF32(bytes, t, f);
        return f;
    }
}

/// <summary>Head sizes the attention tests draw: Llama's and Mistral's 128, 64, and odd ones as the
/// tiny fixtures use.</summary>
internal static class HeadDims
{
    static readonly int[] Common = [128, 64, 8, 40, 1, 31, 33, 127, 100, 124];   // 100, 124: the decode kernel's whole-share loads with lanes past the head

    public static int Draw(Random rng) => rng.Next(2) == 0 ? Common[rng.Next(Common.Length)] : rng.Next(1, Attention.MaxHeadDim + 1);
}

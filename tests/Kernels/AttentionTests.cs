using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// Attention over the KV cache as a model step uses it: k/v written with <see cref="KvCache.Write"/>,
/// then <see cref="Attention.Run"/>, against the twins; and the sliding window checked against a sum
/// written out by hand, on a case where the keys just outside the window would dominate if they leaked in.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class AttentionTests
{
    const int Slots = 4, KvHeads = 2, Heads = 4, HeadDim = 40, MaxSeq = 80;
    const DType CacheType = DType.F16;

    /// <summary>One batch of three sequences: a fresh prompt (slot 2, positions 0..35), a decode step of a
    /// sequence with 50 cached tokens (slot 0, position 50) in the middle of the batch, and the next prompt
    /// chunk of a sequence with 20 cached tokens (slot 3, positions 20..48). T = 66, so Run takes the prefill
    /// kernel. Then a decode step of all three (T = 3: the decode kernel), and the same step forced through the
    /// prefill kernel.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    [InlineData(25)]
    public void Mixed_batch_of_prefill_and_decode_matches_the_twin(int window)
    {
        foreach (var dev in TestDevices.All)
        {
            var rng = new Random(1234 + window);
            long cacheCount = (long)Slots * KvHeads * MaxSeq * HeadDim;
            // Random history everywhere, so a key read past a query's position or before its window shows.
            var kHost = HostBytes(Check.Values(rng, cacheCount));
            var vHost = HostBytes(Check.Values(rng, cacheCount));
            int[] cacheShape = [Slots, KvHeads, MaxSeq, HeadDim];
            using var kc = Tensor.From(Floats(kHost), cacheShape, dev, CacheType);
            using var vc = Tensor.From(Floats(vHost), cacheShape, dev, CacheType);

            var slots = new List<int>();
            var positions = new List<int>();
            for (int p = 0; p < 36; p++) { slots.Add(2); positions.Add(p); }
            slots.Add(0); positions.Add(50);
            for (int p = 20; p < 49; p++) { slots.Add(3); positions.Add(p); }
            Assert.True(slots.Count > Attention.DecodeMaxTokens);
            Step(dev, rng, kc, vc, kHost, vHost, [.. slots], [.. positions], window, (q, k, v, s, p, o, w, sc) => Attention.Run(q, k, v, s, p, o, w, sc));

            int[] next = [2, 0, 3], nextPos = [36, 51, 49];
            Step(dev, rng, kc, vc, kHost, vHost, next, nextPos, window, (q, k, v, s, p, o, w, sc) => Attention.Run(q, k, v, s, p, o, w, sc));
            Step(dev, rng, kc, vc, kHost, vHost, next, [37, 52, 50], window, Attention.Prefill);
        }
    }

    delegate void AttentionOp(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, Tensor output, int window, float scale);

    /// <summary>Writes the tokens' k/v and attends, on the device and in the twins (which keep their own
    /// copy of the cache bytes), and compares.</summary>
    static void Step(Device dev, Random rng, Tensor kc, Tensor vc, byte[] kHost, byte[] vHost,
                     int[] slots, int[] positions, int window, AttentionOp op)
    {
        int tokens = slots.Length;
        float scale = 1f / MathF.Sqrt(HeadDim);
        var k = Check.Values(rng, tokens * KvHeads * HeadDim);
        var v = Check.Values(rng, tokens * KvHeads * HeadDim);
        var q = Check.Values(rng, tokens * Heads * HeadDim, 3f);
        using var tk = Tensor.From(k, [tokens, KvHeads, HeadDim], dev);
        using var tv = Tensor.From(v, [tokens, KvHeads, HeadDim], dev);
        using var tq = Tensor.From(q, [tokens, Heads, HeadDim], dev);
        using var ts = Tensor.From(slots, [tokens], dev);
        using var tp = Tensor.From(positions, [tokens], dev);
        using var output = Check.Poisoned([tokens, Heads, HeadDim], DType.F32, dev);
        KvCache.Write(tk, tv, kc, vc, ts, tp);
        op(tq, kc, vc, ts, tp, output, window, scale);

        KvCache.Twin(k, v, kHost, vHost, CacheType, slots, positions, Slots, KvHeads, MaxSeq, HeadDim);
        var want = new float[q.Length];
        Attention.Twin(q, kHost, vHost, CacheType, slots, positions, want, Heads, Slots, KvHeads, MaxSeq, HeadDim, window, scale);
        double err = Check.RelativeError(output.ToFloatArray(), want);
        Assert.True(err <= Check.F32Bound, $"{dev}, window {window}, T {tokens}: relative error {err:E3}");
        Assert.Equal(Floats(kHost), kc.ToFloatArray());
    }

    /// <summary>
    /// A query at position p with window 8 sees positions p−7..p and nothing before (transformers'
    /// <c>kv_idx &gt; q_idx - sliding_window</c>). The keys before the earliest query's window are made to
    /// align with q (score ≈ 8.5 against ≈ 0) and carry V = +10; the others carry V ≈ −1. Were any of them let
    /// in, the output would move from ≈ −1 to ≈ +10; for the earliest query the first key outside its window
    /// is one of them, so an off-by-one shows too. Checked for the twin (managed CPU) and both kernels, for a
    /// decode token at 40 and for prompt tokens at 38..40 (each with its own window).
    /// </summary>
    [Fact]
    public void Sliding_window_excludes_keys_before_it()
    {
        const int D = 8, W = 8, Seq = 48, H = 2;
        float scale = 1f / MathF.Sqrt(D);
        var devices = new List<Device> { Device.Cpu };
        devices.AddRange(TestDevices.All);
        foreach (int[] positions in new[] { new[] { 40 }, [38, 39, 40] })
        {
            int outside = positions[0] - W;   // keys 0..outside are outside every query's window
            var rng = new Random(7);
            var k = new float[Seq * D];
            var v = new float[Seq * D];
            for (int j = 0; j < Seq; j++)
                for (int d = 0; d < D; d++)
                {
                    k[j * D + d] = j <= outside ? 3f : 0.1f * Check.Value(rng);
                    v[j * D + d] = j <= outside ? 10f : -1f + 0.1f * Check.Value(rng);
                }

            // q is all ones and both query heads share the single kv head: one answer per token, twice.
            float[] Manual(int pos, int first)
            {
                var o = new double[D];
                double sum = 0;
                for (int j = first; j <= pos; j++)
                {
                    double s = 0;
                    for (int d = 0; d < D; d++) s += k[j * D + d];
                    double p = Math.Exp(scale * s);
                    sum += p;
                    for (int d = 0; d < D; d++) o[d] += p * v[j * D + d];
                }
                var row = o.Select(x => (float)(x / sum)).ToArray();
                return [.. row, .. row];
            }

            Assert.True(Check.RelativeError(Manual(positions[0], outside), Manual(positions[0], outside + 1)) > 1,
                        "one key more (the first outside the window) must change the output completely");
            int tokens = positions.Length;
            foreach (var dev in devices)
            {
                using var kc = Tensor.From(k, [1, 1, Seq, D], dev);
                using var vc = Tensor.From(v, [1, 1, Seq, D], dev);
                using var tq = Tensor.From(Enumerable.Repeat(1f, tokens * H * D).ToArray(), [tokens, H, D], dev);
                using var ts = Tensor.From(new int[tokens], [tokens], dev);
                using var tp = Tensor.From(positions, [tokens], dev);
                foreach (var (name, op) in new (string, AttentionOp)[] { ("decode", (q, k, v, s, p, o, w, sc) => Attention.Decode(q, k, v, s, p, o, w, sc)), ("prefill", Attention.Prefill) })
                {
                    using var output = Check.Poisoned([tokens, H, D], DType.F32, dev);
                    op(tq, kc, vc, ts, tp, output, W, scale);
                    var got = output.ToFloatArray();
                    for (int t = 0; t < tokens; t++)
                    {
                        var row = got.AsSpan(t * H * D, H * D);
                        string where = $"{dev} {name}, query at {positions[t]}";
                        Assert.True(Check.RelativeError(row, Manual(positions[t], positions[t] - W + 1)) <= Check.F32Bound, where);
                        Assert.True(row.ToArray().All(x => x < 0), $"{where}: a key before the window leaked in");
                    }
                }
                // Without the window the old keys dominate: the window is what keeps them out.
                using var full = Check.Poisoned([tokens, H, D], DType.F32, dev);
                Attention.Run(tq, kc, vc, ts, tp, full, 0, scale);
                Assert.True(full.ToFloatArray().All(x => x > 9), $"{dev}: without a window the old keys should dominate");
            }
        }
    }

    /// <summary>A window at least as long as the sequence is no window.</summary>
    [Fact]
    public void Window_longer_than_the_sequence_changes_nothing()
    {
        var rng = new Random(3);
        const int D = 16, Seq = 30, H = 2;
        var kc = Check.Values(rng, Seq * D);
        var vc = Check.Values(rng, Seq * D);
        var q = Check.Values(rng, 3 * H * D, 2f);
        int[] slots = [0, 0, 0], positions = [27, 28, 29];
        foreach (var dev in TestDevices.All)
        {
            using var tk = Tensor.From(kc, [1, 1, Seq, D], dev);
            using var tv = Tensor.From(vc, [1, 1, Seq, D], dev);
            using var tq = Tensor.From(q, [3, H, D], dev);
            using var ts = Tensor.From(slots, [3], dev);
            using var tp = Tensor.From(positions, [3], dev);
            using var a = Check.Poisoned([3, H, D], DType.F32, dev);
            using var b = Check.Poisoned([3, H, D], DType.F32, dev);
            Attention.Prefill(tq, tk, tv, ts, tp, a, 0, 0.25f);
            Attention.Decode(tq, tk, tv, ts, tp, b, Seq, 0.25f);
            Assert.True(Check.RelativeError(b.ToFloatArray(), a.ToFloatArray()) <= Check.F32Bound, dev.ToString());
        }
    }

    /// <summary>Decode split over key ranges (flash-decoding) and merged: ranges of 32 and 64 keys over up to 300 positions,
    /// with and without a window, and the caller's bound on the keys (largest position + 1) changes nothing.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(100)]
    public void Decode_split_into_key_ranges_matches_the_twin(int window)
    {
        var rng = new Random(17 + window);
        const int D = 40, Seq = 300, H = 4, Kv = 2, Slots = 2;
        var kc = Check.Values(rng, Slots * Kv * Seq * D);
        var vc = Check.Values(rng, Slots * Kv * Seq * D);
        int[] slots = [0, 1, 1, -1], positions = [299, 150, 5, 7];
        var q = Check.Values(rng, slots.Length * H * D, 3f);
        var want = new float[q.Length];
        Attention.Twin(q, HostBytes(kc), HostBytes(vc), CacheType, slots, positions, want, H, Slots, Kv, Seq, D, window, 0.3f);
        foreach (var dev in TestDevices.All)
        {
            using var tk = Tensor.From(kc, [Slots, Kv, Seq, D], dev, CacheType);
            using var tv = Tensor.From(vc, [Slots, Kv, Seq, D], dev, CacheType);
            using var tq = Tensor.From(q, [slots.Length, H, D], dev);
            using var ts = Tensor.From(slots, [slots.Length], dev);
            using var tp = Tensor.From(positions, [slots.Length], dev);
            foreach (var (keys, split) in new[] { (0, 32), (300, 64), (0, 0) })
            {
                using var o = Check.Poisoned([slots.Length, H, D], DType.F32, dev);
                Attention.Decode(tq, tk, tv, ts, tp, o, window, 0.3f, keys, split);
                double err = Check.RelativeError(o.ToFloatArray(), want);
                Assert.True(err <= Check.F32Bound, $"{dev}, window {window}, keys {keys}, {split} keys a range: relative error {err:E2}");
            }
        }
    }

    static byte[] HostBytes(float[] values)
    {
        var b = new byte[CacheType.ByteCount([values.Length])];
        Casts.FromF32(values, CacheType, b);
        return b;
    }

    static float[] Floats(byte[] bytes)
    {
        var f = new float[bytes.Length / CacheType.ElementSize()];
        Casts.ToF32(bytes, CacheType, f);
        return f;
    }
}

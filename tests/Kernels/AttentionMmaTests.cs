using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The tensor-core prefill attention (AttentionMma.cs) beyond the audit case "attention prefill": the PTX it must hold
/// (one kind of mma a kernel, the head's products unrolled into registers), and a prompt at a real model's head size
/// (128, where every k-step and output tile is used) with grouped-query heads, several key tiles, a window that cuts and
/// a second sequence in the same query tile, for both cache types, against the twin and against the scalar kernel.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class AttentionMmaTests
{
    static string PtxOf(string name) =>
        Ptx.Compile(typeof(Attention).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!);

    [Theory]
    [InlineData("PrefillMmaF16Kernel", "f16.f16", "bf16.bf16", 2)]
    [InlineData("PrefillMmaBf16Kernel", "bf16.bf16", ".f16.f16", 3)]
    public void Ptx_holds_one_kind_of_mma_unrolled_over_the_head(string kernel, string has, string hasNot, int pieces)
    {
        var ptx = PtxOf(kernel);
        File.WriteAllText(Path.Combine(Path.GetTempPath(), kernel + ".ptx"), ptx);
        Assert.Contains($"mma.sync.aligned.m16n8k16.row.col.f32.{has}.f32", ptx);
        Assert.DoesNotContain($"f32{hasNot}.f32", ptx);
        // per tile of 32 keys: S is 8 k-steps × 4 key tiles, P·V 2 key steps × 16 element tiles, each once per piece;
        // fewer in the PTX means a loop was left rolled, and its accumulators indexed at run time
        int mmas = ptx.Split("mma.sync").Length - 1;
        Assert.True(mmas >= (32 + 32) * pieces, $"{mmas} products in the PTX, fewer than a tile's {(32 + 32) * pieces}");
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Prompt_at_head_size_128_matches_the_twin_and_the_scalar_kernel(string device)
    {
        var dev = Device.Parse(device);
        if (!dev.IsIlgpu) return;   // the managed CPU runs the host attention, tested elsewhere
        var rng = new Random(77);
        const int slotsN = 2, kvHeads = 2, heads = 8, headDim = 128, maxSeq = 90;
        foreach (var ct in new[] { DType.F16, DType.BF16 })
            foreach (int window in new[] { 0, 37 })
            {
                int stages = window == 0 ? 2 : 1;   // both ways of staging K and V, over both types
                // a prompt chunk continuing slot 1 at positions 20..84 (65 keys at most: three key tiles), then 5
                // tokens of slot 0 from 0: 70 tokens, query tiles of 16 tokens × 4 heads, the last one mixed
                var slots = new List<int>();
                var positions = new List<int>();
                for (int p = 20; p < 85; p++) { slots.Add(1); positions.Add(p); }
                for (int p = 0; p < 5; p++) { slots.Add(0); positions.Add(p); }
                int tokens = slots.Count;
                long cacheCount = (long)slotsN * kvHeads * maxSeq * headDim;
                var kc = Bytes(Check.Values(rng, cacheCount), ct);
                var vc = Bytes(Check.Values(rng, cacheCount), ct);
                var q = Check.Values(rng, (long)tokens * heads * headDim, 4f);
                int[] shape = [slotsN, kvHeads, maxSeq, headDim];
                using var tq = Tensor.From(q, [tokens, heads, headDim], dev);
                using var tk = Tensor.From(Floats(kc, ct), shape, dev, ct);
                using var tv = Tensor.From(Floats(vc, ct), shape, dev, ct);
                using var ts = Tensor.From(slots.ToArray(), [tokens], dev);
                using var tp = Tensor.From(positions.ToArray(), [tokens], dev);
                using var got = Check.Poisoned([tokens, heads, headDim], DType.F32, dev);
                using var scalar = Check.Poisoned([tokens, heads, headDim], DType.F32, dev);
                float scale = 1f / MathF.Sqrt(headDim);
                Attention.PrefillMmaStages = stages;
                try { Attention.Prefill(tq, tk, tv, ts, tp, got, window, scale); }
                finally { Attention.PrefillMmaStages = 2; }
                Attention.UsePrefillMma = false;
                try { Attention.Prefill(tq, tk, tv, ts, tp, scalar, window, scale); }
                finally { Attention.UsePrefillMma = true; }
                var want = new float[q.Length];
                Attention.Twin(q, kc, vc, ct, [.. slots], [.. positions], want, heads, slotsN, kvHeads, maxSeq, headDim, window, scale);
                double err = Check.RelativeError(got.ToFloatArray(), want), errScalar = Check.RelativeError(scalar.ToFloatArray(), want);
                Assert.True(err <= Check.F32Bound, $"{dev} {ct} window {window}, {stages} stages: tensor cores {err:E3} from the twin");
                Assert.True(errScalar <= Check.F32Bound, $"{dev} {ct} window {window}: scalar kernel {errScalar:E3} from the twin");
            }
    }

    static byte[] Bytes(float[] values, DType t)
    {
        var b = new byte[t.ByteCount([values.Length])];
        Casts.FromF32(values, t, b);
        return b;
    }

    static float[] Floats(byte[] bytes, DType t)
    {
        var f = new float[bytes.Length / t.ElementSize()];
        Casts.ToF32(bytes, t, f);
        return f;
    }
}

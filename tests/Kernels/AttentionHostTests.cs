using BitDeltaNative.Kernels;
using FsCheck;
using FsCheck.Fluent;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The host attention (<see cref="Attention.Host"/>, what <see cref="Attention.Run"/> does on <see cref="Device.Cpu"/>
/// with an f32 cache) against the f64 twin: the audit's attention cases (ragged head sizes, GQA, sliding windows,
/// slots outside the cache, peaked softmax), run on the managed CPU device, where a third of them draw an f32 cache.
/// </summary>
public class AttentionHostTests
{
    [Fact]
    public void Audit_attention_cases_pass_on_the_cpu_device()
    {
        foreach (var c in Attention.Cases)
            Prop.ForAll(ArbMap.Default.ArbFor<int>(), seed =>
            {
                var (err, shape) = c.Run(Device.Cpu, new Random(seed));
                return (err <= c.Bound).Label($"{c.Kernel} on cpu: seed {seed}, {shape}: relative error {err:E3} > {c.Bound:E1}");
            }).Check(Config.QuickThrowOnFailure.WithMaxTest(150));
    }

    [Fact]
    public void Host_matches_the_twin_on_a_long_f32_window()
    {
        var rng = new Random(3);
        int heads = 8, kv = 4, maxSeq = 400, d = 32, tokens = 384;
        var q = Check.Values(rng, (long)tokens * heads * d, 4f);
        var k = Check.Values(rng, (long)kv * maxSeq * d);
        var v = Check.Values(rng, (long)kv * maxSeq * d);
        var slots = new int[tokens];
        var positions = Enumerable.Range(0, tokens).ToArray();
        var got = new float[q.Length];
        var want = new float[q.Length];
        Attention.Host(q, k, v, slots, positions, got, heads, 1, kv, maxSeq, d, 0, 1f / MathF.Sqrt(d));
        var kb = new byte[k.Length * 4];
        var vb = new byte[v.Length * 4];
        Buffer.BlockCopy(k, 0, kb, 0, kb.Length);
        Buffer.BlockCopy(v, 0, vb, 0, vb.Length);
        Attention.Twin(q, kb, vb, DType.F32, slots, positions, want, heads, 1, kv, maxSeq, d, 0, 1f / MathF.Sqrt(d));
        Assert.True(Check.RelativeError(got, want) <= Check.F32Bound, $"relative error {Check.RelativeError(got, want):E3}");
    }
}

using BitDeltaNative.Kernels;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Serving;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// The model's one-row route through <see cref="GemvNorm"/>: on an ILGPU device a one-token step runs each RMSNorm inside
/// the linears that read it (q/k/v in one launch, gate/up with SwiGLU in another, the final norm in the head). Against
/// the same steps with the fused kernel off: logits within f32 rounding, and each step 6 launches a layer and 1 for the
/// head fewer (so the route was taken). For the plain model, a BitDelta delta (decoded as a one-slot pool), and the
/// multi-tenant pool with a tenant's row (the fixtures' fine-tunes bring their own norms) and a base row. A tenant's row
/// takes the norms inside only with <see cref="LlamaModel.FuseTenantRows"/> (off: it did not win on the H200); by default
/// its norms are launches of their own and its q/k/v and gate/up go through the kernel without the norm.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class GemvNormRouteTests(EngineDeltas deltas) : IClassFixture<EngineDeltas>
{
    /// <summary>Every fixture model (f16 and bf16 weights, a tied head, grouped k/v heads) for the plain model; ILGPU's
    /// CPU accelerator runs a model slowly, so the delta and pool cases take the models whose fine-tunes cover what they
    /// need: llama-f16's brings its own final norm (the head's pick), llama3-bf16-tied's its own layer norms.</summary>
    public static TheoryData<string, string> Cases => For(Fixtures.Models);

    public static TheoryData<string, string> DeltaCases => For(["llama-f16"]);

    public static TheoryData<string, string> PoolCases => For(["llama-f16", "llama3-bf16-tied"]);

    static TheoryData<string, string> For(IEnumerable<string> models)
    {
        var d = new TheoryData<string, string>();
        foreach (var m in models)
            foreach (var dev in TestDevices.Names)
                d.Add(m, (string)dev.Data);
        return d;
    }

    /// <summary>Prefill 4 tokens (one logit row), then 3 one-token steps; each step's logits and launches.</summary>
    static (float[] Logits, long Launches)[] Steps(LlamaModel m, Action<int[], int[], KvCacheMemory, Tensor> forward)
    {
        int vocab = m.Config.VocabSize;
        using var cache = m.NewCache(1, 16);
        using var logits = Tensor.Empty([1, vocab], DType.F32, m.Device);
        var ids = new[] { 1, 5 % vocab, 9 % vocab, 13 % vocab };
        var result = new List<(float[], long)>();
        long before = m.Device.Launches;
        forward(ids, [0, 1, 2, 3], cache, logits);
        result.Add((logits.ToFloatArray(), m.Device.Launches - before));
        for (int p = 4; p < 7; p++)
        {
            // the argmax of the last step is the next token, as greedy decoding goes
            var last = result[^1].Item1;
            int next = Array.IndexOf(last, last.Max());
            before = m.Device.Launches;
            forward([next], [p], cache, logits);
            result.Add((logits.ToFloatArray(), m.Device.Launches - before));
        }
        return result.ToArray();
    }

    /// <summary><paramref name="perLayer"/>: the launches a layer saves: 6 with the norms fused (a base row, or a tenant's
    /// with <see cref="LlamaModel.FuseTenantRows"/>), 4 for a tenant's row by default (its norms apart, its linears in two
    /// launches); the head's norm is fused always.</summary>
    static void Compare(LlamaModel m, Action<int[], int[], KvCacheMemory, Tensor> forward, string what, int perLayer = 6)
    {
        (float[] Logits, long Launches)[] fused, plain;
        try
        {
            GemvNorm.Use = false;
            plain = Steps(m, forward);
        }
        finally
        {
            GemvNorm.Use = true;
        }
        fused = Steps(m, forward);
        for (int s = 0; s < fused.Length; s++)
        {
            double err = Check.RelativeError(fused[s].Logits, plain[s].Logits);
            Assert.True(err < 1e-5, $"{what}, step {s}: fused logits off the unfused ones by {err:G3}");
            // The prefill's 4 rows keep the unfused layers, its one logit row takes the head's fused norm. The first two
            // steps of the unfused run (which goes first) also count launches its kernels make once, when first loaded.
            long saved = s == 0 ? 1 : (long)perLayer * m.Config.NumLayers + 1, fewer = plain[s].Launches - fused[s].Launches;
            Assert.True(s >= 2 ? fewer == saved : fewer >= saved,
                $"{what}, step {s}: {plain[s].Launches} launches unfused, {fused[s].Launches} fused; expected {saved} fewer");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Plain_model_steps_match_the_unfused_route(string model, string device)
    {
        using var m = LlamaModel.Load(Fixtures.Model(model), Device.Parse(device));
        Compare(m, (ids, pos, cache, logits) => m.Forward(ids, new int[ids.Length], pos, [ids.Length - 1], cache, logits), $"{model} plain");
    }

    [Theory]
    [MemberData(nameof(DeltaCases))]
    public void Delta_steps_match_the_unfused_route(string model, string device)
    {
        var dev = Device.Parse(device);
        using var m = LlamaModel.Load(Fixtures.Model(model), dev);
        using var delta = DeltaWeights.Load(deltas.For(model).A, Fixtures.Model(model), m.Config, dev);
        Action<int[], int[], KvCacheMemory, Tensor> forward = (ids, pos, cache, logits) => m.Forward(ids, new int[ids.Length], pos, [ids.Length - 1], cache, logits, delta);
        Compare(m, forward, $"{model} delta", perLayer: 4);
        TenantRowsFused(() => Compare(m, forward, $"{model} delta, tenant rows fused"));
    }

    /// <summary>A tenant's one-row steps keep GemvOne's launches by default; the fused kernel's tenant path is checked
    /// with them turned on.</summary>
    static void TenantRowsFused(Action check)
    {
        try
        {
            LlamaModel.FuseTenantRows = true;
            check();
        }
        finally
        {
            LlamaModel.FuseTenantRows = false;
        }
    }

    [Theory]
    [MemberData(nameof(PoolCases))]
    public void Pool_rows_match_the_unfused_route(string model, string device)
    {
        var dev = Device.Parse(device);
        using var m = LlamaModel.Load(Fixtures.Model(model), dev);
        using var pool = new DeltaPool(m.Weights, 2, dev);
        using (var file = DeltaFile.Open(deltas.For(model).B)) Assert.Equal(0, pool.Load(file, "b"));
        Assert.True(pool.AnyOwnNorms);   // so the norms come from the pool's tables, row 1 + slot
        Action<int[], int[], KvCacheMemory, Tensor> Rows(int tenant) => (ids, pos, cache, logits) =>
            m.Forward(ids, new int[ids.Length], pos, [ids.Length - 1], cache, logits, pool, Enumerable.Repeat(tenant, ids.Length).ToArray());
        Compare(m, Rows(-1), $"{model} pool, base row");
        Compare(m, Rows(0), $"{model} pool, tenant row", perLayer: 4);
        TenantRowsFused(() => Compare(m, Rows(0), $"{model} pool, tenant row fused"));
    }
    /// <summary>The one-row kernels go out as dependent launches on CUDA (DependentLaunch.cs: packed by us, launched with
    /// cuLaunchKernelEx, waiting in the kernel for the one ahead). Against ILGPU's own launches of the same kernels: the
    /// same bits, the same launch count, for the plain model (GemvNorm's base kernel, GemvOne's), a delta (GemvOne's
    /// tenant loop), a pool's tenant row fused (GemvNorm's tenant kernel) and a batch of three sequences of two tenants
    /// and the base (the multi-tenant forms). Only where CUDA is a test device.</summary>
    [Fact]
    public void Dependent_launches_give_the_same_bits_as_ilgpus_own()
    {
        var dev = TestDevices.All.FirstOrDefault(d => d.Kind == DeviceKind.Cuda);
        if (dev == null) Assert.Skip("no CUDA device among the test devices: dependent launches are CUDA's (sm_90 and newer)");
        const string model = "llama-f16";
        using var m = LlamaModel.Load(Fixtures.Model(model), dev);
        using var delta = DeltaWeights.Load(deltas.For(model).A, Fixtures.Model(model), m.Config, dev);
        using var pool = new DeltaPool(m.Weights, 2, dev);
        using (var file = DeltaFile.Open(deltas.For(model).B)) Assert.Equal(0, pool.Load(file, "b"));
        var cases = new (string, Action<int[], int[], KvCacheMemory, Tensor>)[]
        {
            ("plain", (ids, pos, cache, logits) => m.Forward(ids, new int[ids.Length], pos, [ids.Length - 1], cache, logits)),
            ("delta", (ids, pos, cache, logits) => m.Forward(ids, new int[ids.Length], pos, [ids.Length - 1], cache, logits, delta)),
            ("pool tenant row fused", (ids, pos, cache, logits) => m.Forward(ids, new int[ids.Length], pos, [ids.Length - 1], cache, logits, pool,
                                                                   Enumerable.Repeat(0, ids.Length).ToArray())),
        };
        using (var fa = DeltaFile.Open(deltas.For(model).A)) Assert.Equal(1, pool.Load(fa, "a"));
        // three sequences in one batch (tenant b, tenant a, the base): the multi-tenant forms, all launched dependent
        float[] Batch()
        {
            int vocab = m.Config.VocabSize;
            using var cache = m.NewCache(3, 16);
            using var logits = Tensor.Empty([3, vocab], DType.F32, dev);
            var all = new List<float>();
            m.Forward([1, 5, 1, 9, 1, 13], [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1], [1, 3, 5], cache, logits, pool, [0, 0, 1, 1, -1, -1]);
            for (int p = 2; p < 6; p++)
            {
                var last = logits.ToFloatArray();
                all.AddRange(last);
                var next = Enumerable.Range(0, 3).Select(r => Array.IndexOf(last, last.Skip(r * vocab).Take(vocab).Max(), r * vocab) - r * vocab).ToArray();
                m.Forward(next, [0, 1, 2], [p, p, p], [0, 1, 2], cache, logits, pool, [0, 1, -1]);
            }
            all.AddRange(logits.ToFloatArray());
            return all.ToArray();
        }
        float[] batchPlain, batchDependent;
        try
        {
            DependentLaunch.Use = false;
            Batch();
            batchPlain = Batch();
            DependentLaunch.Use = true;
            batchDependent = Batch();
        }
        finally
        {
            DependentLaunch.Use = true;
        }
        Assert.True(batchPlain.AsSpan().SequenceEqual(batchDependent), "a three-tenant batch: dependent launches changed the logits");
        foreach (var (what, forward) in cases)
        {
            (float[] Logits, long Launches)[] plain, dependent;
            try
            {
                LlamaModel.FuseTenantRows = what.EndsWith("fused");
                DependentLaunch.Use = false;
                Steps(m, forward);   // once first, so that kernels loaded on first use count in neither run
                plain = Steps(m, forward);
                DependentLaunch.Use = true;
                dependent = Steps(m, forward);
            }
            finally
            {
                DependentLaunch.Use = true;
                LlamaModel.FuseTenantRows = false;
            }
            for (int s = 0; s < plain.Length; s++)
            {
                Assert.True(plain[s].Logits.AsSpan().SequenceEqual(dependent[s].Logits), $"{what}, step {s}: dependent launches changed the logits");
                Assert.Equal(plain[s].Launches, dependent[s].Launches);
            }
        }
    }
}

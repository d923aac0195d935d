using BitDeltaNative.Models;
using BitDeltaNative.Serving;
using BitDeltaNative.Tests.Tensors;
using FsCheck.Xunit;
using Check = BitDeltaNative.Kernels.Check;
using TenantLinear = BitDeltaNative.Kernels.TenantLinear;

namespace BitDeltaNative.Tests.Serving;

/// <summary>
/// Two compressed tenants of each tiny fixture, made once for the class: delta A is the fixture's fine-tune
/// compressed over its base (tests/fixtures/bitdelta/NAME, which also changes some non-linear tensors that the delta
/// stores whole: llama-f16 its final norm and lm_head, llama3-bf16-tied its tied embedding and a layer norm), and
/// delta B is A with every scale multiplied by <see cref="BFactor"/> (the same signs, another fine-tune's strength).
/// </summary>
public sealed class EngineDeltas : IDisposable
{
    public const float BFactor = 2.5f;
    readonly TempDir dir = new();
    readonly Dictionary<string, (string A, string B)> made = [];
    readonly Lock gate = new();

    public (string A, string B) For(string model)
    {
        lock (gate)
        {
            if (made.TryGetValue(model, out var p)) return p;
            string a = dir.File($"{model}.a.safetensors"), b = dir.File($"{model}.b.safetensors");
            Compressor.Compress(Fixtures.Model(model), Fixtures.Dir("bitdelta", model), a);
            using (var f = DeltaFile.Open(a))
                f.WriteWithScales(b, f.Scales().ToDictionary(kv => kv.Key, kv => kv.Value * BFactor), new Dictionary<string, string>());
            return made[model] = (a, b);
        }
    }

    /// <summary>The fixture's fine-tune as a lowrank-mp or sparse-lowbit delta (round to nearest, groups of 32).</summary>
    public string Codec(string model, string codec)
    {
        lock (gate)
        {
            string path = dir.File($"{model}.{codec}.safetensors");
            if (!File.Exists(path))
                CodecCompressor.Compress(Fixtures.Model(model), Fixtures.Dir("bitdelta", model), path, new CodecOptions { Codec = codec, Group = 32 }, null, null);
            return path;
        }
    }

    public void Dispose() => dir.Dispose();
}

/// <summary>
/// The multi-tenant engine (<see cref="Engine"/>) and the pooled forward pass it runs
/// (<see cref="LlamaModel.Forward(ReadOnlySpan{int}, ReadOnlySpan{int}, ReadOnlySpan{int}, ReadOnlySpan{int}, KvCacheMemory, Tensor, DeltaPool, ReadOnlySpan{int})"/>):
/// a batch mixing tenants and the base gives, request by request, what each tenant's compressed fine-tune gives
/// alone through the single-delta path (<see cref="DeltaWeights"/>), on the managed CPU device, on CUDA when present,
/// and (one small case each, see <see cref="Slow"/>) on ILGPU's CPU accelerator; names, capacity and foreign deltas
/// are refused with clear messages; a freed slot is reused; the memory report adds up.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class EngineTests(EngineDeltas deltas) : IClassFixture<EngineDeltas>
{
    const double LogitBound = 1e-5;

    static int[] Prompt(LlamaConfig c, params int[] ids) => c.BosTokenId is int bos ? [bos, .. ids] : ids;

    /// <summary>ILGPU's CPU accelerator emulates each GPU thread with an OS thread: on a 2-core machine one forward step
    /// of a tiny fixture takes about 15 s there (ForwardGoldenTests' three prompts take 45 s).</summary>
    static bool Slow(Device dev) => dev.Kind == DeviceKind.IlgpuCpu;

    /// <summary>Every fixture on the managed CPU device and on CUDA when present; on ILGPU's CPU accelerator, one
    /// fixture (the tied one, whose tenants bring their own embedding, head and a norm: the most wiring).</summary>
    public static TheoryData<string, string> ModelsAndDevices
    {
        get
        {
            var d = new TheoryData<string, string>();
            foreach (var m in Fixtures.Models)
            {
                d.Add(m, "cpu");
                foreach (var n in TestDevices.Names)
                    if (n.Data != "ilgpu-cpu" || m == "llama3-bf16-tied") d.Add(m, n.Data);
            }
            return d;
        }
    }

    public static TheoryData<string> Models => [.. Fixtures.Models];

    /// <summary>Greedy continuations through the single-delta path (or the base alone).</summary>
    static int[][] Alone(LlamaModel m, DeltaWeights? delta, IReadOnlyList<int[]> prompts, int maxNew) =>
        new Generator(m, delta).Generate(prompts, maxNew, new SamplingOptions(), []);

    /// <summary>
    /// generate's default on a GPU (Cli.HalfOnGpu): the KV cache in the weights' half type. Its bytes are half the f32
    /// cache's, and on the fixtures' short prompts greedy decoding picks the same tokens: the cache's rounding (2⁻¹¹
    /// relative for f16, 2⁻⁸ for bf16) moves the logits far less than the gaps between the fixtures' top two. On the
    /// managed CPU device (fast) and CUDA when present; ILGPU's CPU accelerator runs the same kernels as CUDA.
    /// </summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void A_half_kv_cache_holds_half_the_bytes_and_decodes_the_f32_caches_greedy_tokens(string model)
    {
        string baseDir = Fixtures.Model(model);
        foreach (var dev in new[] { Device.Cpu }.Concat(TestDevices.All.Where(d => !Slow(d))))
        {
            using var m = LlamaModel.Load(baseDir, dev);
            var c = m.Config;
            var half = m.Weights.Layers[0].Linears.First().Weight.DType;
            Assert.True(half is DType.F16 or DType.BF16, $"{model}: weights {half}");
            int[][] prompts = [Prompt(c, 5, 17, 9, 30, 2), Prompt(c, 11, 4)];
            var exact = new Generator(m);
            var want = exact.Generate(prompts, 6, new SamplingOptions(), []);
            var fast = new Generator(m) { KvDType = half };
            var got = fast.Generate(prompts, 6, new SamplingOptions(), []);
            Assert.Equal(2L * c.NumLayers * 2 * (prompts[0].Length + 6) * c.KvDim * 4, exact.LastKvCacheBytes);
            Assert.Equal(exact.LastKvCacheBytes / 2, fast.LastKvCacheBytes);
            Assert.Equal(want, got);
        }
    }

    // ---------------------------------------------------------------- generation

    [Theory]
    [MemberData(nameof(ModelsAndDevices))]
    public void A_mixed_batch_generates_for_each_request_what_its_tenant_gives_alone(string model, string device)
    {
        var (pathA, pathB) = deltas.For(model);
        string baseDir = Fixtures.Model(model);
        var dev = Device.Parse(device);
        using var m = LlamaModel.Load(baseDir, dev);
        var c = m.Config;
        using var engine = new Engine(m, 2, baseDir);
        Assert.Equal(0, engine.AddDelta("a", pathA));
        Assert.Equal(1, engine.AddDelta("b", pathB));
        Assert.Equal(["a", "b"], engine.Tenants);

        (string? Tenant, int[] Prompt)[] requests =
        [
            ("a", Prompt(c, 17, 250, 33)),
            ("base", Prompt(c, 5, 99)),
            ("b", Prompt(c, 300, 42, 7, 128, 64)),
            ("a", Prompt(c, 77)),
            (null, Prompt(c, 200, 11, 90, 3)),
            ("b", Prompt(c, 17, 250, 33)),   // the first prompt again, for the other tenant
        ];
        int maxNew = 6;
        // On ILGPU's CPU accelerator: three requests (a, base, b) and two new tokens (a prefill and a decode step, ~30 s).
        if (Slow(dev)) (requests, maxNew) = (requests[..3], 2);
        var streamed = requests.Select(_ => new List<int>()).ToArray();
        var got = engine.Generate(requests, maxNew, new SamplingOptions(), [], (i, t) => streamed[i].Add(t));
        Assert.Equal(requests.Sum(r => r.Prompt.Length), engine.LastStats!.PromptTokens);
        Assert.Equal(requests.Length * maxNew, engine.LastStats.GeneratedTokens);

        // Each request alone through the single-delta path: on the same device, except on ILGPU's CPU accelerator where
        // that would take minutes; there the managed CPU device's answer is the reference.
        var refDev = Slow(dev) ? Device.Cpu : dev;
        using var rm = Slow(dev) ? LlamaModel.Load(baseDir, refDev) : null;
        var r = rm ?? m;
        using var da = DeltaWeights.Load(pathA, baseDir, c, refDev);
        using var db = DeltaWeights.Load(pathB, baseDir, c, refDev);
        DeltaWeights? Of(string? t) => t switch { "a" => da, "b" => db, _ => null };
        for (int i = 0; i < requests.Length; i++)
        {
            var (t, p) = requests[i];
            var want = Alone(r, Of(t), [p], maxNew)[0];
            Assert.Equal(maxNew, want.Length);
            Assert.True(want.SequenceEqual(got[i]), $"{model} on {device}, request {i} ({t ?? "null"}): batch gave [{string.Join(", ", got[i])}], alone [{string.Join(", ", want)}]");
            Assert.Equal(got[i], streamed[i]);
        }

        // Not vacuous: the tenants disagree on the same prompt (and The_tenants_continuations_differ... shows the tokens do).
        var p0 = requests[0].Prompt;
        var la = LastLogits(r, da, p0);
        Assert.True(Check.RelativeError(la, LastLogits(r, db, p0)) > 1e-2, $"{model}: tenants a and b give nearly the same logits");
        Assert.True(Check.RelativeError(la, LastLogits(r, null, p0)) > 1e-2, $"{model}: tenant a gives nearly the base's logits");
    }

    /// <summary>Tenants of all three codecs and the base in one batch (codecs issue): each request gets what its tenant
    /// gives alone through the single-delta path, on the managed CPU device and on CUDA when present.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void A_batch_mixing_codecs_generates_for_each_request_what_its_tenant_gives_alone(string model)
    {
        var (pathA, _) = deltas.For(model);
        string pathL = deltas.Codec(model, "lowrank-mp"), pathS = deltas.Codec(model, "sparse-lowbit");
        string baseDir = Fixtures.Model(model);
        foreach (var dev in new[] { Device.Cpu }.Concat(TestDevices.All.Where(d => !Slow(d))))
        {
            using var m = LlamaModel.Load(baseDir, dev);
            var c = m.Config;
            using var engine = new Engine(m, 3, baseDir);
            engine.AddDelta("lr", pathL);
            engine.AddDelta("a", pathA);
            engine.AddDelta("sp", pathS);
            (string? Tenant, int[] Prompt)[] requests =
            [
                ("sp", Prompt(c, 17, 250, 33)),
                ("lr", Prompt(c, 5, 99)),
                ("a", Prompt(c, 300, 42, 7, 128, 64)),
                ("base", Prompt(c, 77)),
                ("lr", Prompt(c, 17, 250, 33)),
                ("sp", Prompt(c, 200, 11, 90, 3)),
            ];
            var got = engine.Generate(requests, 5, new SamplingOptions(), []);
            using var da = DeltaWeights.Load(pathA, baseDir, c, dev);
            using var dl = DeltaWeights.Load(pathL, baseDir, c, dev);
            using var ds = DeltaWeights.Load(pathS, baseDir, c, dev);
            DeltaWeights? Of(string? t) => t switch { "a" => da, "lr" => dl, "sp" => ds, _ => null };
            for (int i = 0; i < requests.Length; i++)
            {
                var want = Alone(m, Of(requests[i].Tenant), [requests[i].Prompt], 5)[0];
                Assert.True(want.SequenceEqual(got[i]), $"{model} on {dev}, request {i} ({requests[i].Tenant}): batch [{string.Join(", ", got[i])}], alone [{string.Join(", ", want)}]");
            }
            // not vacuous: the codecs' tenants are not the base, nor each other
            var p0 = requests[0].Prompt;
            var ls = LastLogits(m, ds, p0);
            Assert.True(Check.RelativeError(ls, LastLogits(m, null, p0)) > 1e-2, $"{model}: the sparse tenant gives nearly the base's logits");
            Assert.True(Check.RelativeError(ls, LastLogits(m, dl, p0)) > 1e-3, $"{model}: the sparse and low-rank tenants give nearly the same logits");
            Assert.True(engine.Pool.WholeBytes(0) > 0 && engine.Pool.CodecOf(0) == "lowrank-mp");
        }
    }

    static float[] LastLogits(LlamaModel m, DeltaWeights? delta, int[] ids)
    {
        int n = ids.Length;
        using var cache = m.NewCache(1, n);
        using var logits = Tensor.Empty([1, m.Config.VocabSize], DType.F32, m.Device);
        m.Forward(ids, new int[n], Enumerable.Range(0, n).ToArray(), [n - 1], cache, logits, delta);
        return logits.ToFloatArray();
    }

    /// <summary>The engine's mixed batch routes each request to its own tenant: on these prompts the three tenants'
    /// greedy continuations differ, so a request run for the wrong tenant (or the base) would be caught.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void The_tenants_continuations_differ_so_routing_is_checked(string model)
    {
        var (pathA, pathB) = deltas.For(model);
        string baseDir = Fixtures.Model(model);
        using var m = LlamaModel.Load(baseDir, Device.Cpu);
        var c = m.Config;
        using var da = DeltaWeights.Load(pathA, baseDir, c, Device.Cpu);
        using var db = DeltaWeights.Load(pathB, baseDir, c, Device.Cpu);
        int[][] prompts = [Prompt(c, 17, 250, 33), Prompt(c, 5, 99), Prompt(c, 300, 42, 7, 128, 64), Prompt(c, 77), Prompt(c, 200, 11, 90, 3)];
        var ga = Alone(m, da, prompts, 6);
        var gb = Alone(m, db, prompts, 6);
        var g0 = Alone(m, null, prompts, 6);
        int differ = Enumerable.Range(0, prompts.Length).Count(i => !ga[i].SequenceEqual(gb[i]) && !ga[i].SequenceEqual(g0[i]) && !gb[i].SequenceEqual(g0[i]));
        Assert.True(differ >= 1, $"{model}: no prompt on which base, a and b all continue differently");
    }

    /// <summary>Random mixes (tenants, prompt lengths, order, sampling) on the managed CPU device: request i of a
    /// mixed batch equals request i of the same prompts run through its tenant's single-delta generator, greedy or
    /// sampled (the draws depend on the seed, the step and the request's index, not on its batch mates).</summary>
    [Property(MaxTest = 12)]
    public void Random_mixes_equal_each_tenant_run_on_its_own(int seed)
    {
        var rng = new Random(seed);
        const string model = "llama-f16";
        var (pathA, pathB) = deltas.For(model);
        string baseDir = Fixtures.Model(model);
        using var m = LlamaModel.Load(baseDir, Device.Cpu);
        var c = m.Config;
        using var engine = new Engine(m, 3, baseDir);
        // Slots in another order than the names: a slot is not a name.
        engine.AddDelta("b", pathB);
        engine.AddDelta("a", pathA);
        string?[] choices = ["a", "b", "base", null];
        int n = rng.Next(1, 7);
        var requests = Enumerable.Range(0, n).Select(_ =>
            (choices[rng.Next(choices.Length)], Prompt(c, Enumerable.Range(0, rng.Next(1, 9)).Select(_ => rng.Next(3, c.VocabSize)).ToArray()))).ToList();
        var options = rng.Next(2) == 0 ? new SamplingOptions() : new SamplingOptions(Temperature: 0.9f, TopK: rng.Next(0, 50), TopP: 0.95f, Seed: (ulong)rng.Next());
        int maxNew = rng.Next(0, 6);
        var got = engine.Generate(requests, maxNew, options, c.EosTokenIds);

        using var da = DeltaWeights.Load(pathA, baseDir, c, Device.Cpu);
        using var db = DeltaWeights.Load(pathB, baseDir, c, Device.Cpu);
        var prompts = requests.Select(r => r.Item2).ToList();
        var byTenant = new Dictionary<string, int[][]>
        {
            ["a"] = new Generator(m, da).Generate(prompts, maxNew, options, c.EosTokenIds),
            ["b"] = new Generator(m, db).Generate(prompts, maxNew, options, c.EosTokenIds),
            ["base"] = new Generator(m).Generate(prompts, maxNew, options, c.EosTokenIds),
        };
        for (int i = 0; i < n; i++)
            Assert.Equal(byTenant[requests[i].Item1 ?? "base"][i], got[i]);
    }

    // ---------------------------------------------------------------- logits

    public static TheoryData<string, string, bool> LogitCases
    {
        get
        {
            var d = new TheoryData<string, string, bool>();
            foreach (var m in new[] { "mistral-bf16", "llama3-bf16-tied" })
                foreach (var dev in TestDevices.Names.Select(n => n.Data).Prepend("cpu"))
                {
                    // On ILGPU's CPU accelerator (see Slow) one case, ~30 s: the short segments of the Mistral fixture
                    // (the tied fixture's tenants run there in the generation test). Segments of >= PrefillMinRows
                    // tokens, which take the folded GEMM, would take minutes there: on the managed CPU and CUDA only.
                    if (dev == "ilgpu-cpu")
                    {
                        if (m == "mistral-bf16") d.Add(m, dev, false);
                        continue;
                    }
                    d.Add(m, dev, false);
                    d.Add(m, dev, true);
                }
            return d;
        }
    }

    /// <summary>One sequence of a mixed batch: its tenant (pool slot, −1 the base), prompt and next (decode) token.</summary>
    sealed record Seq(int Tenant, int[] Ids, int Next);

    /// <summary>
    /// A mixed prefill (sequences of tenants a, base, b, a in that order, so segments are not sorted and a tenant has
    /// two) then one decode step with one token per sequence (adjacent rows of different tenants), through the pool,
    /// against each sequence run alone with its tenant's <see cref="DeltaWeights"/> (or none): every logit row agrees
    /// to 1e-5 relative. Mistral's sliding window (8) is shorter than the long sequences; the tied fixture's tenants
    /// bring their own embedding (and so their own head) and a layer norm.
    /// </summary>
    [Theory]
    [MemberData(nameof(LogitCases))]
    public void Pooled_forward_logits_equal_each_tenants_own_forward(string model, string device, bool longSegments)
    {
        var (pathA, pathB) = deltas.For(model);
        string baseDir = Fixtures.Model(model);
        var dev = Device.Parse(device);
        using var m = LlamaModel.Load(baseDir, dev);
        var c = m.Config;
        int vocab = c.VocabSize;
        using var engine = new Engine(m, 3, baseDir);
        engine.AddRandom("unused", 3);   // slot 0: a resident tenant no token uses
        int a = engine.AddDelta("a", pathA), b = engine.AddDelta("b", pathB);
        Assert.Equal((1, 2), (a, b));
        // The reference: each sequence alone through the single-delta path, on the same device except on ILGPU's CPU
        // accelerator (a dozen more forward steps there would take minutes): there the managed CPU device's.
        var refDev = Slow(dev) ? Device.Cpu : dev;
        using var rm = Slow(dev) ? LlamaModel.Load(baseDir, refDev) : null;
        var r = rm ?? m;
        using var da = DeltaWeights.Load(pathA, baseDir, c, refDev);
        using var db = DeltaWeights.Load(pathB, baseDir, c, refDev);
        DeltaWeights? Of(int t) => t == a ? da : t == b ? db : null;

        var rng = new Random(11);
        int[] Ids(int n) => Prompt(c, Enumerable.Range(0, n - 1).Select(_ => rng.Next(3, vocab)).ToArray());
        var seqs = new List<Seq> { new(a, Ids(5), 40), new(-1, Ids(3), 41), new(b, Ids(4), 42), new(a, Ids(2), 43) };
        if (longSegments)
        {
            seqs.Insert(1, new(b, Ids(TenantLinear.PrefillMinRows + 6), 44));   // GEMM for a tenant
            seqs.Add(new(-1, Ids(TenantLinear.PrefillMinRows), 45));             // GEMM for the base
            seqs.Add(new(a, Ids(TenantLinear.PrefillMinRows + 1), 46));
        }
        int S = seqs.Count, maxSeq = seqs.Max(s => s.Ids.Length) + 1;

        // Through the pool: one prefill step over every prompt token, then one decode step.
        using var cache = m.NewCache(S, maxSeq);
        var ids = seqs.SelectMany(s => s.Ids).ToArray();
        var slots = seqs.SelectMany((s, i) => Enumerable.Repeat(i, s.Ids.Length)).ToArray();
        var positions = seqs.SelectMany(s => Enumerable.Range(0, s.Ids.Length)).ToArray();
        var tenants = seqs.SelectMany(s => Enumerable.Repeat(s.Tenant, s.Ids.Length)).ToArray();
        int T = ids.Length;
        using var prefill = Tensor.Empty([T, vocab], DType.F32, dev);
        m.Forward(ids, slots, positions, Enumerable.Range(0, T).ToArray(), cache, prefill, engine.Pool, tenants);
        var gotPrefill = prefill.ToFloatArray();
        // The decode step lists the sequences backwards: rows of one sequence's tenant are not where they were.
        var order = Enumerable.Range(0, S).Reverse().ToArray();
        using var decode = Tensor.Empty([S, vocab], DType.F32, dev);
        m.Forward(order.Select(i => seqs[i].Next).ToArray(), order, order.Select(i => seqs[i].Ids.Length).ToArray(),
                  Enumerable.Range(0, S).ToArray(), cache, decode, engine.Pool, order.Select(i => seqs[i].Tenant).ToArray());
        var gotDecode = decode.ToFloatArray();

        (float[] Prefill, float[] Decode) Own(Seq s, DeltaWeights? delta)
        {
            int n = s.Ids.Length;
            using var cache1 = r.NewCache(1, n + 1);
            using var lp = Tensor.Empty([n, vocab], DType.F32, refDev);
            r.Forward(s.Ids, new int[n], Enumerable.Range(0, n).ToArray(), Enumerable.Range(0, n).ToArray(), cache1, lp, delta);
            using var ld = Tensor.Empty([1, vocab], DType.F32, refDev);
            r.Forward([s.Next], [0], [n], [0], cache1, ld, delta);
            return (lp.ToFloatArray(), ld.ToFloatArray());
        }

        int at = 0;
        for (int i = 0; i < S; i++)
        {
            var s = seqs[i];
            int n = s.Ids.Length;
            var (wantPrefill, wantDecode) = Own(s, Of(s.Tenant));
            double ePrefill = Check.RelativeError(gotPrefill.AsSpan(at * vocab, n * vocab), wantPrefill);
            double eDecode = Check.RelativeError(gotDecode.AsSpan(Array.IndexOf(order, i) * vocab, vocab), wantDecode);
            Assert.True(ePrefill <= LogitBound, $"{model} on {device}, sequence {i} (slot {s.Tenant}, {n} tokens): prefill logits relative error {ePrefill:E2}");
            Assert.True(eDecode <= LogitBound, $"{model} on {device}, sequence {i} (slot {s.Tenant}): decode logits relative error {eDecode:E2}");
            if (i == 0)
            {
                // Not vacuous: the same sequence under the other tenant or the base is far off.
                Assert.True(Check.RelativeError(Own(s, db).Prefill, wantPrefill) > 1e-2, $"{model}: tenants a and b agree");
                Assert.True(Check.RelativeError(Own(s, null).Prefill, wantPrefill) > 1e-2, $"{model}: tenant a agrees with the base");
            }
            at += n;
        }
    }

    // ---------------------------------------------------------------- errors

    [Fact]
    public void Unknown_tenants_and_bad_names_are_refused()
    {
        const string model = "llama-f16";
        var (pathA, pathB) = deltas.For(model);
        string baseDir = Fixtures.Model(model);
        using var m = LlamaModel.Load(baseDir, Device.Cpu);
        var c = m.Config;
        using var engine = new Engine(m, 2, baseDir);
        engine.AddDelta("a", pathA);

        var e = Assert.Throws<BitDeltaException>(() => engine.Generate([("a", Prompt(c, 5)), ("nobody", Prompt(c, 6))], 2, new SamplingOptions(), []));
        Assert.Contains("unknown tenant 'nobody'", e.Message);
        Assert.Contains("base, a", e.Message);   // says what is loaded
        Assert.Null(engine.LastStats);            // nothing ran

        foreach (var bad in new[] { "base", "a b", "", "-a", ".x", new string('x', 65), "a/b", "ä" })
        {
            var eb = Assert.Throws<BitDeltaException>(() => engine.AddDelta(bad, pathB));
            Assert.Contains($"'{bad}'", eb.Message);
        }
        Assert.Contains("reserved", Assert.Throws<BitDeltaException>(() => engine.AddDelta("base", pathB)).Message);
        Engine.CheckName(new string('x', 64));
        Engine.CheckName("Llama-2_chat.v1");

        var dup = Assert.Throws<BitDeltaException>(() => engine.AddDelta("a", pathB));
        Assert.Contains("'a' is already loaded", dup.Message);
        Assert.Equal(1, engine.Pool.Loaded);
        Assert.Equal(pathA, engine.Pool.PathOf(0));

        Assert.Equal(1, engine.AddDelta("b", pathB));
        var full = Assert.Throws<BitDeltaException>(() => engine.AddDelta("c", pathA));
        Assert.Contains("all 2 delta slots are in use", full.Message);
        Assert.Throws<BitDeltaException>(() => engine.AddRandom("c", 1));
        Assert.Equal(["a", "b"], engine.Tenants);
        Assert.Throws<BitDeltaException>(() => engine.SlotOf("c"));

        Assert.Contains("unknown tenant 'nobody'", Assert.Throws<BitDeltaException>(() => engine.RemoveDelta("nobody")).Message);
        Assert.Contains("cannot be removed", Assert.Throws<BitDeltaException>(() => engine.RemoveDelta(Engine.BaseName)).Message);
        Assert.Equal(2, engine.Pool.Loaded);
    }

    [Fact]
    public void A_delta_made_from_another_base_is_refused()
    {
        var (mistralA, _) = deltas.For("mistral-bf16");
        var (llamaA, _) = deltas.For("llama-f16");
        string baseDir = Fixtures.Model("llama-f16");
        using (var m = LlamaModel.Load(baseDir, Device.Cpu))
        using (var engine = new Engine(m, 2, baseDir))
        {
            var e = Assert.Throws<BitDeltaException>(() => engine.AddDelta("m", mistralA));
            Assert.Contains(mistralA, e.Message);
            Assert.Contains("another architecture", e.Message);
            Assert.Equal(0, engine.Pool.Loaded);
            Assert.Throws<BitDeltaException>(() => engine.SlotOf("m"));
        }
        // Same architecture, other weights: the fine-tune itself serving as the base.
        string other = Fixtures.Dir("bitdelta", "llama-f16");
        using (var m = LlamaModel.Load(other, Device.Cpu))
        using (var engine = new Engine(m, 2, other))
        {
            var e = Assert.Throws<BitDeltaException>(() => engine.AddDelta("a", llamaA));
            Assert.Contains("other base weights", e.Message);
            Assert.Equal(0, engine.Pool.Loaded);
        }
        // An engine over an in-memory base has nothing to check a file against.
        var cfg = LlamaConfig.Load(baseDir);
        using (var m = new LlamaModel(LlamaWeights.Random(cfg, DType.F32, Device.Cpu, 1), Device.Cpu, 32))
        using (var engine = new Engine(m, 1))
            Assert.Throws<InvalidOperationException>(() => engine.AddDelta("a", llamaA));
    }

    [Fact]
    public void A_removed_tenants_slot_is_reused_and_generates_right()
    {
        const string model = "llama3-bf16-tied";   // its tenants bring an embedding (the tied head) and a norm
        var (pathA, pathB) = deltas.For(model);
        string baseDir = Fixtures.Model(model);
        using var m = LlamaModel.Load(baseDir, Device.Cpu);
        var c = m.Config;
        using var engine = new Engine(m, 2, baseDir);
        Assert.Equal(0, engine.AddDelta("a", pathA));
        Assert.Equal(1, engine.AddDelta("b", pathB));
        int[] p = Prompt(c, 9, 120, 31);
        using var da = DeltaWeights.Load(pathA, baseDir, c, Device.Cpu);
        using var db = DeltaWeights.Load(pathB, baseDir, c, Device.Cpu);
        var wantA = Alone(m, da, [p], 6)[0];
        var wantB = Alone(m, db, [p], 6)[0];
        var wantBase = Alone(m, null, [p], 6)[0];

        engine.RemoveDelta("a");
        Assert.Equal(["b"], engine.Tenants);
        Assert.Contains("unknown tenant 'a'", Assert.Throws<BitDeltaException>(() => engine.SlotOf("a")).Message);
        Assert.Single(engine.Memory().Deltas);
        // Slot 0 is free: the base and b still generate right beside it.
        var mid = engine.Generate([("b", p), ("base", p)], 6, new SamplingOptions(), []);
        Assert.Equal(wantB, mid[0]);
        Assert.Equal(wantBase, mid[1]);

        // B's file again under a new name takes the freed slot 0; the pool is then full until b leaves, and A's file
        // comes back in slot 1.
        Assert.Equal(0, engine.AddDelta("b2", pathB));
        Assert.Contains("in use", Assert.Throws<BitDeltaException>(() => engine.AddDelta("a", pathA)).Message);
        engine.RemoveDelta("b");
        Assert.Equal(1, engine.AddDelta("a", pathA));
        var got = engine.Generate([("a", p), ("b2", p), (null, p)], 6, new SamplingOptions(), []);
        Assert.Equal(wantA, got[0]);
        Assert.Equal(wantB, got[1]);
        Assert.Equal(wantBase, got[2]);
        Assert.NotEqual(wantA, wantB);   // this prompt tells the two tenants apart
    }

    // ---------------------------------------------------------------- memory

    [Theory]
    [MemberData(nameof(Models))]
    public void The_memory_report_counts_base_tenants_pool_and_cache(string model)
    {
        var (pathA, pathB) = deltas.For(model);
        string baseDir = Fixtures.Model(model);
        using var m = LlamaModel.Load(baseDir, Device.Cpu);
        var c = m.Config;
        using var engine = new Engine(m, 3, baseDir);
        var empty = engine.Memory();
        Assert.Equal(m.Weights.ByteLength, empty.BaseBytes);
        Assert.Empty(empty.Deltas);
        Assert.Equal(0, empty.KvCacheBytes);
        long signBytes = m.Weights.Layers.Sum(l => l.Linears.Sum(x => (long)x.Weight.Dim(0) * ((x.Weight.Dim(1) + 31) / 32) * 4));
        Assert.Equal(3 * signBytes, empty.PoolBytes - 4L * 3 * 7 * c.NumLayers - 4L * 4 * c.HiddenSize * (2 * c.NumLayers + 1));

        engine.AddDelta("a", pathA);
        engine.AddDelta("b", pathB);
        engine.AddRandom("r", 1);
        // What a tenant costs: its signs, 4 bytes a scale, its norm rows, and any embedding or lm_head it stores whole.
        long whole;
        using (var f = DeltaFile.Open(pathA))
            whole = f.Replaced.Where(n => n is LlamaWeights.EmbeddingName or LlamaWeights.LmHeadName).Sum(n => { using var t = f.ReplacedTensor(n); return t.ByteLength; });
        long slot = signBytes + 4L * 7 * c.NumLayers + 4L * c.HiddenSize * (2 * c.NumLayers + 1);
        Assert.Equal(slot, engine.Pool.BytesPerSlot);

        int[] p = Prompt(c, 8, 9, 10);
        engine.Generate([("a", p), ("base", Prompt(c, 4)), ("r", p)], 3, new SamplingOptions(), []);
        Assert.True(engine.LastKvCacheBytes > 0);
        // 3 sequences of at most 4 + 3 tokens, K and V per layer, f32.
        Assert.Equal(2L * c.NumLayers * 3 * (p.Length + 3) * c.KvDim * 4, engine.LastKvCacheBytes);
        var r = engine.Memory(engine.LastKvCacheBytes);
        Assert.Equal(m.Weights.ByteLength, r.BaseBytes);
        Assert.Equal(engine.LastKvCacheBytes, r.KvCacheBytes);
        Assert.Equal([("a", slot + whole), ("b", slot + whole), ("r", slot)], r.Deltas);
        Assert.All(r.Deltas, d => Assert.True(d.Bytes >= signBytes));
        Assert.Equal(empty.PoolBytes + 2 * whole, r.PoolBytes);
        Assert.Equal(r.BaseBytes + r.PoolBytes + r.KvCacheBytes, r.Total);
        Assert.Contains("3 delta(s)", r.ToString());

        engine.RemoveDelta("a");
        var after = engine.Memory();
        Assert.Equal([("b", slot + whole), ("r", slot)], after.Deltas);
        Assert.Equal(empty.PoolBytes + whole, after.PoolBytes);
    }
}

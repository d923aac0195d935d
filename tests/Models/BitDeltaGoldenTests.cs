using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// Compression and the delta-aware forward pass against PyTorch (tools/oracle/bitdelta_golden.py): for a fine-tune
/// of each tiny model (tests/fixtures/bitdelta/NAME), our packed signs equal torch's bit for bit, our scales equal
/// torch's f32 mean|Δ|, and the logits of base + delta equal those of the binarized model computed in f32 by
/// transformers, on the managed CPU and on every ILGPU test device. The fine-tunes also change tensors that are not
/// linears (an lm_head, a final norm, a tied embedding, a layer norm), which the delta must carry whole.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class BitDeltaGoldenTests
{
    const double LogitBound = 2e-3;   // as ForwardGoldenTests: f32 against f32, different summation orders

    static string FineTune(string model) => Fixtures.Dir("bitdelta", model);

    public static TheoryData<string, string> Cases
    {
        get
        {
            var d = new TheoryData<string, string>();
            foreach (var m in Fixtures.Models)
            {
                d.Add(m, "cpu");
                foreach (var n in TestDevices.Names) d.Add(m, n.Data);
            }
            return d;
        }
    }

    public static TheoryData<string> Models => [.. Fixtures.Models];

    [Theory]
    [MemberData(nameof(Models))]
    public void Signs_and_scales_equal_pytorchs(string model)
    {
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors");
        var report = Compressor.Compress(Fixtures.Model(model), FineTune(model), path);
        using var golden = SafetensorsFile.Open(Path.Combine(FineTune(model), "goldens.safetensors"));
        using var delta = DeltaFile.Open(path);
        int linears = golden.Entries.Count(e => e.Name.StartsWith("signs.", StringComparison.Ordinal));
        Assert.Equal(linears, report.Compressed);
        foreach (var (name, _) in delta.Compressed)
        {
            var (signs, scale) = delta.BitDeltaLinear(name);
            using (signs)
                Assert.Equal(golden.Get($"signs.{name}").ToArray<int>().Select(v => (uint)v).ToArray(), signs.ToArray<uint>());
            float want = golden.Get($"alpha.{name}").ToFloatArray()[0];
            Assert.True(Math.Abs(scale - want) <= 2e-7 * want, $"{name}: scale {scale:R}, torch {want:R}");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Base_plus_delta_logits_equal_the_binarized_model_in_pytorch(string model, string device)
    {
        var dev = Device.Parse(device);
        using var c = new Compressed(model, dev);
        var (m, delta, golden) = (c.Model, c.Delta, c.Golden);
        int vocab = m.Config.VocabSize;
        for (int i = 0; golden.Contains($"p{i}.ids"); i++)
        {
            var ids = golden.Get($"p{i}.ids").ToArray<int>();
            int n = ids.Length;
            using var cache = m.NewCache(1, n);
            using var logits = Tensor.Empty([n, vocab], DType.F32, dev);
            m.Forward(ids, new int[n], Enumerable.Range(0, n).ToArray(), Enumerable.Range(0, n).ToArray(), cache, logits, delta);
            var all = logits.ToFloatArray();
            var last = all.AsSpan((n - 1) * vocab, vocab);
            int firstRows = golden.Entry($"p{i}.first_logits").Shape[0];
            double eLast = Check.RelativeError(last, golden.Get($"p{i}.last_logits").ToFloatArray());
            double eFirst = Check.RelativeError(all.AsSpan(0, firstRows * vocab), golden.Get($"p{i}.first_logits").ToFloatArray());
            Assert.True(eLast < LogitBound, $"{model} on {device}, prompt {i}: last logits relative error {eLast:E2}");
            Assert.True(eFirst < LogitBound, $"{model} on {device}, prompt {i}: first logits relative error {eFirst:E2}");
            // The check can fail: compression moved the logits well away from the fine-tune's own.
            double fromFineTune = Check.RelativeError(last, golden.Get($"p{i}.ft_last_logits").ToFloatArray());
            Assert.True(fromFineTune > 20 * LogitBound, $"{model}: compressed logits are within {fromFineTune:E2} of the fine-tune's");
        }
    }

    /// <summary>Decoding one token a step with the delta as a one-slot pool (each linear one multi-tenant launch,
    /// LlamaModel.DeltaDecodeAsPool) and with the base and signs products apart give PyTorch's last logits, the cache
    /// filled token by token.</summary>
    [Theory]
    [MemberData(nameof(IlgpuCases))]
    public void One_token_steps_with_the_delta_as_a_one_slot_pool_give_pytorchs_last_logits(string model, string device)
    {
        var dev = Device.Parse(device);
        using var c = new Compressed(model, dev);
        var (m, delta, golden) = (c.Model, c.Delta, c.Golden);
        var ids = golden.Get("p0.ids").ToArray<int>();
        var want = golden.Get("p0.last_logits").ToFloatArray();
        var was = LlamaModel.DeltaDecodeAsPool;
        try
        {
            foreach (bool pool in new[] { true, false })
            {
                LlamaModel.DeltaDecodeAsPool = pool;
                using var cache = m.NewCache(1, ids.Length);
                using var logits = Tensor.Empty([1, m.Config.VocabSize], DType.F32, dev);
                for (int p = 0; p < ids.Length; p++)
                    m.Forward([ids[p]], [0], [p], [0], cache, logits, delta);
                double e = Check.RelativeError(logits.ToFloatArray(), want);
                Assert.True(e < LogitBound, $"{model} on {device}, {(pool ? "one-slot pool" : "base and signs apart")}: last logits relative error {e:E2}");
            }
        }
        finally { LlamaModel.DeltaDecodeAsPool = was; }
    }

    [Fact]
    public void A_random_delta_has_every_linears_shape_its_scale_and_signs_that_follow_the_seed()
    {
        var config = LlamaConfig.Load(Fixtures.Model("llama-f16"));
        using var a = DeltaWeights.Random(config, Device.Cpu, 5, 0.25f);
        using var again = DeltaWeights.Random(config, Device.Cpu, 5, 0.25f);
        using var other = DeltaWeights.Random(config, Device.Cpu, 6, 0.25f);
        var shapes = LlamaWeights.ExpectedTensors(config).ToDictionary(e => e.Name, e => e.Shape);
        for (int l = 0; l < config.NumLayers; l++)
            for (int k = 0; k < LayerWeights.LinearNames.Length; k++)
            {
                var b = a.Layers[l].Bits[k]!;
                Assert.Equal(shapes[LlamaWeights.LayerPrefix(l) + LayerWeights.LinearNames[k] + ".weight"], b.Signs.Shape);
                Assert.Equal(DType.Sign1, b.Signs.DType);
                Assert.Equal(0.25f, b.Scale);
                Assert.Equal(b.Signs.ToArray<uint>(), again.Layers[l].Bits[k]!.Signs.ToArray<uint>());
                Assert.NotEqual(b.Signs.ToArray<uint>(), other.Layers[l].Bits[k]!.Signs.ToArray<uint>());
            }
        // the one-slot scales: linear (l, k) at l·7 + k
        var scales = a.Scales(Device.Cpu).ToFloatArray();
        Assert.Equal(config.NumLayers * LayerWeights.LinearNames.Length, scales.Length);
        Assert.All(scales, v => Assert.Equal(0.25f, v));
    }

    /// <summary>The tiny model's fine-tune compressed by us into a temp file, the base and the delta loaded on a device, and
    /// PyTorch's goldens.</summary>
    sealed class Compressed : IDisposable
    {
        readonly TempDir dir = new();
        public readonly LlamaModel Model;
        public readonly DeltaWeights Delta;
        public readonly SafetensorsFile Golden;

        public Compressed(string model, Device dev)
        {
            string path = dir.File("delta.safetensors");
            Compressor.Compress(Fixtures.Model(model), FineTune(model), path);
            Model = LlamaModel.Load(Fixtures.Model(model), dev);
            Delta = DeltaWeights.Load(path, Fixtures.Model(model), Model.Config, dev);
            Golden = SafetensorsFile.Open(Path.Combine(FineTune(model), "goldens.safetensors"));
        }

        public void Dispose()
        {
            Golden.Dispose();
            Delta.Dispose();
            Model.Dispose();
            dir.Dispose();
        }
    }

    public static TheoryData<string, string> IlgpuCases
    {
        get
        {
            var d = new TheoryData<string, string>();
            foreach (var m in Fixtures.Models)
                foreach (var n in TestDevices.Names) d.Add(m, n.Data);
            return d;
        }
    }

    [Fact]
    public void A_delta_is_refused_over_another_base()
    {
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors");
        Compressor.Compress(Fixtures.Model("llama-f16"), FineTune("llama-f16"), path);
        // Same architecture, other weights: the fine-tune itself posing as the base.
        var e = Assert.Throws<BitDeltaException>(() => DeltaWeights.Load(path, FineTune("llama-f16"), LlamaConfig.Load(FineTune("llama-f16")), Device.Cpu));
        Assert.Contains("other base weights", e.Message);
        var e2 = Assert.Throws<BitDeltaException>(() => DeltaWeights.Load(path, Fixtures.Model("mistral-bf16"), LlamaConfig.Load(Fixtures.Model("mistral-bf16")), Device.Cpu));
        Assert.Contains("another architecture", e2.Message);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void The_saved_full_model_loads_as_a_plain_checkpoint_and_computes_the_compressed_logits(string model)
    {
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors"), full = dir.File("model");
        Compressor.Compress(Fixtures.Model(model), FineTune(model), path);
        FullModel.Save(Fixtures.Model(model), path, FineTune(model), full);
        Assert.True(File.Exists(Path.Combine(full, "config.json")));
        using var m = LlamaModel.Load(full, Device.Cpu);
        using var golden = SafetensorsFile.Open(Path.Combine(FineTune(model), "goldens.safetensors"));
        var ids = golden.Get("p2.ids").ToArray<int>();
        int n = ids.Length, vocab = m.Config.VocabSize;
        using var cache = m.NewCache(1, n);
        using var logits = Tensor.Empty([1, vocab], DType.F32, Device.Cpu);
        m.Forward(ids, new int[n], Enumerable.Range(0, n).ToArray(), [n - 1], cache, logits);
        // The linears are rounded to the checkpoint's f16/bf16 once more: bf16 keeps 8 bits.
        double err = Check.RelativeError(logits.ToFloatArray(), golden.Get("p2.last_logits").ToFloatArray());
        Assert.True(err < (m.Weights.DType == DType.BF16 ? 3e-2 : 5e-3), $"{model}: saved full model's logits relative error {err:E2}");
        var again = Assert.Throws<BitDeltaException>(() => FullModel.Save(Fixtures.Model(model), path, FineTune(model), full));
        Assert.Contains("exists already", again.Message);
    }
}

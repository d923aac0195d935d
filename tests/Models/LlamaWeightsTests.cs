using System.Text.Json;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Models;

/// <summary>Tiny random checkpoints written with <see cref="SafetensorsWriter"/> under HF names, loaded back.</summary>
public class LlamaWeightsTests
{
    const string TinyConfig = """
    {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 12,
     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "vocab_size": 10,
     "torch_dtype": "float16", "tie_word_embeddings": TIE}
    """;

    static LlamaConfig Config(bool tie) => LlamaConfig.Parse(System.Text.Encoding.UTF8.GetBytes(TinyConfig.Replace("TIE", tie ? "true" : "false")));

    /// <summary>Every expected tensor with random bytes that are finite values of <paramref name="dtype"/>.</summary>
    static List<(string Name, Tensor Tensor)> RandomTensors(LlamaConfig c, DType dtype, int seed, bool withHead)
    {
        var rng = new Random(seed);
        var list = new List<(string, Tensor)>();
        var expected = LlamaWeights.ExpectedTensors(c with { TieWordEmbeddings = !withHead });
        foreach (var (name, shape) in expected)
        {
            var values = new float[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
            list.Add((name, Tensor.From(values, shape, Device.Cpu, dtype)));
        }
        return list;
    }

    static void WriteConfig(TempDir dir, bool tie) =>
        File.WriteAllText(dir.File("config.json"), TinyConfig.Replace("TIE", tie ? "true" : "false"));

    /// <summary>Writes the tensors over <paramref name="shards"/> files with a model.safetensors.index.json,
    /// or as one model.safetensors when shards is 1.</summary>
    static void WriteCheckpoint(TempDir dir, List<(string Name, Tensor Tensor)> tensors, int shards)
    {
        if (shards == 1) { SafetensorsWriter.Write(dir.File("model.safetensors"), tensors); return; }
        var map = new Dictionary<string, string>();
        for (int s = 0; s < shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var part = tensors.Where((_, i) => i % shards == s).ToList();
            SafetensorsWriter.Write(dir.File(file), part);
            foreach (var (n, _) in part) map[n] = file;
        }
        File.WriteAllText(dir.File("model.safetensors.index.json"),
            JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = map }));
    }

    sealed class Recorder : IProgress<(int Done, int Total)>
    {
        public readonly List<(int Done, int Total)> Seen = [];
        public void Report((int Done, int Total) value) => Seen.Add(value);
    }

    static void AssertSameData(Tensor want, Tensor got)
    {
        Assert.Equal(want.DType, got.DType);
        Assert.Equal(want.Shape.ToArray(), got.Shape.ToArray());
        Assert.Equal(want.ToArray<byte>(), got.ToArray<byte>());
    }

    [Theory]
    [InlineData(DType.F16, 1)]
    [InlineData(DType.BF16, 3)]
    [InlineData(DType.F32, 2)]
    public void Loads_single_and_sharded_checkpoints_keeping_dtype_shapes_and_data(DType dtype, int shards)
    {
        using var dir = new TempDir();
        WriteConfig(dir, tie: false);
        var c = Config(false);
        var tensors = RandomTensors(c, dtype, seed: 7, withHead: true);
        WriteCheckpoint(dir, tensors, shards);
        var progress = new Recorder();
        using var w = LlamaWeights.Load(dir.Path, Device.Cpu, progress);

        var byName = tensors.ToDictionary(t => t.Name, t => t.Tensor);
        Assert.Equal(dtype, w.DType);
        AssertSameData(byName["model.embed_tokens.weight"], w.Embedding);
        AssertSameData(byName["model.norm.weight"], w.FinalNorm);
        AssertSameData(byName["lm_head.weight"], w.LmHead);
        Assert.False(w.LmHeadIsEmbedding);
        Assert.Equal(2, w.Layers.Length);
        for (int i = 0; i < 2; i++)
        {
            var l = w.Layers[i];
            string p = $"model.layers.{i}.";
            AssertSameData(byName[p + "input_layernorm.weight"], l.InputNorm);
            AssertSameData(byName[p + "post_attention_layernorm.weight"], l.PostAttentionNorm);
            foreach (var (name, t) in l.Linears) AssertSameData(byName[p + name + ".weight"], t);
        }
        Assert.Equal(new[] { 16, 8 }, w.Layers[0].Q.Shape.ToArray());
        Assert.Equal(new[] { 8, 8 }, w.Layers[0].K.Shape.ToArray());
        Assert.Equal(new[] { 8, 16 }, w.Layers[0].O.Shape.ToArray());
        Assert.Equal(new[] { 8, 12 }, w.Layers[0].Down.Shape.ToArray());
        Assert.Equal(tensors.Sum(t => t.Tensor.ByteLength), w.ByteLength);

        int total = tensors.Count;
        Assert.Equal(Enumerable.Range(1, total).Select(i => (i, total)), progress.Seen);
    }

    [Fact]
    public void Weights_outlive_the_checkpoint_they_were_read_from()
    {
        using var dir = new TempDir();
        var c = Config(false);
        var tensors = RandomTensors(c, DType.F16, seed: 3, withHead: true);
        WriteCheckpoint(dir, tensors, 1);
        LlamaWeights w;
        using (var ck = Checkpoint.Open(dir.Path)) w = LlamaWeights.Load(ck, c, Device.Cpu);
        using (w) AssertSameData(tensors[^1].Tensor, w.LmHead);
    }

    [Fact]
    public void Loads_onto_an_ilgpu_device()
    {
        using var dir = new TempDir();
        var c = Config(false);
        var tensors = RandomTensors(c, DType.BF16, seed: 11, withHead: true);
        WriteCheckpoint(dir, tensors, 2);
        foreach (var dev in TestDevices.All)
        {
            using var ck = Checkpoint.Open(dir.Path);
            using var w = LlamaWeights.Load(ck, c, dev);
            Assert.Equal(dev, w.Layers[1].Up.Device);
            AssertSameData(tensors.Single(t => t.Name == "model.layers.1.mlp.up_proj.weight").Tensor, w.Layers[1].Up);
            AssertSameData(tensors[0].Tensor, w.Embedding);
        }
    }

    [Fact]
    public void Tied_embeddings_use_the_embedding_as_lm_head_whether_or_not_one_is_stored()
    {
        var c = Config(true);
        foreach (bool stored in new[] { false, true })
        {
            using var dir = new TempDir();
            var tensors = RandomTensors(c, DType.F16, seed: 5, withHead: stored);
            WriteCheckpoint(dir, tensors, 1);
            using var ck = Checkpoint.Open(dir.Path);
            var w = LlamaWeights.Load(ck, c, Device.Cpu);
            Assert.True(w.LmHeadIsEmbedding);
            Assert.Same(w.Embedding, w.LmHead);
            AssertSameData(tensors[0].Tensor, w.LmHead);
            Assert.Equal(tensors.Where(t => t.Name != "lm_head.weight").Sum(t => t.Tensor.ByteLength), w.ByteLength);
            w.Dispose();
        }
    }

    [Fact]
    public void Extra_tensors_such_as_rotary_inv_freq_are_ignored()
    {
        using var dir = new TempDir();
        var c = Config(false);
        var tensors = RandomTensors(c, DType.F16, seed: 9, withHead: true);
        tensors.Add(("model.layers.0.self_attn.rotary_emb.inv_freq", Tensor.From(new float[] { 1, 0.1f }, [2])));
        WriteCheckpoint(dir, tensors, 2);
        using var ck = Checkpoint.Open(dir.Path);
        using var w = LlamaWeights.Load(ck, c, Device.Cpu);
        Assert.Equal(DType.F16, w.DType);
    }

    static BitDeltaException LoadError(List<(string Name, Tensor Tensor)> tensors, LlamaConfig c, out string dir)
    {
        var d = new TempDir();
        dir = d.Path;
        try
        {
            WriteCheckpoint(d, tensors, 1);
            using var ck = Checkpoint.Open(d.Path);
            var e = Assert.Throws<BitDeltaException>(() => LlamaWeights.Load(ck, c, Device.Cpu).Dispose());
            Assert.DoesNotContain('\n', e.Message);
            return e;
        }
        finally { d.Dispose(); }
    }

    [Fact]
    public void A_missing_tensor_is_named_with_its_expected_shape()
    {
        var c = Config(false);
        var tensors = RandomTensors(c, DType.F16, 1, true).Where(t => t.Name != "model.layers.1.mlp.gate_proj.weight").ToList();
        var e = LoadError(tensors, c, out var dir);
        Assert.Equal($"{dir}: tensor 'model.layers.1.mlp.gate_proj.weight' is missing (expected shape [12, 8] from config.json)", e.Message);
    }

    [Fact]
    public void A_missing_lm_head_is_an_error_when_embeddings_are_not_tied()
    {
        var c = Config(false);
        var e = LoadError(RandomTensors(c, DType.F16, 1, withHead: false), c, out _);
        Assert.Contains("tensor 'lm_head.weight' is missing (expected shape [10, 8]", e.Message);
    }

    [Fact]
    public void A_mis_shaped_tensor_is_named_with_found_and_expected_shapes()
    {
        var c = Config(false);
        var tensors = RandomTensors(c, DType.F16, 1, true);
        int i = tensors.FindIndex(t => t.Name == "model.layers.0.self_attn.k_proj.weight");
        tensors[i] = (tensors[i].Name, Tensor.From(new float[16 * 8], [16, 8], Device.Cpu, DType.F16));
        var e = LoadError(tensors, c, out var dir);
        Assert.Equal($"{Path.Combine(dir, "model.safetensors")}: tensor 'model.layers.0.self_attn.k_proj.weight' has shape [16, 8], expected [8, 8] from config.json", e.Message);
    }

    [Fact]
    public void Mixed_or_non_float_dtypes_are_refused()
    {
        var c = Config(false);
        var tensors = RandomTensors(c, DType.F16, 1, true);
        int i = tensors.FindIndex(t => t.Name == "model.norm.weight");
        tensors[i] = (tensors[i].Name, Tensor.From(new float[8], [8]));
        var e = LoadError(tensors, c, out _);
        Assert.Contains("tensor 'model.norm.weight' is F32 but 'model.embed_tokens.weight' is F16", e.Message);

        tensors[i] = (tensors[i].Name, Tensor.From(new int[8], [8]));
        e = LoadError(tensors, c, out _);
        Assert.Contains("tensor 'model.norm.weight' is I32; weights must be F16, BF16 or F32", e.Message);
    }
}

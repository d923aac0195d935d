using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models;

/// <summary>One compressed linear on a device: packed signs [out, in] (<see cref="DType.Sign1"/>) and its scale α.</summary>
public sealed record BitLinearWeight(Tensor Signs, float Scale);

/// <summary>What a delta changes in one decoder layer; null means "as the base has it".</summary>
public sealed class LayerDelta
{
    public Tensor? InputNorm { get; set; }
    public Tensor? PostAttentionNorm { get; set; }
    /// <summary>Per linear, in <see cref="LayerWeights.LinearNames"/> order: its BitDelta signs and scale.</summary>
    public BitLinearWeight?[] Bits { get; } = new BitLinearWeight?[LayerWeights.LinearNames.Length];
    /// <summary>Per linear: a whole replacement weight (a delta may store a linear uncompressed).</summary>
    public Tensor?[] Whole { get; } = new Tensor?[LayerWeights.LinearNames.Length];
    /// <summary>Per linear, a lowrank-mp delta's factors.</summary>
    public LowRankFactors?[] LowRank { get; } = new LowRankFactors?[LayerWeights.LinearNames.Length];
    /// <summary>Per linear, a sparse-lowbit delta's factors.</summary>
    public SparseFactors?[] Sparse { get; } = new SparseFactors?[LayerWeights.LinearNames.Length];
}

/// <summary>
/// A compressed fine-tune loaded onto a device, to be run over a base model held once (<see cref="LlamaModel.Forward"/>
/// takes it per call): per linear the packed signs and α, and the tensors the delta stores whole (embedding,
/// lm_head, norms where the fine-tune changed them). The delta file is checked against the base's config hash and
/// weights fingerprint before anything is copied, and every stored tensor against the shapes the config implies.
/// </summary>
public sealed class DeltaWeights : IDisposable
{
    public required string Path { get; init; }
    public required LayerDelta[] Layers { get; init; }
    public Tensor? Embedding { get; init; }
    public Tensor? FinalNorm { get; init; }
    public Tensor? LmHead { get; init; }
    /// <summary>Device bytes this delta holds (signs, scales, whole tensors).</summary>
    public long ByteLength { get; init; }
    /// <summary>The delta file's codec.</summary>
    public string Codec { get; init; } = BitDelta.Codec;
    readonly List<Tensor> owned = [];
    readonly List<IDisposable> ownedFactors = [];

    /// <summary>Opens <paramref name="deltaPath"/>, refuses it unless it was made from the base in
    /// <paramref name="baseDir"/>, and copies it onto <paramref name="device"/>.</summary>
    public static DeltaWeights Load(string deltaPath, string baseDir, LlamaConfig baseConfig, Device device)
    {
        using var file = DeltaFile.Open(deltaPath);
        using (var baseCk = Checkpoint.Open(baseDir))
            file.CheckBase(baseDir, baseConfig, WeightsFingerprint.Of(baseCk));
        return Load(file, baseConfig, device);
    }

    /// <summary>Copies a delta file (already checked against its base) onto <paramref name="device"/>.</summary>
    public static DeltaWeights Load(DeltaFile file, LlamaConfig config, Device device)
    {
        var expected = LlamaWeights.ExpectedTensors(config).ToDictionary(e => e.Name, e => e.Shape);
        var layers = Enumerable.Range(0, config.NumLayers).Select(_ => new LayerDelta()).ToArray();
        var owned = new List<Tensor>();
        Tensor? embedding = null, norm = null, head = null;
        long bytes = 0;
        try
        {
            Tensor Copy(Tensor src)
            {
                var t = Tensor.Empty(src.Shape, src.DType, device);
                owned.Add(t);
                t.CopyFrom(src);
                bytes += t.ByteLength;
                return t;
            }
            var codecOwned = new List<IDisposable>();
            foreach (var (name, shape) in file.Compressed)
            {
                var (layer, linear) = CompressedLinear(file.Path, name, shape, expected, layers.Length);
                switch (file.Codec)
                {
                    case BitDelta.Codec:
                        var (signs, scale) = file.BitDeltaLinear(name);
                        using (signs)
                            layers[layer].Bits[linear] = new BitLinearWeight(Copy(signs), scale);
                        bytes += 4;
                        break;
                    case Codecs.LowRankMp.Codec:
                        var lr = layers[layer].LowRank[linear] = file.LowRankLinear(name).MoveTo(device);
                        codecOwned.Add(lr);
                        bytes += lr.ByteLength;
                        break;
                    default:
                        var sp = layers[layer].Sparse[linear] = file.SparseLinear(name).MoveTo(device);
                        codecOwned.Add(sp);
                        bytes += sp.ByteLength;
                        break;
                }
            }
            foreach (var name in file.Replaced)
            {
                if (!expected.TryGetValue(name, out var want))
                    throw new BitDeltaException($"{file.Path}: tensor '{name}' is not a tensor of this base's architecture");
                using var src = file.ReplacedTensor(name);
                if (!src.Shape.SequenceEqual(want) || !src.DType.IsFloat())
                    throw new BitDeltaException($"{file.Path}: tensor '{name}' is {src.DType}{src.ShapeString}, expected a float tensor of shape [{string.Join(", ", want)}]");
                var (part, layer, linear) = WholePart(file.Path, name);
                if (part == Part.Linear && file.Compressed.ContainsKey(name)) throw BothWholeAndCompressed(file.Path, name);
                var t = Copy(src);
                switch (part)
                {
                    case Part.Embedding: embedding = t; break;
                    case Part.FinalNorm: norm = t; break;
                    case Part.LmHead: head = t; break;
                    case Part.Linear: layers[layer].Whole[linear] = t; break;
                    case Part.InputNorm: layers[layer].InputNorm = t; break;
                    case Part.PostNorm: layers[layer].PostAttentionNorm = t; break;
                }
            }
            var d = new DeltaWeights { Path = file.Path, Codec = file.Codec, Layers = layers, Embedding = embedding, FinalNorm = norm, LmHead = head, ByteLength = bytes };
            d.owned.AddRange(owned);
            d.ownedFactors.AddRange(codecOwned);
            return d;
        }
        catch
        {
            foreach (var t in owned) t.Dispose();
            foreach (var l in layers)
            {
                foreach (var f in l.LowRank) f?.Dispose();
                foreach (var f in l.Sparse) f?.Dispose();
            }
            throw;
        }
    }

    /// <summary>What a tensor a delta stores whole stands in for.</summary>
    internal enum Part { Embedding, FinalNorm, LmHead, Linear, InputNorm, PostNorm }

    /// <summary>(layer, linear) of a compressed tensor of a delta file, refused unless it is a decoder linear of the
    /// base (<paramref name="expected"/>: the base's tensor shapes) with the base's shape. Shared by
    /// <see cref="Load(DeltaFile, LlamaConfig, Device)"/> and <see cref="DeltaPool.Load"/>.</summary>
    internal static (int Layer, int Linear) CompressedLinear(string path, string name, int[] shape, Dictionary<string, int[]> expected, int numLayers)
    {
        var (layer, linear) = Locate(name);
        if (layer < 0 || linear < 0 || layer >= numLayers || !expected.TryGetValue(name, out var want) || !want.SequenceEqual(shape))
            throw new BitDeltaException($"{path}: compressed tensor '{name}' [{string.Join(", ", shape)}] is not a decoder linear of this base");
        return (layer, linear);
    }

    /// <summary>Where a tensor a delta stores whole goes (layer and linear where they apply, else −1); a one-line error
    /// naming the file when it has no place in the model.</summary>
    internal static (Part Part, int Layer, int Linear) WholePart(string path, string name)
    {
        if (name == LlamaWeights.EmbeddingName) return (Part.Embedding, -1, -1);
        if (name == LlamaWeights.FinalNormName) return (Part.FinalNorm, -1, -1);
        if (name == LlamaWeights.LmHeadName) return (Part.LmHead, -1, -1);
        var (layer, linear) = Locate(name);
        if (linear >= 0) return (Part.Linear, layer, linear);
        if (layer >= 0 && name.EndsWith(".input_layernorm.weight", StringComparison.Ordinal)) return (Part.InputNorm, layer, -1);
        if (layer >= 0 && name.EndsWith(".post_attention_layernorm.weight", StringComparison.Ordinal)) return (Part.PostNorm, layer, -1);
        throw new BitDeltaException($"{path}: tensor '{name}' has no place in the model");
    }

    internal static BitDeltaException BothWholeAndCompressed(string path, string name) => new($"{path}: '{name}' is stored both whole and compressed");

    /// <summary>(layer, index in <see cref="LayerWeights.LinearNames"/>) of an HF tensor name; −1 where it is not one.</summary>
    internal static (int Layer, int Linear) Locate(string name)
    {
        const string prefix = "model.layers.";
        if (!name.StartsWith(prefix, StringComparison.Ordinal)) return (-1, -1);
        int dot = name.IndexOf('.', prefix.Length);
        if (dot < 0 || !int.TryParse(name.AsSpan(prefix.Length, dot - prefix.Length), out int layer)) return (-1, -1);
        string rest = name[(dot + 1)..];
        int linear = Array.FindIndex(LayerWeights.LinearNames, n => rest == n + ".weight");
        return (layer, linear);
    }

    /// <summary>A delta of random signs (<see cref="Kernels.RandomFill"/>, from <paramref name="seed"/>) and scale
    /// <paramref name="scale"/> on every linear of a model of <paramref name="config"/>, made on the device: for benchmarks
    /// (`bench model --random-delta`), as <see cref="DeltaPool.LoadRandom"/> makes a pool's tenants.</summary>
    public static DeltaWeights Random(LlamaConfig config, Device device, ulong seed, float scale = 1e-3f)
    {
        var owned = new List<Tensor>();
        var layers = Enumerable.Range(0, config.NumLayers).Select(_ => new LayerDelta()).ToArray();
        var shapes = LlamaWeights.ExpectedTensors(config).ToDictionary(e => e.Name, e => e.Shape);
        long bytes = 0;
        for (int l = 0; l < config.NumLayers; l++)
            for (int k = 0; k < LayerWeights.LinearNames.Length; k++)
            {
                var shape = shapes[LlamaWeights.LayerPrefix(l) + LayerWeights.LinearNames[k] + ".weight"];
                var signs = Tensor.Empty([(int)shape[0], (int)shape[1]], DType.Sign1, device);
                owned.Add(signs);
                Kernels.RandomFill.Run(signs, seed * 7919UL + (ulong)(l * 16 + k));
                layers[l].Bits[k] = new BitLinearWeight(signs, scale);
                bytes += signs.ByteLength + 4;
            }
        var d = new DeltaWeights { Path = "(random)", Layers = layers, ByteLength = bytes };
        d.owned.AddRange(owned);
        return d;
    }

    Tensor? scales;

    /// <summary>Every linear's α on <paramref name="device"/>, f32 [layers × 7] in <see cref="LayerWeights.LinearNames"/>
    /// order (0 where a linear has no BitDelta term), made on first use: linear (l, k) as a one-slot pool's scales
    /// (<see cref="LlamaModel.Forward"/> decodes a sequence through the multi-tenant linear).</summary>
    public Tensor Scales(Device device)
    {
        if (scales == null)
        {
            int n = LayerWeights.LinearNames.Length;
            var all = new float[Layers.Length * n];
            for (int l = 0; l < Layers.Length; l++)
                for (int k = 0; k < n; k++)
                    all[l * n + k] = Layers[l].Bits[k]?.Scale ?? 0f;
            scales = Tensor.From(all, [all.Length], device);
        }
        if (scales.Device != device) throw new ArgumentException($"{Path}: scales are on {scales.Device}, asked for {device}");
        return scales;
    }

    public void Dispose()
    {
        scales?.Dispose();
        scales = null;
        foreach (var t in owned) t.Dispose();
        owned.Clear();
        foreach (var f in ownedFactors) f.Dispose();
        ownedFactors.Clear();
    }
}

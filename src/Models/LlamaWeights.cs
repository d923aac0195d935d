namespace BitDeltaNative.Models;

/// <summary>
/// One decoder layer's weights under their Hugging Face names (modeling_llama.py, <c>LlamaDecoderLayer</c>).
/// Linear weights are <c>[out_features, in_features]</c> as torch's nn.Linear stores them: y = x · Wᵀ.
/// </summary>
public sealed class LayerWeights : IDisposable
{
    /// <summary><c>input_layernorm.weight</c> [hidden]: RMSNorm before attention.</summary>
    public required Tensor InputNorm { get; init; }
    /// <summary><c>self_attn.q_proj.weight</c> [heads·head_dim, hidden].</summary>
    public required Tensor Q { get; init; }
    /// <summary><c>self_attn.k_proj.weight</c> [kv_heads·head_dim, hidden].</summary>
    public required Tensor K { get; init; }
    /// <summary><c>self_attn.v_proj.weight</c> [kv_heads·head_dim, hidden].</summary>
    public required Tensor V { get; init; }
    /// <summary><c>self_attn.o_proj.weight</c> [hidden, heads·head_dim].</summary>
    public required Tensor O { get; init; }
    /// <summary><c>post_attention_layernorm.weight</c> [hidden]: RMSNorm before the MLP.</summary>
    public required Tensor PostAttentionNorm { get; init; }
    /// <summary><c>mlp.gate_proj.weight</c> [intermediate, hidden]; the MLP is down(silu(gate(x)) · up(x)).</summary>
    public required Tensor Gate { get; init; }
    /// <summary><c>mlp.up_proj.weight</c> [intermediate, hidden].</summary>
    public required Tensor Up { get; init; }
    /// <summary><c>mlp.down_proj.weight</c> [hidden, intermediate].</summary>
    public required Tensor Down { get; init; }

    /// <summary>q, k and v one after another, [heads·head_dim + 2·kv_heads·head_dim, hidden]: <see cref="Q"/>, <see cref="K"/>
    /// and <see cref="V"/> are its rows, so a multi-tenant decode step reads the three as one linear in one launch
    /// (TenantLinear.RunParts); null where they were made apart.</summary>
    public Tensor? QkvStore { get; init; }
    /// <summary>gate and up one after another, [2·intermediate, hidden], as <see cref="QkvStore"/>.</summary>
    public Tensor? GateUpStore { get; init; }

    /// <summary>The seven linear weights by their short HF names, the ones a delta codec compresses.</summary>
    public IEnumerable<(string Name, Tensor Weight)> Linears => LinearNames.Zip([Q, K, V, O, Gate, Up, Down]);

    /// <summary>The short HF names of the seven linears of a decoder layer, in the order of <see cref="Linears"/>.</summary>
    public static readonly string[] LinearNames =
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

    public void Dispose()
    {
        foreach (var t in new[] { InputNorm, Q, K, V, O, PostAttentionNorm, Gate, Up, Down }) t.Dispose();
        QkvStore?.Dispose();
        GateUpStore?.Dispose();
    }
}

/// <summary>
/// A Llama/Mistral model's weights on one device, in the checkpoint's own dtype (F16, BF16 or F32: a 7B f16
/// model stays 13.5 GB). Every tensor the config implies is checked for presence and shape before any is
/// copied; tensors the model does not use (rotary <c>inv_freq</c> buffers of old checkpoints, say) are ignored.
/// </summary>
public sealed class LlamaWeights : IDisposable
{
    public required LlamaConfig Config { get; init; }
    public required DType DType { get; init; }
    /// <summary><c>model.embed_tokens.weight</c> [vocab, hidden].</summary>
    public required Tensor Embedding { get; init; }
    public required LayerWeights[] Layers { get; init; }
    /// <summary><c>model.norm.weight</c> [hidden].</summary>
    public required Tensor FinalNorm { get; init; }
    /// <summary><c>lm_head.weight</c> [vocab, hidden]; the very <see cref="Embedding"/> tensor when the config ties them.</summary>
    public required Tensor LmHead { get; init; }
    public bool LmHeadIsEmbedding => ReferenceEquals(LmHead, Embedding);

    public static string LayerPrefix(int layer) => $"model.layers.{layer}.";
    public const string EmbeddingName = "model.embed_tokens.weight";
    public const string FinalNormName = "model.norm.weight";
    public const string LmHeadName = "lm_head.weight";

    /// <summary>Every tensor name and shape the config implies, in checkpoint order (embedding, layers, norm, head).
    /// The lm_head is left out when the embeddings are tied: transformers then ignores a stored lm_head too.</summary>
    public static List<(string Name, int[] Shape)> ExpectedTensors(LlamaConfig c)
    {
        var list = new List<(string, int[])> { (EmbeddingName, [c.VocabSize, c.HiddenSize]) };
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = LayerPrefix(i);
            list.Add((p + "input_layernorm.weight", [c.HiddenSize]));
            list.Add((p + "self_attn.q_proj.weight", [c.QDim, c.HiddenSize]));
            list.Add((p + "self_attn.k_proj.weight", [c.KvDim, c.HiddenSize]));
            list.Add((p + "self_attn.v_proj.weight", [c.KvDim, c.HiddenSize]));
            list.Add((p + "self_attn.o_proj.weight", [c.HiddenSize, c.QDim]));
            list.Add((p + "post_attention_layernorm.weight", [c.HiddenSize]));
            list.Add((p + "mlp.gate_proj.weight", [c.IntermediateSize, c.HiddenSize]));
            list.Add((p + "mlp.up_proj.weight", [c.IntermediateSize, c.HiddenSize]));
            list.Add((p + "mlp.down_proj.weight", [c.HiddenSize, c.IntermediateSize]));
        }
        list.Add((FinalNormName, [c.HiddenSize]));
        if (!c.TieWordEmbeddings) list.Add((LmHeadName, [c.VocabSize, c.HiddenSize]));
        return list;
    }

    /// <summary>Reads config.json and the safetensors checkpoint of a model folder onto <paramref name="device"/>.</summary>
    public static LlamaWeights Load(string modelDir, Device device, IProgress<(int Done, int Total)>? progress = null)
    {
        var config = LlamaConfig.Load(modelDir);
        using var ck = Checkpoint.Open(modelDir);
        return Load(ck, config, device, progress);
    }

    /// <summary>Checks that <paramref name="ck"/> holds every tensor the config implies, with its shape, all in one
    /// float dtype, which it returns; a one-line error names the file and the tensor otherwise.</summary>
    public static DType Validate(Checkpoint ck, LlamaConfig config)
    {
        DType? dtype = null;
        string? dtypeFrom = null;
        foreach (var (name, shape) in ExpectedTensors(config))
        {
            if (!ck.Contains(name))
                throw new BitDeltaException($"{ck.Path}: tensor '{name}' is missing (expected shape [{string.Join(", ", shape)}] from config.json)");
            var e = ck.Entry(name);
            string file = ck.FileOf(name).Path;
            if (!e.Shape.AsSpan().SequenceEqual(shape))
                throw new BitDeltaException($"{file}: tensor '{name}' has shape {e.ShapeString}, expected [{string.Join(", ", shape)}] from config.json");
            if (e.DType is not (DType.F16 or DType.BF16 or DType.F32))
                throw new BitDeltaException($"{file}: tensor '{name}' is {e.DType.SafetensorsName()}; weights must be F16, BF16 or F32");
            if (dtype is null) { dtype = e.DType; dtypeFrom = name; }
            else if (e.DType != dtype)
                throw new BitDeltaException($"{file}: tensor '{name}' is {e.DType.SafetensorsName()} but '{dtypeFrom}' is {dtype.Value.SafetensorsName()}; a checkpoint must hold one dtype");
        }
        return dtype!.Value;
    }

    /// <summary>
    /// Copies every expected tensor of <paramref name="ck"/> onto <paramref name="device"/> (on the CPU too: the
    /// result does not depend on the checkpoint staying open). <paramref name="progress"/> hears (tensors done,
    /// tensors in all) after each copy; it is called on the loading thread.
    /// </summary>
    public static LlamaWeights Load(Checkpoint ck, LlamaConfig config, Device device, IProgress<(int Done, int Total)>? progress = null)
    {
        var expected = ExpectedTensors(config);
        var dtype = Validate(ck, config);

        int done = 0;
        // On CUDA through pinned staging buffers (StagedUpload.cs): the driver's own staging of pageable bytes held a 7B
        // checkpoint to 7.4 GB/s. Every copy is complete when the weights are returned.
        using var staged = device.Kind == DeviceKind.Cuda && UseStagedUpload ? new StagedUpload(device) : null;
        return Assemble(config, dtype, device, (name, t) =>
        {
            using var src = ck.Get(name);
            if (staged != null) staged.Copy(src, t);
            else t.CopyFrom(src);
            progress?.Report((++done, expected.Count));
        });
    }

    /// <summary>Load CUDA weights through <see cref="StagedUpload"/> (on by default; `bench startup --no-staged-upload`
    /// compares).</summary>
    public static bool UseStagedUpload { get; set; } = true;

    /// <summary>
    /// Weights of the config's shapes in <paramref name="dtype"/> with pseudo-random values made on the device
    /// (<see cref="Kernels.RandomFill"/>): linears uniform in ±1/√in, embedding ±1, norms ±1. For benchmarks at real
    /// shapes (a Llama-2-7B-shaped model in a second on the GPU) without a checkpoint; the values mean nothing.
    /// </summary>
    public static LlamaWeights Random(LlamaConfig config, DType dtype, Device device, ulong seed)
    {
        ulong n = 0;
        return Assemble(config, dtype, device, (_, t) =>
            Kernels.RandomFill.Run(t, seed + 1000003UL * ++n, t.Rank == 2 && t.Dim(0) != config.VocabSize ? 1f / MathF.Sqrt(t.Dim(1)) : 1f));
    }

    /// <summary>Every tensor the config implies, made on <paramref name="device"/> in <paramref name="dtype"/> and filled
    /// in checkpoint order by <paramref name="fill"/>(name, tensor); a layer's q/k/v and gate/up as rows of one tensor each
    /// (<see cref="LayerWeights.QkvStore"/>).</summary>
    static LlamaWeights Assemble(LlamaConfig config, DType dtype, Device device, Action<string, Tensor> fill)
    {
        var shapes = ExpectedTensors(config).ToDictionary(e => e.Name, e => e.Shape);
        var loaded = new List<Tensor>(shapes.Count);
        Tensor Keep(Tensor t)
        {
            loaded.Add(t);
            return t;
        }
        Tensor Next(string name, Tensor? into = null)
        {
            var t = into ?? Keep(Tensor.Empty(shapes[name], dtype, device));
            fill(name, t);
            return t;
        }
        // rows [start, start + count) of a store, for the tensor of that name (its shape checked by the fill)
        Tensor Rows(Tensor store, ref int start, string name)
        {
            var t = Keep(store.Slice(start, shapes[name][0]));
            start += shapes[name][0];
            return t;
        }
        try
        {
            var embedding = Next(EmbeddingName);
            var layers = new LayerWeights[config.NumLayers];
            for (int i = 0; i < layers.Length; i++)
            {
                string p = LayerPrefix(i), q = p + "self_attn.q_proj.weight", k = p + "self_attn.k_proj.weight", v = p + "self_attn.v_proj.weight";
                string gate = p + "mlp.gate_proj.weight", up = p + "mlp.up_proj.weight";
                var qkv = Keep(Tensor.Empty([config.QDim + 2 * config.KvDim, config.HiddenSize], dtype, device));
                var gateUp = Keep(Tensor.Empty([2 * config.IntermediateSize, config.HiddenSize], dtype, device));
                int atQkv = 0, atGateUp = 0;
                layers[i] = new LayerWeights
                {
                    InputNorm = Next(p + "input_layernorm.weight"),
                    Q = Next(q, Rows(qkv, ref atQkv, q)),
                    K = Next(k, Rows(qkv, ref atQkv, k)),
                    V = Next(v, Rows(qkv, ref atQkv, v)),
                    O = Next(p + "self_attn.o_proj.weight"),
                    PostAttentionNorm = Next(p + "post_attention_layernorm.weight"),
                    Gate = Next(gate, Rows(gateUp, ref atGateUp, gate)),
                    Up = Next(up, Rows(gateUp, ref atGateUp, up)),
                    Down = Next(p + "mlp.down_proj.weight"),
                    QkvStore = qkv,
                    GateUpStore = gateUp,
                };
            }
            var norm = Next(FinalNormName);
            var head = config.TieWordEmbeddings ? embedding : Next(LmHeadName);
            return new LlamaWeights
            {
                Config = config,
                DType = dtype,
                Embedding = embedding,
                Layers = layers,
                FinalNorm = norm,
                LmHead = head,
            };
        }
        catch
        {
            foreach (var t in loaded) t.Dispose();
            throw;
        }
    }

    /// <summary>Bytes of weight storage held (the tied head counted once).</summary>
    public long ByteLength =>
        Embedding.ByteLength + FinalNorm.ByteLength + (LmHeadIsEmbedding ? 0 : LmHead.ByteLength)
        + Layers.Sum(l => l.InputNorm.ByteLength + l.PostAttentionNorm.ByteLength + l.Linears.Sum(x => x.Weight.ByteLength));

    public void Dispose()
    {
        Embedding.Dispose();
        foreach (var l in Layers) l.Dispose();
        FinalNorm.Dispose();
        if (!LmHeadIsEmbedding) LmHead.Dispose();
    }
}

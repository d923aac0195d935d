namespace BitDeltaNative.Models;

/// <summary>What <see cref="Compressor.Compress"/> did.</summary>
public sealed record CompressionReport(string DeltaPath, long DeltaBytes, long FineTuneBytes, int Compressed, int Replaced)
{
    /// <summary>The fine-tune's own weight bytes over the delta file's bytes.</summary>
    public double Ratio => DeltaBytes == 0 ? 0 : (double)FineTuneBytes / DeltaBytes;
}

/// <summary>
/// BitDelta compression without scale distillation (<c>bitdelta compress --steps 0</c>): every decoder linear
/// (q, k, v, o, gate, up, down of every layer) becomes packed signs and one scale; every other tensor is kept as
/// the fine-tune has it, and stored only where it differs from the base, so base + delta reproduces the
/// compressed fine-tune without the fine-tune (as the reference keeps embeddings, lm_head and norms).
/// </summary>
public static class Compressor
{
    public static CompressionReport Compress(string baseDir, string fineTunedDir, string deltaPath, IProgress<(int Done, int Total)>? progress = null)
    {
        var baseConfig = LlamaConfig.Load(baseDir);
        var ftConfig = LlamaConfig.Load(fineTunedDir);
        CheckPair(baseDir, baseConfig, fineTunedDir, ftConfig);
        using var baseCk = Checkpoint.Open(baseDir);
        using var ftCk = Checkpoint.Open(fineTunedDir);
        LlamaWeights.Validate(baseCk, baseConfig);
        LlamaWeights.Validate(ftCk, ftConfig);
        var expected = LlamaWeights.ExpectedTensors(baseConfig);

        var linears = new HashSet<string>();
        for (int l = 0; l < baseConfig.NumLayers; l++)
            foreach (var p in LayerWeights.LinearNames)
                linears.Add($"{LlamaWeights.LayerPrefix(l)}{p}.weight");

        var compressed = new List<(string, Tensor, float)>();
        var replaced = new List<(string, Tensor)>();
        try
        {
            int done = 0;
            foreach (var (name, _) in expected)
            {
                if (linears.Contains(name))
                {
                    using var f = ftCk.Get(name);
                    using var b = baseCk.Get(name);
                    var (signs, scale) = BitDelta.Binarize(f, b, name);
                    compressed.Add((name, signs, scale));
                }
                else if (!baseCk.Bytes(name).SequenceEqual(ftCk.Bytes(name)) || baseCk.Entry(name).DType != ftCk.Entry(name).DType)
                    replaced.Add((name, ftCk.Get(name)));
                progress?.Report((++done, expected.Count));
            }
            string fp = WeightsFingerprint.Of(baseCk);
            DeltaFile.Write(deltaPath, BitDelta.Codec, baseConfig, fp, compressed, replaced);
        }
        finally
        {
            foreach (var (_, s, _) in compressed) s.Dispose();
        }
        long ftBytes = expected.Sum(e => ftCk.Entry(e.Name).ByteLength);
        return new CompressionReport(deltaPath, new FileInfo(deltaPath).Length, ftBytes, compressed.Count, replaced.Count);
    }

    /// <summary>A fine-tune must have its base's architecture and shapes; the message names what differs.</summary>
    public static void CheckPair(string baseDir, LlamaConfig b, string ftDir, LlamaConfig f)
    {
        void Same<T>(string field, T x, T y)
        {
            if (!EqualityComparer<T>.Default.Equals(x, y))
                throw new BitDeltaException($"{ftDir} is not a fine-tune of {baseDir}: {field} is {y} there and {x} in the base");
        }
        Same("architecture", b.Architecture, f.Architecture);
        Same("vocab_size", b.VocabSize, f.VocabSize);
        Same("hidden_size", b.HiddenSize, f.HiddenSize);
        Same("intermediate_size", b.IntermediateSize, f.IntermediateSize);
        Same("num_hidden_layers", b.NumLayers, f.NumLayers);
        Same("num_attention_heads", b.NumHeads, f.NumHeads);
        Same("num_key_value_heads", b.NumKvHeads, f.NumKvHeads);
        Same("head_dim", b.HeadDim, f.HeadDim);
        Same("tie_word_embeddings", b.TieWordEmbeddings, f.TieWordEmbeddings);
    }
}

/// <summary>How <see cref="CodecCompressor"/> compresses: the codec and its knobs (defaults: the papers').</summary>
public sealed record CodecOptions
{
    public required string Codec { get; init; }
    /// <summary>lowrank-mp: bits per slice, largest σ first.</summary>
    public int[] SliceBits { get; init; } = Codecs.LowRankMp.DefaultBits;
    /// <summary>lowrank-mp: ranks of all slices but the last (the last fills the 1-bit-a-weight budget).</summary>
    public int[] FixedRanks { get; init; } = Codecs.LowRankMp.DefaultFixedRanks;
    /// <summary>lowrank-mp: bits a weight the factors may take, everything stored counted (1: BitDelta's size).</summary>
    public double Budget { get; init; } = Codecs.LowRankMp.DefaultBudget;
    /// <summary>sparse-lowbit: 2 or 4.</summary>
    public int Bits { get; init; } = Codecs.SparseLowBit.DefaultBits;
    public int Group { get; init; } = 128;
    /// <summary>sparse-lowbit: the zstd stage.</summary>
    public bool Zstd { get; init; } = true;
}

/// <summary>
/// Compression with the codecs of the same family beside BitDelta (DeltaFile.cs): every decoder linear's Δ in f64 through
/// <see cref="Codecs.LowRankMp"/> or <see cref="Codecs.SparseLowBit"/>, with GPTQ against each linear's input Hessian when
/// calibration statistics are given (else round to nearest); other tensors kept where they differ from the base, as for
/// bitdelta.
/// </summary>
public static class CodecCompressor
{
    public static CompressionReport Compress(string baseDir, string fineTunedDir, string deltaPath, CodecOptions o,
                                             IReadOnlyDictionary<(int Layer, int Linear), double[]>? hessians, string? calibration,
                                             IProgress<(int Done, int Total)>? progress = null)
    {
        if (o.Codec != Codecs.LowRankMp.Codec && o.Codec != Codecs.SparseLowBit.Codec)
            throw new BitDeltaException($"--codec {o.Codec}: expected {Codecs.LowRankMp.Codec} or {Codecs.SparseLowBit.Codec} here");
        var baseConfig = LlamaConfig.Load(baseDir);
        var ftConfig = LlamaConfig.Load(fineTunedDir);
        Compressor.CheckPair(baseDir, baseConfig, fineTunedDir, ftConfig);
        using var baseCk = Checkpoint.Open(baseDir);
        using var ftCk = Checkpoint.Open(fineTunedDir);
        LlamaWeights.Validate(baseCk, baseConfig);
        LlamaWeights.Validate(ftCk, ftConfig);
        var expected = LlamaWeights.ExpectedTensors(baseConfig);

        var compressed = new List<(string, int[], Tensor[])>();
        var replaced = new List<(string, Tensor)>();
        var slices = new Dictionary<string, int[][]>();
        try
        {
            int done = 0;
            foreach (var (name, _) in expected)
            {
                var (layer, linear) = DeltaWeights.Locate(name);
                if (linear >= 0)
                {
                    using var f = ftCk.Get(name);
                    using var b = baseCk.Get(name);
                    int outDim = f.Dim(0), inDim = f.Dim(1);
                    var ff = f.ToFloatArray();
                    var bf = b.ToFloatArray();
                    var delta = new double[ff.Length];
                    for (long i = 0; i < delta.Length; i++)
                    {
                        delta[i] = (double)ff[i] - bf[i];
                        if (!double.IsFinite(delta[i])) throw new BitDeltaException($"{name}: the delta at [{i / inDim}, {i % inDim}] is {delta[i]} (a weight is not finite)");
                    }
                    double[]? h = hessians != null && hessians.TryGetValue((layer, Codecs.Hessians.InputOf(linear)), out var hv) ? hv : null;
                    if (o.Codec == Codecs.LowRankMp.Codec)
                    {
                        var lr = Codecs.LowRankMp.Compress(delta, outDim, inDim, h, o.SliceBits, o.FixedRanks, o.Group, o.Budget);
                        slices[name] = lr.Ranks.Select((r, s) => new[] { r, lr.Bits[s] }).ToArray();
                        compressed.Add((name, [outDim, inDim], [lr.VCodes, lr.VScales, lr.VZeros, lr.UCodes, lr.UScales, lr.UZeros, lr.Sigma]));
                        lr.Table.Dispose();
                    }
                    else
                    {
                        var sp = Codecs.SparseLowBit.Compress(delta, outDim, inDim, h, o.Bits, o.Group);
                        compressed.Add((name, [outDim, inDim], [sp.Meta, sp.Codes, sp.Scales]));
                    }
                }
                else if (!baseCk.Bytes(name).SequenceEqual(ftCk.Bytes(name)) || baseCk.Entry(name).DType != ftCk.Entry(name).DType)
                    replaced.Add((name, ftCk.Get(name)));
                progress?.Report((++done, expected.Count));
            }
            var ps = new CodecParams
            {
                Group = o.Group, Budget = o.Codec == Codecs.LowRankMp.Codec ? o.Budget : null, Bits = o.Codec == Codecs.SparseLowBit.Codec ? o.Bits : 0, Slices = o.Codec == Codecs.LowRankMp.Codec ? slices : null,
                Quantizer = hessians != null ? "gptq" : "rtn", Calibration = calibration,
            };
            DeltaFile.WriteCodec(deltaPath, o.Codec, baseConfig, WeightsFingerprint.Of(baseCk), compressed, replaced, ps,
                                 zstd: o.Codec == Codecs.SparseLowBit.Codec && o.Zstd);
        }
        finally
        {
            foreach (var (_, _, ts) in compressed)
                foreach (var t in ts) t.Dispose();
        }
        long ftBytes = expected.Sum(e => ftCk.Entry(e.Name).ByteLength);
        return new CompressionReport(deltaPath, new FileInfo(deltaPath).Length, ftBytes, compressed.Count, replaced.Count);
    }
}

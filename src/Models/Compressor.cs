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

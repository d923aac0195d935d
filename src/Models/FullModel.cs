using BitDeltaNative.Kernels;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace BitDeltaNative.Models;

/// <summary>
/// <c>compress --save-full-model</c>: the compressed fine-tune written as an ordinary Hugging Face folder, so tools
/// that know nothing of deltas (transformers, vLLM, lm-eval-harness) can load it. Like the reference's
/// save_full_model it is rebuilt from the base and the delta file alone: each linear is W_base + α·sign(Δ) summed in
/// f32 and rounded to nearest even in the fine-tune's dtype (that rounding is the only difference from running the
/// delta over the base); every other tensor is the delta's copy or the base's. config.json, generation_config.json
/// and the tokenizer files come from the fine-tune's folder. Shards of at most 4 GiB with a
/// model.safetensors.index.json past that, as save_pretrained writes them. The folder is built under a temporary
/// name beside the target and renamed when complete.
/// </summary>
public static class FullModel
{
    public const long ShardBytes = 4L << 30;
    static readonly string[] SideFiles = ["config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
                                          "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"];

    public static void Save(string baseDir, string deltaPath, string fineTunedDir, string outDir, IProgress<(int Done, int Total)>? progress = null)
    {
        if (Directory.Exists(outDir) || File.Exists(outDir)) throw new BitDeltaException($"{outDir}: exists already; nothing is overwritten");
        var config = LlamaConfig.Load(baseDir);
        using var baseCk = Checkpoint.Open(baseDir);
        using var delta = DeltaFile.Open(deltaPath);
        delta.CheckBase(baseDir, config, WeightsFingerprint.Of(baseCk));
        LlamaWeights.Validate(baseCk, config);
        DType dtype;   // the fine-tune's: the folder stands in for it
        using (var ft = Checkpoint.Open(fineTunedDir)) dtype = LlamaWeights.Validate(ft, LlamaConfig.Load(fineTunedDir));

        var expected = LlamaWeights.ExpectedTensors(config);
        var replaced = delta.Replaced.ToHashSet();
        var layout = expected.Select(e => (e.Name, DType: replaced.Contains(e.Name) ? delta.ReplacedDType(e.Name) : dtype, e.Shape)).ToList();
        var shards = new List<List<(string Name, DType DType, int[] Shape)>> { new() };
        long inShard = 0;
        foreach (var t in layout)
        {
            long b = t.DType.ByteCount(t.Shape);
            if (inShard > 0 && inShard + b > ShardBytes) { shards.Add([]); inShard = 0; }
            shards[^1].Add(t);
            inShard += b;
        }

        string full = Path.GetFullPath(outDir);
        string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            int done = 0;
            Tensor Make(string name)
            {
                progress?.Report((done++, expected.Count));
                // Mapped views: written straight from the files, no copy.
                if (replaced.Contains(name)) return delta.ReplacedTensor(name);
                if (!delta.Compressed.ContainsKey(name))
                {
                    var t = baseCk.Get(name);
                    if (t.DType == dtype) return t;
                    using (t) return t.Cast(dtype);
                }
                using var b = baseCk.Get(name);
                int rows = b.Dim(0), cols = b.Dim(1);
                var w = b.ToFloatArray();
                var d = delta.DenseDelta(name);
                for (long i = 0; i < w.Length; i++) w[i] += d[i];
                return Tensor.From(w, [rows, cols], Device.Cpu, dtype);
            }
            var meta = new Dictionary<string, string> { ["format"] = "pt" };
            var files = new List<string>();
            for (int i = 0; i < shards.Count; i++)
            {
                string file = shards.Count == 1 ? "model.safetensors" : $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                SafetensorsWriter.Write(Path.Combine(tmp, file), shards[i], Make, meta);
                files.Add(file);
            }
            progress?.Report((expected.Count, expected.Count));
            if (shards.Count > 1)
            {
                var map = new JsonObject();
                for (int i = 0; i < shards.Count; i++)
                    foreach (var t in shards[i]) map[t.Name] = files[i];
                var index = new JsonObject
                {
                    ["metadata"] = new JsonObject { ["total_size"] = layout.Sum(t => t.DType.ByteCount(t.Shape)) },
                    ["weight_map"] = map,
                };
                AtomicFile.WriteAllText(Path.Combine(tmp, "model.safetensors.index.json"), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            foreach (var side in SideFiles)
            {
                string from = File.Exists(Path.Combine(fineTunedDir, side)) ? Path.Combine(fineTunedDir, side) : Path.Combine(baseDir, side);
                if (File.Exists(from)) File.Copy(from, Path.Combine(tmp, side));
            }
            Directory.Move(tmp, full);
        }
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
    }
}

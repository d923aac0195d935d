using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace BitDeltaNative.Models;

/// <summary>
/// A compressed fine-tune: a safetensors file whose metadata says what it is and which base it belongs to.
/// Metadata: <c>format</c> = bitdeltanative-delta, <c>format_version</c>, <c>codec</c> (bitdelta now; the same
/// container is meant for other codecs such as low-rank mixed precision and sparse low-bit, each with its own
/// tensor suffixes), <c>base_config_hash</c> (<see cref="LlamaConfig.ConfigHash"/>), <c>base_weights_fingerprint</c>
/// (<see cref="WeightsFingerprint"/>), and <c>compressed</c>: a JSON object from each compressed linear's HF
/// weight name to its [out, in] shape. For codec bitdelta, a compressed linear <c>X.weight</c> is stored as
/// <c>X.signs</c> (U32 words [out, ceil(in/32)], see <see cref="BitDelta"/>) and <c>X.scale</c> (F32 [1]); every
/// other tensor is stored under its HF name, and only where it differs from the base.
/// </summary>
public sealed class DeltaFile : IDisposable
{
    public const string FormatName = "bitdeltanative-delta";
    public const int FormatVersion = 1;
    public static readonly string[] KnownCodecs = [BitDelta.Codec];

    readonly SafetensorsFile file;
    public string Path => file.Path;
    public string Codec { get; }
    public string BaseConfigHash { get; }
    public string BaseWeightsFingerprint { get; }
    /// <summary>Compressed linears: HF weight name → [out, in].</summary>
    public IReadOnlyDictionary<string, int[]> Compressed { get; }
    /// <summary>Tensors stored as they are in the fine-tune (HF names), because they differ from the base.</summary>
    public IReadOnlyList<string> Replaced { get; }

    DeltaFile(SafetensorsFile file, string codec, string configHash, string fingerprint, Dictionary<string, int[]> compressed)
    {
        this.file = file;
        Codec = codec;
        BaseConfigHash = configHash;
        BaseWeightsFingerprint = fingerprint;
        Compressed = compressed;
        var own = compressed.Keys.SelectMany(k => new[] { Stem(k) + ".signs", Stem(k) + ".scale" }).ToHashSet();
        Replaced = file.Entries.Select(e => e.Name).Where(n => !own.Contains(n)).ToList();
    }

    static string Stem(string weightName) =>
        weightName.EndsWith(".weight", StringComparison.Ordinal) ? weightName[..^".weight".Length] : weightName;

    /// <summary>One compressed linear of a bitdelta file: the packed signs (a view of the mapped file) and α.</summary>
    public (Tensor Signs, float Scale) BitDeltaLinear(string weightName)
    {
        if (!Compressed.TryGetValue(weightName, out var shape)) throw new BitDeltaException($"{Path}: '{weightName}' is not compressed in this file");
        var signs = file.Get(Stem(weightName) + ".signs", DType.Sign1, shape);
        return (signs, Scale(weightName));
    }

    float Scale(string weightName)
    {
        using var s = file.Get(Stem(weightName) + ".scale");
        return s.ToFloatArray()[0];
    }

    /// <summary>α of every compressed linear, by HF weight name (what `inspect --plot` draws).</summary>
    public Dictionary<string, float> Scales() => Compressed.Keys.ToDictionary(k => k, Scale);

    /// <summary>A tensor the delta stores as it is (embedding, lm_head, norms where they differ from the base).</summary>
    public Tensor ReplacedTensor(string name) => file.Get(name);

    public DType ReplacedDType(string name) => file.Entry(name).DType;

    /// <summary>Bytes of every tensor stored whole: an upper bound on what loading it adds beyond a pool slot's signs
    /// (norms go into rows the pool already holds; embedding and lm_head are copied).</summary>
    public long ReplacedBytes => Replaced.Sum(n => file.Entry(n).ByteLength);

    public static void Write(string path, string codec, LlamaConfig baseConfig, string baseFingerprint,
                             IReadOnlyList<(string WeightName, Tensor Signs, float Scale)> compressed,
                             IReadOnlyList<(string Name, Tensor Tensor)> replaced)
    {
        var shapes = compressed.ToDictionary(c => c.WeightName, c => c.Signs.Shape.ToArray());
        var meta = new Dictionary<string, string>
        {
            ["format"] = FormatName,
            ["format_version"] = FormatVersion.ToString(),
            ["codec"] = codec,
            ["base_config_hash"] = baseConfig.ConfigHash,
            ["base_weights_fingerprint"] = baseFingerprint,
            ["compressed"] = JsonSerializer.Serialize(shapes),
        };
        var tensors = new List<(string, Tensor)>();
        var scales = new List<Tensor>();
        try
        {
            foreach (var (name, signs, scale) in compressed)
            {
                if (signs.DType != DType.Sign1 || signs.Rank != 2) throw new ArgumentException($"{name}: signs must be Sign1 [out, in], got {signs}");
                var s = Tensor.From(new[] { scale }, [1]);
                scales.Add(s);
                tensors.Add((Stem(name) + ".signs", signs));
                tensors.Add((Stem(name) + ".scale", s));
            }
            tensors.AddRange(replaced);
            SafetensorsWriter.Write(path, tensors, meta);
        }
        finally
        {
            foreach (var s in scales) s.Dispose();
        }
    }

    public static DeltaFile Open(string path)
    {
        var f = SafetensorsFile.Open(path);
        try
        {
            string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v
                : throw new BitDeltaException($"{path}: metadata '{key}' is missing (not a delta file written by bitdelta compress?)");
            if (Meta("format") != FormatName) throw new BitDeltaException($"{path}: metadata format is '{Meta("format")}', expected '{FormatName}'");
            if (!int.TryParse(Meta("format_version"), out int version) || version < 1 || version > FormatVersion)
                throw new BitDeltaException($"{path}: format_version '{Meta("format_version")}' is not one this build reads (1..{FormatVersion})");
            string codec = Meta("codec");
            if (!KnownCodecs.Contains(codec)) throw new BitDeltaException($"{path}: codec '{codec}' is unknown (known: {string.Join(", ", KnownCodecs)})");
            Dictionary<string, int[]> compressed;
            try { compressed = JsonSerializer.Deserialize<Dictionary<string, int[]>>(Meta("compressed")) ?? []; }
            catch (JsonException) { throw new BitDeltaException($"{path}: metadata 'compressed' is not a JSON object of shapes"); }
            foreach (var (name, shape) in compressed)
            {
                if (shape.Length != 2 || shape[0] < 0 || shape[1] < 0) throw new BitDeltaException($"{path}: compressed '{name}' has shape [{string.Join(", ", shape)}], expected [out, in]");
                string stem = Stem(name);
                if (!f.Contains(stem + ".signs") || !f.Contains(stem + ".scale"))
                    throw new BitDeltaException($"{path}: compressed '{name}' has no {stem}.signs or {stem}.scale tensor");
                var e = f.Entry(stem + ".signs");
                if (e.DType != DType.U32 || e.Shape.Length != 2 || e.Shape[0] != shape[0] || e.Shape[1] != DTypes.SignWordsPerRow(shape[1]))
                    throw new BitDeltaException($"{path}: tensor '{stem}.signs' is {e.DType.SafetensorsName()}{e.ShapeString}, expected U32[{shape[0]}, {DTypes.SignWordsPerRow(shape[1])}] for [{shape[0]}, {shape[1]}]");
                var s = f.Entry(stem + ".scale");
                if (s.DType != DType.F32 || s.Shape.Length != 1 || s.Shape[0] != 1)
                    throw new BitDeltaException($"{path}: tensor '{stem}.scale' is {s.DType.SafetensorsName()}{s.ShapeString}, expected F32[1]");
            }
            return new DeltaFile(f, codec, Meta("base_config_hash"), Meta("base_weights_fingerprint"), compressed);
        }
        catch { f.Dispose(); throw; }
    }

    /// <summary>Refuses a base that is not the one the delta was made from, saying which part differs.</summary>
    public void CheckBase(string baseDir, LlamaConfig baseConfig, string baseFingerprint)
    {
        if (baseConfig.ConfigHash != BaseConfigHash)
            throw new BitDeltaException($"{Path}: made for a base with another architecture (config hash {BaseConfigHash[..12]}…), but {baseDir}/config.json hashes to {baseConfig.ConfigHash[..12]}…");
        if (baseFingerprint != BaseWeightsFingerprint)
            throw new BitDeltaException($"{Path}: made for other base weights (fingerprint {BaseWeightsFingerprint[..12]}…), but {baseDir} has {baseFingerprint[..12]}…");
    }

    public long ByteLength => new FileInfo(Path).Length;

    /// <summary>How distillation made the scales (the <c>distillation</c> metadata record <c>compress --calib</c>
    /// writes, JSON: calibration file, tokens, steps, batch, seq_len, lr, first and last loss); null when the scales
    /// are the plain mean |Δ|.</summary>
    public string? Distillation => file.Metadata.TryGetValue("distillation", out var v) ? v : null;

    /// <summary>One line on where the scales came from, for inspect and plots.</summary>
    public string ScalesOrigin()
    {
        if (Distillation == null) return "mean |W_ft - W_base| per matrix (not distilled)";
        try
        {
            var j = JsonDocument.Parse(Distillation).RootElement;
            return string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"distilled: {j.GetProperty("steps")} steps of {j.GetProperty("batch")} x {j.GetProperty("seq_len")} tokens of " +
                $"{j.GetProperty("calibration").GetString()}, lr {j.GetProperty("lr")}, loss {j.GetProperty("loss_first").GetDouble():G4} -> {j.GetProperty("loss_last").GetDouble():G4}");
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return "distilled (the distillation record is unreadable)";
        }
    }

    /// <summary>
    /// Writes a copy of this file to <paramref name="path"/> with new scales α (by HF weight name; every compressed
    /// linear must have one) and extra metadata entries (e.g. how distillation made the scales); signs and whole
    /// tensors are copied as they are, streamed, in the same order. Written to a temporary name and renamed; an
    /// existing file is not replaced.
    /// </summary>
    public void WriteWithScales(string path, IReadOnlyDictionary<string, float> scales, IReadOnlyDictionary<string, string> extraMetadata)
    {
        var byScaleName = new Dictionary<string, float>();
        foreach (var name in Compressed.Keys)
            byScaleName[Stem(name) + ".scale"] = scales.TryGetValue(name, out float a) && float.IsFinite(a) ? a
                : throw new ArgumentException($"no finite scale for '{name}'");
        var meta = file.Metadata.ToDictionary();
        foreach (var (k, v) in extraMetadata) meta[k] = v;
        var layout = file.Entries.Select(e => (e.Name, e.DType, e.Shape)).ToList();
        SafetensorsWriter.Write(path, layout, name => byScaleName.TryGetValue(name, out float a) ? Tensor.From(new[] { a }, [1]) : file.Get(name),
                                meta, owned: true, overwrite: false);
    }

    public void Dispose() => file.Dispose();
}

/// <summary>
/// A fingerprint of a checkpoint's weights that is cheap enough to check at every load: SHA-256 over every
/// tensor's name, dtype and shape and over a sample of its bytes (the first and last 16 KiB and 32 evenly spaced
/// 1 KiB pieces), about 64 KiB a tensor instead of 13.5 GB for a 7B model. Another base (a different model,
/// a retrained or fine-tuned one) differs in every sampled piece; a single edited weight may not be seen.
/// </summary>
public static class WeightsFingerprint
{
    public static string Of(Checkpoint ck)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var name in ck.Names.Order(StringComparer.Ordinal))
        {
            var e = ck.Entry(name);
            sha.AppendData(Encoding.UTF8.GetBytes($"{name}|{e.DType.SafetensorsName()}|{e.ShapeString}\n"));
            var bytes = ck.Bytes(name);
            const int Edge = 16 << 10, Piece = 1 << 10, Pieces = 32;
            if (bytes.Length <= 2 * Edge + Pieces * Piece) { sha.AppendData(bytes); continue; }
            sha.AppendData(bytes[..Edge]);
            sha.AppendData(bytes[^Edge..]);
            long step = (bytes.Length - Piece) / Pieces;
            for (int i = 0; i < Pieces; i++) sha.AppendData(bytes.Slice((int)(i * step), Piece));
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}

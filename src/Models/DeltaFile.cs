using BitDeltaNative.Kernels;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace BitDeltaNative.Models;

/// <summary>
/// A compressed fine-tune: a safetensors file whose metadata says what it is and which base it belongs to.
/// Metadata: <c>format</c> = bitdeltanative-delta, <c>format_version</c>, <c>codec</c>, <c>base_config_hash</c>
/// (<see cref="LlamaConfig.ConfigHash"/>), <c>base_weights_fingerprint</c> (<see cref="WeightsFingerprint"/>), and
/// <c>compressed</c>: a JSON object from each compressed linear's HF weight name to its [out, in] shape. Every other
/// tensor is stored under its HF name, and only where it differs from the base. A compressed linear <c>X.weight</c> is
/// stored by codec:
/// - bitdelta: <c>X.signs</c> (U32 words [out, ceil(in/32)], see <see cref="BitDelta"/>) and <c>X.scale</c> (F32 [1]);
/// - lowrank-mp (<see cref="Codecs.LowRankMp"/>): the <see cref="LowRankFactors"/> of its slices, flat:
///   <c>X.lr.vq</c>, <c>.vs</c>, <c>.vz</c>, <c>.uq</c>, <c>.us</c>, <c>.uz</c>, <c>.sigma</c>; each linear's slices (rank, bits) in
///   the metadata <c>codec_params</c>;
/// - sparse-lowbit (<see cref="Codecs.SparseLowBit"/>): the <see cref="SparseFactors"/>, <c>X.sp.meta</c>, <c>.q</c>, <c>.s</c>.
/// <c>codec_params</c> (JSON, codecs other than bitdelta) holds the group size, bits, quantizer and calibration. With
/// <c>zstd</c> metadata (a JSON object from tensor name to its dtype and shape) those tensors are stored as U8 zstd
/// frames: the lossless stage of sparse-lowbit files (DeltaZip compresses every tensor of a delta the same way).
/// </summary>
public sealed class DeltaFile : IDisposable
{
    public const string FormatName = "bitdeltanative-delta";
    public const int FormatVersion = 1;
    public static readonly string[] KnownCodecs = [BitDelta.Codec, Codecs.LowRankMp.Codec, Codecs.SparseLowBit.Codec];

    /// <summary>The tensor suffixes each codec stores for a compressed linear (after its stem).</summary>
    public static string[] Suffixes(string codec) => codec switch
    {
        BitDelta.Codec => [".signs", ".scale"],
        Codecs.LowRankMp.Codec => [".lr.vq", ".lr.vs", ".lr.vz", ".lr.uq", ".lr.us", ".lr.uz", ".lr.sigma"],
        Codecs.SparseLowBit.Codec => [".sp.meta", ".sp.q", ".sp.s"],
        _ => throw new ArgumentException($"unknown codec '{codec}'"),
    };

    readonly SafetensorsFile file;
    public string Path => file.Path;
    public string Codec { get; }
    public string BaseConfigHash { get; }
    public string BaseWeightsFingerprint { get; }
    /// <summary>Compressed linears: HF weight name → [out, in].</summary>
    public IReadOnlyDictionary<string, int[]> Compressed { get; }
    /// <summary>Tensors stored as they are in the fine-tune (HF names), because they differ from the base.</summary>
    public IReadOnlyList<string> Replaced { get; }

    /// <summary>The codec's parameters (codecs other than bitdelta).</summary>
    public CodecParams? Params { get; }
    readonly Dictionary<string, PackedEntry> zstd;

    /// <summary>Whether the file's tensors went through the zstd stage (sparse-lowbit's default).</summary>
    public bool Zstd => zstd.Count > 0;

    DeltaFile(SafetensorsFile file, string codec, string configHash, string fingerprint, Dictionary<string, int[]> compressed, CodecParams? ps,
              Dictionary<string, PackedEntry> zstd)
    {
        this.file = file;
        Codec = codec;
        BaseConfigHash = configHash;
        BaseWeightsFingerprint = fingerprint;
        Compressed = compressed;
        Params = ps;
        this.zstd = zstd;
        var own = compressed.Keys.SelectMany(k => Suffixes(codec).Select(x => Stem(k) + x)).ToHashSet();
        Replaced = file.Entries.Select(e => e.Name).Where(n => !own.Contains(n)).ToList();
    }

    static DType? DtypeOf(string? name) => name != null && DTypes.TryParseSafetensors(name, out var t) ? t : null;

    /// <summary>A tensor's dtype and shape before its zstd stage.</summary>
    public sealed record PackedEntry(string Dtype, int[] Shape);

    /// <summary>Tensor <paramref name="name"/> as stored, or decompressed into host memory where the file's lossless stage
    /// packed it.</summary>
    Tensor Read(string name)
    {
        if (!zstd.TryGetValue(name, out var p)) return file.Get(name);
        var dt = DtypeOf(p.Dtype) ?? throw new BitDeltaException($"{Path}: zstd entry '{name}' has dtype '{p.Dtype}'");
        using var packed = file.Get(name);
        var bytes = new byte[dt.ByteCount(p.Shape)];
        int n;
        using (var z = new ZstdSharp.Decompressor())
        {
            try { n = z.Unwrap(packed.HostBytes, bytes); }
            catch (ZstdSharp.ZstdException e) { throw new BitDeltaException($"{Path}: tensor '{name}' is not a valid zstd frame ({e.Message})"); }
        }
        if (n != bytes.Length) throw new BitDeltaException($"{Path}: tensor '{name}' decompresses to {n} bytes, expected {bytes.Length} for {p.Dtype}[{string.Join(", ", p.Shape)}]");
        return Tensor.FromHostMemory(bytes, p.Shape, dt);
    }

    /// <summary>(dtype, shape) of tensor <paramref name="name"/> as the codec reads it (before any zstd stage).</summary>
    (DType DType, int[] Shape) Logical(string name)
    {
        if (zstd.TryGetValue(name, out var p))
            return (DtypeOf(p.Dtype) ?? throw new BitDeltaException($"{Path}: zstd entry '{name}' has dtype '{p.Dtype}'"), p.Shape);
        var e = file.Entry(name);
        return (e.DType, e.Shape.ToArray());
    }

    internal static string Stem(string weightName) =>
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
    public Tensor ReplacedTensor(string name) => Read(name);

    public DType ReplacedDType(string name) => Logical(name).DType;

    /// <summary>Bytes of every tensor stored whole: an upper bound on what loading it adds beyond a pool slot's signs
    /// (norms go into rows the pool already holds; embedding and lm_head are copied).</summary>
    public long ReplacedBytes => Replaced.Sum(n => { var (dt, shape) = Logical(n); return dt.ByteCount(shape); });

    /// <summary>What loading this delta into a pool slot adds beyond the slot's signs: the tensors it stores whole and, for
    /// lowrank-mp and sparse-lowbit, their factors (which live beside the pool).</summary>
    public long ResidentBytes => ReplacedBytes + (Codec == BitDelta.Codec ? 0
        : Compressed.Keys.SelectMany(n => Suffixes(Codec).Select(x => Stem(n) + x)).Sum(t => { var (dt, shape) = Logical(t); return dt.ByteCount(shape); }));

    /// <summary>One compressed linear of a lowrank-mp file, on the host.</summary>
    public LowRankFactors LowRankLinear(string weightName)
    {
        var (outDim, inDim, slices) = LowRankShape(weightName);
        string st = Stem(weightName);
        var ranks = slices.Select(x => x[0]).ToArray();
        var bits = slices.Select(x => x[1]).ToArray();
        var table = LowRankFactors.MakeTable(ranks, bits, outDim, inDim, Params!.Group);
        Tensor Host(string suffix) => Owned(Read(st + suffix));
        return new LowRankFactors(Host(".lr.vq"), Host(".lr.vs"), Host(".lr.vz"), Host(".lr.uq"), Host(".lr.us"), Host(".lr.uz"), Host(".lr.sigma"),
            Tensor.From(table, [table.Length]), ranks, bits, Params.Group, outDim, inDim);
    }

    /// <summary>A host copy of <paramref name="t"/> that outlives this file (t, perhaps a view of the mapped file, is
    /// disposed).</summary>
    static Tensor Owned(Tensor t)
    {
        using (t)
        {
            var c = Tensor.Empty(t.Shape, t.DType, Device.Cpu);
            c.CopyFrom(t);
            return c;
        }
    }

    (int Out, int In, int[][] Slices) LowRankShape(string weightName)
    {
        if (!Compressed.TryGetValue(weightName, out var shape)) throw new BitDeltaException($"{Path}: '{weightName}' is not compressed in this file");
        if (Params?.Slices == null || !Params.Slices.TryGetValue(weightName, out var slices))
            throw new BitDeltaException($"{Path}: codec_params has no slices for '{weightName}'");
        return (shape[0], shape[1], slices);
    }

    /// <summary>One compressed linear of a sparse-lowbit file, on the host.</summary>
    public SparseFactors SparseLinear(string weightName)
    {
        if (!Compressed.TryGetValue(weightName, out var shape)) throw new BitDeltaException($"{Path}: '{weightName}' is not compressed in this file");
        string st = Stem(weightName);
        Tensor Host(string suffix) => Owned(Read(st + suffix));
        return new SparseFactors(Host(".sp.meta"), Host(".sp.q"), Host(".sp.s"), Params!.Bits, Params.Group, shape[0], shape[1]);
    }

    /// <summary>A compressed linear's Δ decoded to f32 [out, in] (for --save-full-model and tests): α·sign, U·diag(σ)·Vᵀ from
    /// the dequantized factors, or the 2:4 values in place.</summary>
    public float[] DenseDelta(string weightName)
    {
        if (!Compressed.TryGetValue(weightName, out var shape)) throw new BitDeltaException($"{Path}: '{weightName}' is not compressed in this file");
        int outDim = shape[0], inDim = shape[1];
        switch (Codec)
        {
            case BitDelta.Codec:
            {
                var (signs, scale) = BitDeltaLinear(weightName);
                using (signs)
                {
                    var d = new float[(long)outDim * inDim];
                    BitLinear.MaterializeTwin(new float[d.Length], signs.Host<uint>(), scale, d, outDim, inDim);
                    return d;
                }
            }
            case Codecs.LowRankMp.Codec:
            {
                using var f = LowRankLinear(weightName);
                var (v, u) = Kernels.LowRankLinear.Decode(LowRankHost.Of(f));
                int rank = f.Rank;
                var d = new float[(long)outDim * inDim];
                Parallel.For(0, outDim, o =>
                {
                    for (int i = 0; i < inDim; i++)
                    {
                        double sum = 0;
                        for (int j = 0; j < rank; j++) sum += (double)u[(long)o * rank + j] * v[(long)j * inDim + i];
                        d[(long)o * inDim + i] = (float)sum;
                    }
                });
                return d;
            }
            default:
            {
                using var f = SparseLinear(weightName);
                return Kernels.SparseLinear.Decode(f.Meta.Host<uint>(), f.Codes.Host<uint>(), f.Scales.Host<ushort>(), f.Bits, f.Group, inDim, outDim);
            }
        }
    }

    /// <summary>What each compressed tensor of a codec must be, for an [out, in] linear (dtype and shape as read).</summary>
    static IEnumerable<(string Suffix, DType DType, int[] Shape)> Expected(string codec, int outDim, int inDim, CodecParams? ps, int[][]? slices)
    {
        switch (codec)
        {
            case BitDelta.Codec:
                yield return (".signs", DType.U32, [outDim, DTypes.SignWordsPerRow(inDim)]);
                yield return (".scale", DType.F32, [1]);
                break;
            case Codecs.LowRankMp.Codec:
            {
                var sl = slices!;
                int g = ps!.Group, rank = sl.Sum(x => x[0]);
                int vWords = sl.Sum(x => x[0] * PackedCodes.RowWords(inDim, x[1]));
                int uWords = sl.Sum(x => outDim * PackedCodes.RowWords(x[0], x[1]));
                int uParams = sl.Sum(x => outDim * ((x[0] + g - 1) / g));
                int vParams = rank * ((inDim + g - 1) / g);
                yield return (".lr.vq", DType.U32, [vWords]);
                yield return (".lr.vs", DType.F16, [vParams]);
                yield return (".lr.vz", DType.U8, [vParams]);
                yield return (".lr.uq", DType.U32, [uWords]);
                yield return (".lr.us", DType.F16, [uParams]);
                yield return (".lr.uz", DType.U8, [uParams]);
                yield return (".lr.sigma", DType.F32, [rank]);
                break;
            }
            case Codecs.SparseLowBit.Codec:
                yield return (".sp.meta", DType.U32, [outDim, SparseFactors.MetaWords(inDim)]);
                yield return (".sp.q", DType.U32, [outDim, PackedCodes.RowWords(inDim / 2, ps!.Bits)]);
                yield return (".sp.s", DType.F16, [outDim, (inDim + ps.Group - 1) / ps.Group]);
                break;
        }
    }

    /// <summary>The metadata every delta file starts with: what it is, its codec, its base, its compressed shapes.</summary>
    static Dictionary<string, string> Header(string codec, LlamaConfig baseConfig, string baseFingerprint, Dictionary<string, int[]> shapes) => new()
    {
        ["format"] = FormatName,
        ["format_version"] = FormatVersion.ToString(),
        ["codec"] = codec,
        ["base_config_hash"] = baseConfig.ConfigHash,
        ["base_weights_fingerprint"] = baseFingerprint,
        ["compressed"] = JsonSerializer.Serialize(shapes),
    };

    public static void Write(string path, string codec, LlamaConfig baseConfig, string baseFingerprint,
                             IReadOnlyList<(string WeightName, Tensor Signs, float Scale)> compressed,
                             IReadOnlyList<(string Name, Tensor Tensor)> replaced)
    {
        var meta = Header(codec, baseConfig, baseFingerprint, compressed.ToDictionary(c => c.WeightName, c => c.Signs.Shape.ToArray()));
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

    /// <summary>
    /// Writes a lowrank-mp or sparse-lowbit delta: each compressed linear's tensors (by suffix, <see cref="Suffixes"/>),
    /// the tensors kept whole, and the codec's parameters. With <paramref name="zstd"/> every tensor is stored as a zstd
    /// frame (level 19) and its dtype and shape recorded in the <c>zstd</c> metadata. Atomic, as every delta write.
    /// </summary>
    public static void WriteCodec(string path, string codec, LlamaConfig baseConfig, string baseFingerprint,
                                  IReadOnlyList<(string WeightName, int[] Shape, Tensor[] Tensors)> compressed,
                                  IReadOnlyList<(string Name, Tensor Tensor)> replaced, CodecParams ps, bool zstd)
    {
        var suffixes = Suffixes(codec);
        var meta = Header(codec, baseConfig, baseFingerprint, compressed.ToDictionary(c => c.WeightName, c => c.Shape));
        meta["codec_params"] = JsonSerializer.Serialize(ps, CodecParams.Json);
        var tensors = new List<(string Name, Tensor Tensor)>();
        foreach (var (name, _, ts) in compressed)
        {
            if (ts.Length != suffixes.Length) throw new ArgumentException($"{name}: {ts.Length} tensors, {codec} stores {suffixes.Length}");
            for (int i = 0; i < ts.Length; i++) tensors.Add((Stem(name) + suffixes[i], ts[i]));
        }
        tensors.AddRange(replaced);
        if (!zstd)
        {
            SafetensorsWriter.Write(path, tensors, meta);
            return;
        }
        var packed = new List<(string, Tensor)>();
        var entries = new Dictionary<string, PackedEntry>();
        try
        {
            using var z = new ZstdSharp.Compressor(19);
            foreach (var (name, t) in tensors)
            {
                var bytes = new byte[t.ByteLength];
                t.CopyTo(bytes);
                var frame = z.Wrap(bytes).ToArray();
                packed.Add((name, Tensor.From(frame, [frame.Length])));
                entries[name] = new PackedEntry(t.DType.SafetensorsName(), t.Shape.ToArray());
            }
            meta["zstd"] = JsonSerializer.Serialize(entries, CodecParams.Json);
            SafetensorsWriter.Write(path, packed, meta);
        }
        finally
        {
            foreach (var (_, t) in packed) t.Dispose();
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
            CodecParams? ps = null;
            if (codec != BitDelta.Codec)
            {
                try { ps = JsonSerializer.Deserialize<CodecParams>(Meta("codec_params"), CodecParams.Json); }
                catch (JsonException) { throw new BitDeltaException($"{path}: metadata 'codec_params' is not the JSON object {codec} writes"); }
                if (ps == null || ps.Group < 1) throw new BitDeltaException($"{path}: metadata 'codec_params' has no positive group size");
                if (codec == Codecs.SparseLowBit.Codec && ps.Bits != 2 && ps.Bits != 4)
                    throw new BitDeltaException($"{path}: codec_params bits is {ps.Bits}, expected 2 or 4 for {codec}");
                if (codec == Codecs.SparseLowBit.Codec && ps.Group % 4 != 0)
                    throw new BitDeltaException($"{path}: codec_params group is {ps.Group}, expected a multiple of 4 for {codec} (its groups of inputs hold whole groups of four)");
            }
            var zstd = new Dictionary<string, PackedEntry>();
            if (f.Metadata.TryGetValue("zstd", out var z))
            {
                try { zstd = JsonSerializer.Deserialize<Dictionary<string, PackedEntry>>(z, CodecParams.Json) ?? []; }
                catch (JsonException) { throw new BitDeltaException($"{path}: metadata 'zstd' is not a JSON object of dtypes and shapes"); }
                foreach (var (name, p) in zstd)
                    if (!f.Contains(name) || f.Entry(name).DType != DType.U8 || p.Shape == null || DtypeOf(p.Dtype) == null)
                        throw new BitDeltaException($"{path}: zstd entry '{name}' is not a U8 tensor of the file with a known dtype and a shape");
            }
            var file = new DeltaFile(f, codec, Meta("base_config_hash"), Meta("base_weights_fingerprint"), compressed, ps, zstd);
            foreach (var (name, shape) in compressed)
            {
                if (shape.Length != 2 || shape[0] < 0 || shape[1] < 0) throw new BitDeltaException($"{path}: compressed '{name}' has shape [{string.Join(", ", shape)}], expected [out, in]");
                int[][]? slices = null;
                if (codec == Codecs.LowRankMp.Codec)
                {
                    if (ps!.Slices == null || !ps.Slices.TryGetValue(name, out slices) || slices.Any(x => x.Length != 2 || x[0] < 1 || x[1] < 1 || x[1] > 8))
                        throw new BitDeltaException($"{path}: codec_params slices for '{name}' are missing or not [[rank, bits 1..8], …]");
                }
                if (codec == Codecs.SparseLowBit.Codec && shape[1] % 4 != 0)
                    throw new BitDeltaException($"{path}: compressed '{name}' has {shape[1]} inputs, not a multiple of 4 (2:4 sparsity)");
                string stem = Stem(name);
                foreach (var (suffix, dt, want) in Expected(codec, shape[0], shape[1], ps, slices))
                {
                    if (!f.Contains(stem + suffix)) throw new BitDeltaException($"{path}: compressed '{name}' has no {stem}{suffix} tensor");
                    var (gotType, gotShape) = file.Logical(stem + suffix);
                    if (gotType != dt || !gotShape.SequenceEqual(want))
                        throw new BitDeltaException($"{path}: tensor '{stem}{suffix}' is {gotType.SafetensorsName()}[{string.Join(", ", gotShape)}], expected {dt.SafetensorsName()}[{string.Join(", ", want)}] for [{shape[0]}, {shape[1]}]");
                }
            }
            return file;
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

/// <summary>
/// The <c>codec_params</c> metadata of a lowrank-mp or sparse-lowbit delta file: group size (along each quantized row),
/// bits (sparse-lowbit), each linear's slices as [rank, bits] pairs (lowrank-mp), the quantizer (gptq with calibration,
/// rtn without) and where the calibration came from.
/// </summary>
public sealed record CodecParams
{
    public int Group { get; init; }
    public int Bits { get; init; }
    /// <summary>lowrank-mp: the bits a weight its ranks were chosen to fill.</summary>
    public double? Budget { get; init; }
    public Dictionary<string, int[][]>? Slices { get; init; }
    public string Quantizer { get; init; } = "rtn";
    public string? Calibration { get; init; }

    public static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };
}

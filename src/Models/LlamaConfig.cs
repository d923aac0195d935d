using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models;

/// <summary>The model classes this engine runs. They share one forward pass; Mistral adds a sliding window.</summary>
public enum Architecture { Llama, Mistral }


/// <summary>
/// What inference needs from a Hugging Face <c>config.json</c> of a Llama or Mistral model, with the defaults
/// that transformers applies when a field is absent (models/llama/configuration_llama.py,
/// models/mistral/configuration_mistral.py, modeling_rope_utils.py). Fields that fix the shapes have no default:
/// a config without them is refused rather than guessed.
/// </summary>
public sealed record LlamaConfig
{
    public const string FileName = "config.json";
    public static readonly string[] SupportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM"];

    public required Architecture Architecture { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    /// <summary>Key/value heads (grouped-query attention); equals <see cref="NumHeads"/> when config.json has none.</summary>
    public required int NumKvHeads { get; init; }
    /// <summary><c>head_dim</c> when given (Mistral-Nemo's differs from hidden/heads), else hidden_size / num_attention_heads.</summary>
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    /// <summary>Null: plain RoPE (<c>rope_scaling</c> null, absent or of type "default").</summary>
    public Llama3RopeScaling? RopeScaling { get; init; }
    /// <summary>
    /// Mistral's attention window: a query at position i sees keys j with i − W &lt; j ≤ i (transformers,
    /// masking_utils.py, <c>sliding_window_overlay</c>). HF Mistral applies it whenever <c>sliding_window</c> is not
    /// null: there is no <c>use_sliding_window</c> switch in MistralConfig (that is Qwen2's), and an absent field
    /// takes MistralConfig's default of 4096 (Mistral-7B-v0.1 has 4096; v0.2 and later write null). Llama has no
    /// sliding window: LlamaModel builds a plain causal mask, so the field is ignored there. Null: full causal attention.
    /// </summary>
    public int? SlidingWindow { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>The dtype the checkpoint was saved in (<c>dtype</c>, or the older <c>torch_dtype</c>); null when
    /// config.json does not say. The weights keep the dtype of the safetensors file either way.</summary>
    public DType? DType { get; init; }
    public int? BosTokenId { get; init; }
    /// <summary>Every end-of-sequence id (<c>eos_token_id</c> may be a list: Llama 3 Instruct has three).</summary>
    public required IReadOnlyList<int> EosTokenIds { get; init; }

    public int QDim => NumHeads * HeadDim;
    public int KvDim => NumKvHeads * HeadDim;

    // ---- loading ----

    public static LlamaConfig Load(string modelDir)
    {
        string path = Path.Combine(modelDir, FileName);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BitDeltaException($"{path}: cannot read: {e.Message.ReplaceLineEndings(" ")}", e);
        }
        return Parse(bytes, path);
    }

    /// <summary>Parses config.json text; <paramref name="path"/> names the file in error messages.</summary>
    public static LlamaConfig Parse(ReadOnlySpan<byte> json, string path = FileName)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { AllowTrailingCommas = false }); }
        catch (JsonException e) { throw new BitDeltaException($"{path}: not valid JSON ({e.Message.ReplaceLineEndings(" ")})", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new BitDeltaException($"{path}: not a JSON object");
            return new Reader(doc.RootElement, path).Read();
        }
    }

    /// <summary>Reads fields with one-line errors naming the file and the field. Absent and null are the same
    /// (HF writes null for "not set").</summary>
    readonly struct Reader(JsonElement root, string path)
    {
        BitDeltaException Bad(string field, string what) => new($"{path}: {field} {what}");

        static string Kind(JsonElement v) => v.ValueKind switch
        {
            JsonValueKind.String => $"\"{v.GetString()}\" (a string)",
            JsonValueKind.Number => $"{v.GetRawText()} (a number)",
            JsonValueKind.True or JsonValueKind.False => $"{v.GetRawText()} (a boolean)",
            JsonValueKind.Array => "a list",
            JsonValueKind.Object => "an object",
            _ => "null",
        };

        JsonElement? Get(JsonElement obj, string field) =>
            obj.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        public int? OptInt(string field, JsonElement? obj = null, string? prefix = null)
        {
            var v = Get(obj ?? root, field);
            if (v is null) return null;
            string name = prefix + field;
            if (v.Value.ValueKind != JsonValueKind.Number) throw Bad(name, $"is {Kind(v.Value)}, expected an integer");
            if (v.Value.TryGetInt32(out int i)) return i;
            // transformers writes some integers as floats (e.g. 8192.0); accept those that are whole.
            if (v.Value.TryGetDouble(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
            throw Bad(name, $"is {v.Value.GetRawText()}, expected a 32-bit integer");
        }

        public int Int(string field) => OptInt(field) ?? throw Bad(field, "is missing");

        public int Positive(string field, int? value)
        {
            if (value is null) throw Bad(field, "is missing");
            if (value <= 0) throw Bad(field, $"is {value}, expected a positive integer");
            return value.Value;
        }

        public double? OptDouble(string field, JsonElement? obj = null, string? prefix = null)
        {
            var v = Get(obj ?? root, field);
            if (v is null) return null;
            if (v.Value.ValueKind != JsonValueKind.Number || !v.Value.TryGetDouble(out double d) || !double.IsFinite(d))
                throw Bad(prefix + field, $"is {Kind(v.Value)}, expected a number");
            return d;
        }

        public bool? OptBool(string field)
        {
            var v = Get(root, field);
            if (v is null) return null;
            if (v.Value.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad(field, $"is {Kind(v.Value)}, expected true or false");
            return v.Value.GetBoolean();
        }

        public string? OptString(string field, JsonElement? obj = null, string? prefix = null)
        {
            var v = Get(obj ?? root, field);
            if (v is null) return null;
            if (v.Value.ValueKind != JsonValueKind.String) throw Bad(prefix + field, $"is {Kind(v.Value)}, expected a string");
            return v.Value.GetString();
        }

        public LlamaConfig Read()
        {
            var arch = ReadArchitecture();

            // Unsupported variants of the Llama block are refused, not silently run wrong.
            string act = OptString("hidden_act") ?? "silu";
            if (act != "silu") throw Bad("hidden_act", $"is \"{act}\"; only \"silu\" (Llama, Mistral) is supported");
            if (arch == Architecture.Llama)
            {
                // MistralAttention/MistralMLP build their projections with bias=False whatever the config says,
                // so these two switches only exist for Llama (configuration_llama.py).
                if (OptBool("attention_bias") == true) throw Bad("attention_bias", "is true; Llama-2/3 and Mistral have no attention biases and this engine supports none");
                if (OptBool("mlp_bias") == true) throw Bad("mlp_bias", "is true; Llama-2/3 and Mistral have no MLP biases and this engine supports none");
            }

            int hidden = Positive("hidden_size", OptInt("hidden_size"));
            int inter = Positive("intermediate_size", OptInt("intermediate_size"));
            int layers = Positive("num_hidden_layers", OptInt("num_hidden_layers"));
            int heads = Positive("num_attention_heads", OptInt("num_attention_heads"));
            int vocab = Positive("vocab_size", OptInt("vocab_size"));
            int kvHeads = Positive("num_key_value_heads", OptInt("num_key_value_heads") ?? heads);
            if (heads % kvHeads != 0)
                throw Bad("num_key_value_heads", $"is {kvHeads}, which does not divide num_attention_heads {heads}");
            int? headDimField = OptInt("head_dim");
            if (headDimField is null && hidden % heads != 0)
                throw Bad("hidden_size", $"is {hidden}, not a multiple of num_attention_heads {heads} (and there is no head_dim)");
            int headDim = Positive("head_dim", headDimField ?? hidden / heads);
            if (headDim % 2 != 0) throw Bad("head_dim", $"is {headDim}; RoPE needs an even head dimension");

            // Defaults are the config classes' own: Llama 2048 positions, Mistral 4096*32.
            int maxPos = Positive("max_position_embeddings",
                OptInt("max_position_embeddings") ?? (arch == Architecture.Mistral ? 4096 * 32 : 2048));
            double eps = OptDouble("rms_norm_eps") ?? 1e-6;
            if (eps <= 0) throw Bad("rms_norm_eps", $"is {eps.ToString("R", CultureInfo.InvariantCulture)}, expected a positive number");

            var (theta, scaling) = ReadRope(maxPos);

            int? window = null;
            if (arch == Architecture.Mistral)
            {
                bool present = root.TryGetProperty("sliding_window", out _);
                window = present ? OptInt("sliding_window") : 4096;
                if (window is <= 0) throw Bad("sliding_window", $"is {window}, expected a positive integer or null");
            }

            return new LlamaConfig
            {
                Architecture = arch,
                HiddenSize = hidden,
                IntermediateSize = inter,
                NumLayers = layers,
                NumHeads = heads,
                NumKvHeads = kvHeads,
                HeadDim = headDim,
                VocabSize = vocab,
                MaxPositionEmbeddings = maxPos,
                RmsNormEps = eps,
                RopeTheta = theta,
                RopeScaling = scaling,
                SlidingWindow = window,
                TieWordEmbeddings = OptBool("tie_word_embeddings") ?? false,
                DType = ReadDType(),
                BosTokenId = root.TryGetProperty("bos_token_id", out _) ? OptInt("bos_token_id") : 1,
                EosTokenIds = ReadEos(),
            };
        }

        Architecture ReadArchitecture()
        {
            string supported = string.Join(", ", SupportedArchitectures);
            Architecture? fromArchitectures = null;
            var archs = Get(root, "architectures");
            if (archs is { } a)
            {
                if (a.ValueKind != JsonValueKind.Array || a.GetArrayLength() == 0 || a.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String))
                    throw Bad("architectures", $"is {Kind(a)}, expected a list of class names");
                var names = a.EnumerateArray().Select(x => x.GetString()!).ToList();
                if (names.Count != 1)
                    throw Bad("architectures", $"lists {string.Join(", ", names)}; expected exactly one of {supported}");
                fromArchitectures = names[0] switch
                {
                    "LlamaForCausalLM" => Architecture.Llama,
                    "MistralForCausalLM" => Architecture.Mistral,
                    _ => throw Bad("architectures", $"is {names[0]}, which is not supported (supported: {supported})"),
                };
            }
            string? modelType = OptString("model_type");
            Architecture? fromType = modelType switch
            {
                null => null,
                "llama" => Architecture.Llama,
                "mistral" => Architecture.Mistral,
                _ => throw Bad("model_type", $"is \"{modelType}\", which is not supported (supported: llama, mistral)"),
            };
            if (fromArchitectures is { } x && fromType is { } y && x != y)
                throw Bad("architectures", $"says {archs!.Value[0].GetString()} but model_type says \"{modelType}\"");
            return fromArchitectures ?? fromType
                ?? throw Bad("architectures", $"and model_type are both missing; expected one of {supported}");
        }

        /// <summary>
        /// RoPE as transformers standardises it (modeling_rope_utils.py, <c>RotaryEmbeddingConfigMixin</c>): the legacy
        /// <c>rope_scaling</c> dict wins over the newer <c>rope_parameters</c> when both are set; <c>rope_theta</c> is
        /// read inside that dict first, then at top level, then 10000; the type is <c>rope_type</c>, else the older
        /// <c>type</c>, else "default"; llama3's <c>original_max_position_embeddings</c> comes from a top-level field
        /// of that name when present, else from the dict, else max_position_embeddings.
        /// </summary>
        (double Theta, Llama3RopeScaling? Scaling) ReadRope(int maxPos)
        {
            JsonElement? dict = null;
            string dictName = "rope_parameters";
            foreach (var name in new[] { "rope_scaling", "rope_parameters" })
            {
                var v = Get(root, name);
                if (v is null) continue;
                if (v.Value.ValueKind != JsonValueKind.Object) throw Bad(name, $"is {Kind(v.Value)}, expected an object or null");
                // An empty dict counts as unset, as Python's `rope_scaling or rope_parameters` treats it.
                if (!v.Value.EnumerateObject().Any()) continue;
                dict = v;
                dictName = name;
                break;
            }
            string p = dictName + ".";
            double theta = (dict is { } d0 ? OptDouble("rope_theta", d0, p) : null) ?? OptDouble("rope_theta") ?? 10000.0;
            if (theta <= 0) throw Bad(dict is { } d1 && Get(d1, "rope_theta") is not null ? p + "rope_theta" : "rope_theta",
                $"is {theta.ToString("R", CultureInfo.InvariantCulture)}, expected a positive number");
            if (dict is not { } rope) return (theta, null);

            var partial = OptDouble("partial_rotary_factor", rope, p) ?? OptDouble("partial_rotary_factor");
            if (partial is { } pr && pr != 1.0)
                throw Bad("partial_rotary_factor", $"is {pr.ToString("R", CultureInfo.InvariantCulture)}; Llama and Mistral rotate the whole head (1.0)");

            string typeField = Get(rope, "rope_type") is not null ? "rope_type" : "type";
            string type = OptString(typeField, rope, p) ?? "default";
            switch (type)
            {
                case "default":
                    return (theta, null);
                case "llama3":
                    double factor = OptDouble("factor", rope, p) ?? throw Bad(p + "factor", "is missing (needed by rope_type llama3)");
                    double low = OptDouble("low_freq_factor", rope, p) ?? throw Bad(p + "low_freq_factor", "is missing (needed by rope_type llama3)");
                    double high = OptDouble("high_freq_factor", rope, p) ?? throw Bad(p + "high_freq_factor", "is missing (needed by rope_type llama3)");
                    int original = OptInt("original_max_position_embeddings")
                        ?? OptInt("original_max_position_embeddings", rope, p) ?? maxPos;
                    if (factor <= 0) throw Bad(p + "factor", $"is {factor.ToString("R", CultureInfo.InvariantCulture)}, expected a positive number");
                    if (low <= 0 || high <= low)
                        throw Bad(p + "high_freq_factor", $"is {high.ToString("R", CultureInfo.InvariantCulture)} with low_freq_factor {low.ToString("R", CultureInfo.InvariantCulture)}; expected 0 < low_freq_factor < high_freq_factor");
                    if (original <= 0) throw Bad(p + "original_max_position_embeddings", $"is {original}, expected a positive integer");
                    return (theta, new Llama3RopeScaling(factor, low, high, original));
                default:
                    throw Bad(p + typeField, $"is \"{type}\", which is not supported (supported: default, llama3)");
            }
        }

        DType? ReadDType()
        {
            // transformers 5 writes `dtype`; earlier versions `torch_dtype`.
            string field = Get(root, "dtype") is not null ? "dtype" : "torch_dtype";
            string? s = OptString(field);
            return s switch
            {
                null => null,
                "float16" => BitDeltaNative.DType.F16,
                "bfloat16" => BitDeltaNative.DType.BF16,
                "float32" => BitDeltaNative.DType.F32,
                _ => throw Bad(field, $"is \"{s}\", which is not supported (supported: float16, bfloat16, float32)"),
            };
        }

        IReadOnlyList<int> ReadEos()
        {
            if (!root.TryGetProperty("eos_token_id", out var v)) return [2];
            if (v.ValueKind == JsonValueKind.Null) return [];
            if (v.ValueKind == JsonValueKind.Number) return [OptInt("eos_token_id")!.Value];
            if (v.ValueKind != JsonValueKind.Array) throw Bad("eos_token_id", $"is {Kind(v)}, expected an integer or a list of integers");
            var ids = new List<int>();
            foreach (var e in v.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id))
                    throw Bad("eos_token_id", $"holds {Kind(e)}, expected integers");
                if (!ids.Contains(id)) ids.Add(id);
            }
            return ids;
        }
    }

    // ---- derived values ----

    /// <summary>
    /// SHA-256 (lowercase hex) of the fields that define the computation, written one per line in a fixed order
    /// with invariant number formatting. Equal for two configs whose weights have the same names and shapes and
    /// whose forward passes are the same; dtype, token ids and max_position_embeddings (when it does not enter
    /// RoPE) are left out. A delta file stores it to find out later whether a base model fits.
    /// </summary>
    public string ConfigHash => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(CanonicalText)));

    /// <summary>The text that <see cref="ConfigHash"/> hashes (also written into delta metadata, for humans).</summary>
    public string CanonicalText
    {
        get
        {
            static string D(double d) => d.ToString("R", CultureInfo.InvariantCulture);
            var sb = new StringBuilder();
            sb.Append("bitdelta-config-v1\n");
            sb.Append("architecture=").Append(Architecture == Architecture.Llama ? "LlamaForCausalLM" : "MistralForCausalLM").Append('\n');
            sb.Append("hidden_size=").Append(HiddenSize).Append('\n');
            sb.Append("intermediate_size=").Append(IntermediateSize).Append('\n');
            sb.Append("num_hidden_layers=").Append(NumLayers).Append('\n');
            sb.Append("num_attention_heads=").Append(NumHeads).Append('\n');
            sb.Append("num_key_value_heads=").Append(NumKvHeads).Append('\n');
            sb.Append("head_dim=").Append(HeadDim).Append('\n');
            sb.Append("vocab_size=").Append(VocabSize).Append('\n');
            sb.Append("rms_norm_eps=").Append(D(RmsNormEps)).Append('\n');
            sb.Append("rope_theta=").Append(D(RopeTheta)).Append('\n');
            sb.Append("rope_scaling=").Append(RopeScaling is { } r
                ? $"llama3,factor={D(r.Factor)},low_freq_factor={D(r.LowFreqFactor)},high_freq_factor={D(r.HighFreqFactor)},original_max_position_embeddings={r.OriginalMaxPositionEmbeddings}"
                : "none").Append('\n');
            sb.Append("sliding_window=").Append(SlidingWindow?.ToString(CultureInfo.InvariantCulture) ?? "none").Append('\n');
            sb.Append("tie_word_embeddings=").Append(TieWordEmbeddings ? "true" : "false").Append('\n');
            return sb.ToString();
        }
    }
}

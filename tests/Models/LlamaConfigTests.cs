using BitDeltaNative.Kernels;
using System.Text;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Models;

public class LlamaConfigTests
{
    // config.json files as Hugging Face publishes them (values of the real checkpoints named).

    const string Llama2_7B = """
    {
      "_name_or_path": "meta-llama/Llama-2-7b-hf",
      "architectures": ["LlamaForCausalLM"],
      "bos_token_id": 1,
      "eos_token_id": 2,
      "hidden_act": "silu",
      "hidden_size": 4096,
      "initializer_range": 0.02,
      "intermediate_size": 11008,
      "max_position_embeddings": 4096,
      "model_type": "llama",
      "num_attention_heads": 32,
      "num_hidden_layers": 32,
      "num_key_value_heads": 32,
      "pretraining_tp": 1,
      "rms_norm_eps": 1e-05,
      "rope_scaling": null,
      "tie_word_embeddings": false,
      "torch_dtype": "float16",
      "transformers_version": "4.31.0.dev0",
      "use_cache": true,
      "vocab_size": 32000
    }
    """;

    const string Llama31_8B_Instruct = """
    {
      "architectures": ["LlamaForCausalLM"],
      "attention_bias": false,
      "attention_dropout": 0.0,
      "bos_token_id": 128000,
      "eos_token_id": [128001, 128008, 128009],
      "hidden_act": "silu",
      "hidden_size": 4096,
      "initializer_range": 0.02,
      "intermediate_size": 14336,
      "max_position_embeddings": 131072,
      "mlp_bias": false,
      "model_type": "llama",
      "num_attention_heads": 32,
      "num_hidden_layers": 32,
      "num_key_value_heads": 8,
      "pretraining_tp": 1,
      "rms_norm_eps": 1e-05,
      "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3"
      },
      "rope_theta": 500000.0,
      "tie_word_embeddings": false,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.42.3",
      "use_cache": true,
      "vocab_size": 128256
    }
    """;

    // transformers 5 writes `dtype` and folds rope_theta into `rope_parameters`.
    const string Llama32_1B_NewStyle = """
    {
      "architectures": ["LlamaForCausalLM"],
      "bos_token_id": 128000,
      "dtype": "bfloat16",
      "eos_token_id": 128001,
      "head_dim": 64,
      "hidden_size": 2048,
      "intermediate_size": 8192,
      "max_position_embeddings": 131072,
      "model_type": "llama",
      "num_attention_heads": 32,
      "num_hidden_layers": 16,
      "num_key_value_heads": 8,
      "rms_norm_eps": 1e-05,
      "rope_parameters": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "rope_type": "llama3"
      },
      "tie_word_embeddings": true,
      "transformers_version": "5.0.0",
      "vocab_size": 128256
    }
    """;

    const string Mistral7B_v01 = """
    {
      "architectures": ["MistralForCausalLM"],
      "bos_token_id": 1,
      "eos_token_id": 2,
      "hidden_act": "silu",
      "hidden_size": 4096,
      "initializer_range": 0.02,
      "intermediate_size": 14336,
      "max_position_embeddings": 32768,
      "model_type": "mistral",
      "num_attention_heads": 32,
      "num_hidden_layers": 32,
      "num_key_value_heads": 8,
      "rms_norm_eps": 1e-05,
      "rope_theta": 10000.0,
      "sliding_window": 4096,
      "tie_word_embeddings": false,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.34.0.dev0",
      "use_cache": true,
      "vocab_size": 32000
    }
    """;

    const string Mistral7B_Instruct_v02 = """
    {
      "architectures": ["MistralForCausalLM"],
      "attention_dropout": 0.0,
      "bos_token_id": 1,
      "eos_token_id": 2,
      "hidden_act": "silu",
      "hidden_size": 4096,
      "initializer_range": 0.02,
      "intermediate_size": 14336,
      "max_position_embeddings": 32768,
      "model_type": "mistral",
      "num_attention_heads": 32,
      "num_hidden_layers": 32,
      "num_key_value_heads": 8,
      "rms_norm_eps": 1e-05,
      "rope_theta": 1000000.0,
      "sliding_window": null,
      "tie_word_embeddings": false,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.36.0",
      "use_cache": true,
      "vocab_size": 32000
    }
    """;

    const string Minimal = """
    {"model_type": "llama", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
     "num_attention_heads": 4, "vocab_size": 100}
    """;

    static LlamaConfig Parse(string json) => LlamaConfig.Parse(Encoding.UTF8.GetBytes(json), "m/config.json");

    [Fact]
    public void Llama2_style()
    {
        var c = Parse(Llama2_7B);
        Assert.Equal(Architecture.Llama, c.Architecture);
        Assert.Equal((4096, 11008, 32, 32, 32, 128, 32000, 4096), (c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize, c.MaxPositionEmbeddings));
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Null(c.RopeScaling);
        Assert.Null(c.SlidingWindow);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal(DType.F16, c.DType);
        Assert.Equal(1, c.BosTokenId);
        Assert.Equal([2], c.EosTokenIds);
    }

    [Fact]
    public void Llama3_with_llama3_rope_scaling_and_an_eos_list()
    {
        var c = Parse(Llama31_8B_Instruct);
        Assert.Equal(8, c.NumKvHeads);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(1024, c.KvDim);
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(new Llama3RopeScaling(8, 1, 4, 8192), c.RopeScaling);
        Assert.Equal(DType.BF16, c.DType);
        Assert.Equal(128000, c.BosTokenId);
        Assert.Equal([128001, 128008, 128009], c.EosTokenIds);
    }

    [Fact]
    public void New_style_rope_parameters_and_dtype()
    {
        var c = Parse(Llama32_1B_NewStyle);
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(new Llama3RopeScaling(32, 1, 4, 8192), c.RopeScaling);
        Assert.Equal(DType.BF16, c.DType);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal(64, c.HeadDim);
        Assert.Equal([128001], c.EosTokenIds);
    }

    [Fact]
    public void Rope_theta_inside_rope_parameters_wins_over_top_level_and_rope_scaling_wins_over_rope_parameters()
    {
        var c = Parse(Minimal.Replace("\"vocab_size\": 100", "\"vocab_size\": 100, \"rope_theta\": 5.0, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 7.0}"));
        Assert.Equal(7.0, c.RopeTheta);
        c = Parse(Minimal.Replace("\"vocab_size\": 100", "\"vocab_size\": 100, \"rope_theta\": 5.0, \"rope_parameters\": {\"rope_type\": \"default\"}"));
        Assert.Equal(5.0, c.RopeTheta);
        c = Parse(Minimal.Replace("\"vocab_size\": 100", "\"vocab_size\": 100, \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 2, \"low_freq_factor\": 1, \"high_freq_factor\": 4}, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 9.0}"));
        Assert.Equal(new Llama3RopeScaling(2, 1, 4, 2048), c.RopeScaling); // original_max defaults to max_position_embeddings
        Assert.Equal(10000.0, c.RopeTheta);
        c = Parse(Minimal.Replace("\"vocab_size\": 100", "\"vocab_size\": 100, \"rope_scaling\": {\"rope_type\": \"default\"}"));
        Assert.Null(c.RopeScaling);
        c = Parse(Minimal.Replace("\"vocab_size\": 100", "\"vocab_size\": 100, \"rope_scaling\": {}, \"rope_theta\": 3"));
        Assert.Null(c.RopeScaling);
        Assert.Equal(3.0, c.RopeTheta);
    }

    [Fact]
    public void Mistral_with_sliding_window_and_with_null()
    {
        var v1 = Parse(Mistral7B_v01);
        Assert.Equal(Architecture.Mistral, v1.Architecture);
        Assert.Equal(4096, v1.SlidingWindow);
        Assert.Equal(32768, v1.MaxPositionEmbeddings);
        var v2 = Parse(Mistral7B_Instruct_v02);
        Assert.Null(v2.SlidingWindow);
        Assert.Equal(1e6, v2.RopeTheta);
    }

    [Fact]
    public void Mistral_without_the_field_takes_MistralConfigs_default_window_and_Llama_ignores_it()
    {
        var m = Parse(Mistral7B_v01.Replace("\"sliding_window\": 4096,", ""));
        Assert.Equal(4096, m.SlidingWindow);
        var l = Parse(Llama2_7B.Replace("\"vocab_size\": 32000", "\"vocab_size\": 32000, \"sliding_window\": 128"));
        Assert.Null(l.SlidingWindow);
    }

    [Fact]
    public void Missing_optional_fields_take_the_transformers_defaults()
    {
        var c = Parse(Minimal);
        Assert.Equal(Architecture.Llama, c.Architecture);
        Assert.Equal(4, c.NumKvHeads);
        Assert.Equal(16, c.HeadDim);
        Assert.Equal(2048, c.MaxPositionEmbeddings);
        Assert.Equal(1e-6, c.RmsNormEps);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Null(c.RopeScaling);
        Assert.False(c.TieWordEmbeddings);
        Assert.Null(c.DType);
        Assert.Equal(1, c.BosTokenId);
        Assert.Equal([2], c.EosTokenIds);
        var m = Parse(Minimal.Replace("llama", "mistral"));
        Assert.Equal(131072, m.MaxPositionEmbeddings);
        var n = Parse(Minimal.Replace("\"vocab_size\": 100", "\"vocab_size\": 100, \"bos_token_id\": null, \"eos_token_id\": null, \"torch_dtype\": null"));
        Assert.Null(n.BosTokenId);
        Assert.Empty(n.EosTokenIds);
    }

    [Fact]
    public void Architecture_from_model_type_alone_and_head_dim_given()
    {
        var c = Parse("""{"model_type": "mistral", "hidden_size": 5120, "head_dim": 128, "intermediate_size": 14336, "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 131072, "sliding_window": null}""");
        Assert.Equal(Architecture.Mistral, c.Architecture);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(4096, c.QDim);
    }

    [Fact]
    public void Load_reads_config_json_from_the_model_folder()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), Llama2_7B);
        Assert.Equal(Parse(Llama2_7B).ConfigHash, LlamaConfig.Load(dir.Path).ConfigHash);
        var e = Assert.Throws<BitDeltaException>(() => LlamaConfig.Load(Path.Combine(dir.Path, "nope")));
        Assert.Contains("config.json", e.Message);
    }

    public static TheoryData<string, string, string> BadConfigs => new()
    {
        { "unknown architecture", Llama2_7B.Replace("LlamaForCausalLM", "Qwen2ForCausalLM"), "architectures is Qwen2ForCausalLM, which is not supported (supported: LlamaForCausalLM, MistralForCausalLM)" },
        { "unknown model_type", Minimal.Replace("llama", "gemma"), "model_type is \"gemma\", which is not supported" },
        { "architecture and model_type disagree", Llama2_7B.Replace("\"model_type\": \"llama\"", "\"model_type\": \"mistral\""), "architectures says LlamaForCausalLM but model_type says \"mistral\"" },
        { "no architecture at all", Minimal.Replace("\"model_type\": \"llama\",", ""), "architectures and model_type are both missing" },
        { "missing hidden_size", Llama2_7B.Replace("\"hidden_size\": 4096,", ""), "hidden_size is missing" },
        { "hidden_size a string", Llama2_7B.Replace("\"hidden_size\": 4096", "\"hidden_size\": \"4096\""), "hidden_size is \"4096\" (a string), expected an integer" },
        { "hidden_size fractional", Llama2_7B.Replace("\"hidden_size\": 4096", "\"hidden_size\": 4096.5"), "hidden_size is 4096.5, expected a 32-bit integer" },
        { "zero layers", Llama2_7B.Replace("\"num_hidden_layers\": 32", "\"num_hidden_layers\": 0"), "num_hidden_layers is 0, expected a positive integer" },
        { "kv heads do not divide", Llama2_7B.Replace("\"num_key_value_heads\": 32", "\"num_key_value_heads\": 5"), "num_key_value_heads is 5, which does not divide" },
        { "tie not a bool", Llama2_7B.Replace("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": \"no\""), "tie_word_embeddings is \"no\" (a string), expected true or false" },
        { "rms_norm_eps a string", Llama2_7B.Replace("1e-05", "\"1e-05\""), "rms_norm_eps is \"1e-05\" (a string), expected a number" },
        { "linear rope scaling", Llama2_7B.Replace("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}"), "rope_scaling.type is \"linear\", which is not supported (supported: default, llama3)" },
        { "yarn in rope_parameters", Minimal.Replace("\"vocab_size\": 100", "\"vocab_size\": 100, \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4}"), "rope_parameters.rope_type is \"yarn\"" },
        { "llama3 without factor", Llama31_8B_Instruct.Replace("\"factor\": 8.0,", ""), "rope_scaling.factor is missing" },
        { "rope_scaling a list", Llama2_7B.Replace("\"rope_scaling\": null", "\"rope_scaling\": [1]"), "rope_scaling is a list, expected an object or null" },
        { "float8 dtype", Llama2_7B.Replace("\"float16\"", "\"float8_e4m3fn\""), "torch_dtype is \"float8_e4m3fn\", which is not supported" },
        { "attention bias", Llama31_8B_Instruct.Replace("\"attention_bias\": false", "\"attention_bias\": true"), "attention_bias is true" },
        { "mlp bias", Llama31_8B_Instruct.Replace("\"mlp_bias\": false", "\"mlp_bias\": true"), "mlp_bias is true" },
        { "gelu", Llama2_7B.Replace("\"silu\"", "\"gelu\""), "hidden_act is \"gelu\"" },
        { "eos list of strings", Llama2_7B.Replace("\"eos_token_id\": 2", "\"eos_token_id\": [\"</s>\"]"), "eos_token_id holds \"</s>\" (a string), expected integers" },
        { "negative window", Mistral7B_v01.Replace("\"sliding_window\": 4096", "\"sliding_window\": -1"), "sliding_window is -1" },
        { "not json", "{\"hidden_size\": 4096,", "not valid JSON" },
        { "not an object", "[1, 2]", "not a JSON object" },
        { "two architectures", Llama2_7B.Replace("[\"LlamaForCausalLM\"]", "[\"LlamaForCausalLM\", \"MistralForCausalLM\"]"), "architectures lists LlamaForCausalLM, MistralForCausalLM" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public void Bad_configs_give_a_one_line_error_naming_the_file_and_field(string label, string json, string expected)
    {
        var e = Assert.Throws<BitDeltaException>(() => Parse(json));
        Assert.StartsWith("m/config.json: ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.NotEmpty(label);
    }

    [Fact]
    public void Config_hash_ignores_formatting_order_and_non_architectural_fields()
    {
        var a = Parse(Llama2_7B);
        var reordered = "{" + string.Join(",", Llama2_7B.Trim().TrimStart('{').TrimEnd('}').Split(",\n").Reverse()) + "}";
        Assert.Equal(a.ConfigHash, Parse(reordered).ConfigHash);
        var other = Parse(Llama2_7B.Replace("\"float16\"", "\"bfloat16\"").Replace("\"eos_token_id\": 2", "\"eos_token_id\": [2, 3]")
            .Replace("\"transformers_version\": \"4.31.0.dev0\"", "\"transformers_version\": \"5.0\""));
        Assert.Equal(a.ConfigHash, other.ConfigHash);
        Assert.Matches("^[0-9a-f]{64}$", a.ConfigHash);
        // Pinned: a delta written today must still find its base after any refactor of this class.
        Assert.Equal("""
            bitdelta-config-v1
            architecture=LlamaForCausalLM
            hidden_size=4096
            intermediate_size=11008
            num_hidden_layers=32
            num_attention_heads=32
            num_key_value_heads=32
            head_dim=128
            vocab_size=32000
            rms_norm_eps=1E-05
            rope_theta=10000
            rope_scaling=none
            sliding_window=none
            tie_word_embeddings=false

            """.ReplaceLineEndings("\n"), a.CanonicalText);
    }

    [Theory]
    [InlineData("\"hidden_size\": 4096", "\"hidden_size\": 4096, \"head_dim\": 64")]
    [InlineData("\"num_key_value_heads\": 32", "\"num_key_value_heads\": 8")]
    [InlineData("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 1e-06")]
    [InlineData("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true")]
    [InlineData("\"rope_scaling\": null", "\"rope_theta\": 10001")]
    [InlineData("\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, \"high_freq_factor\": 4}")]
    [InlineData("\"vocab_size\": 32000", "\"vocab_size\": 32001")]
    public void Config_hash_changes_with_each_architectural_field(string from, string to)
    {
        Assert.NotEqual(Parse(Llama2_7B).ConfigHash, Parse(Llama2_7B.Replace(from, to)).ConfigHash);
    }

    [Fact]
    public void Config_hash_tells_Mistral_window_from_none()
    {
        Assert.NotEqual(Parse(Mistral7B_v01).ConfigHash, Parse(Mistral7B_v01.Replace("\"sliding_window\": 4096", "\"sliding_window\": null")).ConfigHash);
    }

    [Fact]
    public void Rope_frequencies_plain()
    {
        var c2 = Parse(Llama2_7B);
        var inv = RopeTable.InverseFrequencies(c2.HeadDim, c2.RopeTheta, c2.RopeScaling);
        Assert.Equal(64, inv.Length);
        for (int i = 0; i < inv.Length; i++)
        {
            double want = 1.0 / Math.Pow(10000.0, 2.0 * i / 128);
            Assert.True(Math.Abs(inv[i] - want) <= 2e-7 * want, $"inv_freq[{i}] = {inv[i]}, want {want}");
        }
    }

    [Fact]
    public void Rope_frequencies_llama3_keep_high_stretch_low_and_blend_between()
    {
        var c = Parse(Llama31_8B_Instruct);
        var inv = RopeTable.InverseFrequencies(c.HeadDim, c.RopeTheta, c.RopeScaling);
        var plain = RopeTable.InverseFrequencies(c.HeadDim, c.RopeTheta, null);
        int kept = 0, stretched = 0, blended = 0;
        for (int i = 0; i < inv.Length; i++)
        {
            double wavelen = 2 * Math.PI / plain[i];
            if (wavelen < 8192 / 4.0) { Assert.Equal(plain[i], inv[i]); kept++; }
            else if (wavelen > 8192 / 1.0) { Assert.Equal(plain[i] / 8f, inv[i]); stretched++; }
            else
            {
                double s = (8192 / wavelen - 1) / (4 - 1);
                double want = (1 - s) * plain[i] / 8 + s * plain[i];
                Assert.True(Math.Abs(inv[i] - want) <= 1e-6 * want, $"inv_freq[{i}] = {inv[i]}, want {want}");
                blended++;
            }
        }
        Assert.True(kept > 0 && stretched > 0 && blended > 0, $"{kept} kept, {stretched} stretched, {blended} blended");
        for (int i = 1; i < inv.Length; i++) Assert.True(inv[i] < inv[i - 1]);
    }
}

using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// Hugging Face tokenizer.json (byte-level BPE) against ids from tools/oracle/hf_tokenizer_fixture.py: a small
/// BPE cut from Llama-3's that is committed (always runs), and the full Llama-3 tokenizer.json when
/// shared/fixtures/llama3/tokenizer.json is there.
/// </summary>
public class ByteLevelBpeTests
{
    sealed record Case(string Text, int[] Ids);
    sealed record DecodeCase(int[] Ids, string Decoded);
    sealed record Fixture(string Oracle, string Tokenizer, string TokenizerSha256, int VocabSize, Case[] Cases, DecodeCase[] DecodeCases);

    static string FixturePath(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer", name);

    static Fixture Read(string name) =>
        JsonSerializer.Deserialize<Fixture>(File.ReadAllBytes(FixturePath(name)), new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!;

    static readonly Lazy<byte[]> MiniJson = new(() => File.ReadAllBytes(FixturePath("bpe_mini/tokenizer.json")));
    static readonly Lazy<Tokenizer> Mini = new(() => Tokenizer.FromHfJson(MiniJson.Value, "bpe_mini/tokenizer.json", null, [], addBos: false));
    static readonly Lazy<Fixture> MiniIds = new(() => Read("bpe_mini_ids.json"));

    static void AssertMatches(Tokenizer t, Fixture f)
    {
        Assert.Equal(f.VocabSize, t.VocabSize);
        var wrong = f.Cases.Where(c => !c.Ids.SequenceEqual(t.Encode(c.Text, addBos: false))).Select(c => JsonSerializer.Serialize(c.Text)).ToList();
        Assert.True(wrong.Count == 0, $"{wrong.Count} of {f.Cases.Length} strings differ from {f.Oracle}: {string.Join(", ", wrong.Take(5))}");
        foreach (var c in f.DecodeCases)
        {
            Assert.Equal(c.Decoded, t.Decode(c.Ids));
            var d = t.NewStreamDecoder();
            Assert.Equal(c.Decoded, string.Concat(c.Ids.Select(d.Add)) + d.Finish());
        }
    }

    [Fact]
    public void Mini_bpe_ids_and_decodings_equal_the_oracle()
    {
        var f = MiniIds.Value;
        Assert.Equal(f.TokenizerSha256, Convert.ToHexStringLower(SHA256.HashData(MiniJson.Value)));
        Assert.True(f.Cases.Length > 300);
        AssertMatches(Mini.Value, f);
    }

    [Fact]
    public void Text_without_added_tokens_round_trips_and_streams_without_half_characters()
    {
        var t = Mini.Value;
        foreach (var c in MiniIds.Value.Cases.Where(c => !c.Text.Contains("<|")))
        {
            Assert.Equal(c.Text, t.Decode(c.Ids));
            var d = t.NewStreamDecoder(startOfText: true);
            var chunks = c.Ids.Select(d.Add).Append(d.Finish()).ToList();
            Assert.Equal(c.Text, string.Concat(chunks));
            Assert.All(chunks, s => Assert.DoesNotContain('\uFFFD', s));
        }
    }

    [Fact]
    public void Added_tokens_in_text_are_those_tokens_and_decode_to_nothing_when_special()
    {
        var t = Mini.Value;
        var mini = JsonNode.Parse(MiniJson.Value)!;
        int bos = mini["added_tokens"]![0]!["id"]!.GetValue<int>();
        int eot = mini["added_tokens"]![9]!["id"]!.GetValue<int>();
        Assert.Equal("<|eot_id|>", t.Piece(eot));
        var ids = t.Encode("<|begin_of_text|>Hi<|eot_id|>", addBos: false);
        Assert.Equal(bos, ids[0]);
        Assert.Equal(eot, ids[^1]);
        Assert.Equal("Hi", t.Decode(ids));
    }

    [Fact]
    public void Full_llama3_tokenizer_json_equals_the_oracle()
    {
        var json = SharedFixtures.ReadOrSkip(SharedFixtures.Llama3Tokenizer);
        var f = Read("llama3_ids.json");
        Assert.Equal(f.TokenizerSha256, Convert.ToHexStringLower(SHA256.HashData(json)));
        var t = Tokenizer.FromHfJson(json, "llama3/tokenizer.json", 128000, [128001, 128009]);
        AssertMatches(t, f);
        Assert.Equal([128000, 9906, 1917], t.Encode("Hello world"));
    }

    [Fact]
    public void Load_reads_a_folder_with_only_tokenizer_json()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("tokenizer.json"), MiniJson.Value);
        var config = LlamaConfig.Parse("""{"model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 2471, "bos_token_id": 2459, "eos_token_id": [2460, 2468]}"""u8);
        var t = Tokenizer.Load(dir.Path, config);
        Assert.Equal(dir.File("tokenizer.json"), t.Path);
        Assert.True(t.AddBos);
        Assert.Equal(2459, t.Encode("Hi")[0]);
        Assert.Equal([2460, 2468], t.EosIds);

        var e = Assert.Throws<BitDeltaException>(() => Tokenizer.Load(dir.Path, config with { BosTokenId = null }));
        Assert.Equal($"{dir.File("tokenizer.json")}: BOS is to be added (add_bos_token) but config.json has no bos_token_id", e.Message);
    }

    /// <summary>Each variation of tokenizer.json that this reader would not reproduce exactly is refused by name.</summary>
    public static TheoryData<string, string, string> Unsupported => new()
    {
        { "model.type", """{"model": {"type": "Unigram"}}""", "model.type is \"Unigram\"; only byte-level BPE (Llama-3) is read from tokenizer.json" },
        { "SentencePiece-style", """{"model": {"type": "BPE", "byte_fallback": true}}""", "model.byte_fallback is true: a SentencePiece-style tokenizer.json (Llama-2, Mistral)" },
        { "normalizer", "normalizer", "normalizer NFC is not supported" },
        { "pre_tokenizer", "pre_tokenizer", "pre_tokenizer Metaspace is not supported" },
        { "add_prefix_space", "add_prefix_space", "pre_tokenizer ByteLevel has add_prefix_space true" },
        { "decoder", "decoder", "decoder is Metaspace; only ByteLevel is supported" },
        { "lstrip", "lstrip", "added_tokens '<|begin_of_text|>' has lstrip true" },
        { "not json", "{", "not valid JSON" },
    };

    [Theory]
    [MemberData(nameof(Unsupported))]
    public void Unsupported_tokenizer_json_is_refused_by_name(string label, string change, string expected)
    {
        byte[] json;
        if (change.StartsWith('{')) json = System.Text.Encoding.UTF8.GetBytes(change);
        else
        {
            var n = JsonNode.Parse(MiniJson.Value)!;
            switch (change)
            {
                case "normalizer": n["normalizer"] = JsonNode.Parse("""{"type": "NFC"}"""); break;
                case "pre_tokenizer": n["pre_tokenizer"] = JsonNode.Parse("""{"type": "Metaspace"}"""); break;
                case "add_prefix_space": n["pre_tokenizer"]!["pretokenizers"]![1]!["add_prefix_space"] = true; break;
                case "decoder": n["decoder"] = JsonNode.Parse("""{"type": "Metaspace"}"""); break;
                case "lstrip": n["added_tokens"]![0]!["lstrip"] = true; break;
            }
            json = System.Text.Encoding.UTF8.GetBytes(n.ToJsonString());
        }
        var e = Assert.Throws<BitDeltaException>(() => Tokenizer.FromHfJson(json, "m/tokenizer.json", 1, [2]));
        Assert.StartsWith("m/tokenizer.json: ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.NotEmpty(label);
    }
}

using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;
using FsCheck;
using FsCheck.Fluent;
using LlamaTokenizer = Microsoft.ML.Tokenizers.LlamaTokenizer;

namespace BitDeltaNative.Tests.Models;

public class TokenizerTests
{
    sealed record Case(string Text, int[] Ids, string Decoded);
    sealed record DecodeCase(int[] Ids, string Decoded);
    sealed record Fixture(string SentencepieceVersion, string ModelSha256, int BosId, int EosId, int VocabSize, Case[] Cases, DecodeCase[] DecodeCases);

    static readonly Lazy<Fixture> Golden = new(() =>
    {
        string path = Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer", "llama2_ids.json");
        return JsonSerializer.Deserialize<Fixture>(File.ReadAllBytes(path), new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!;
    });

    static byte[] Model() => SharedFixtures.ReadOrSkip(SharedFixtures.Llama2Tokenizer);

    static Tokenizer Llama2(bool addBos = true) => Tokenizer.FromSentencePiece(Model(), "tokenizer.model", 1, [2], addBos);

    public static TheoryData<int> CaseIndices
    {
        get
        {
            var d = new TheoryData<int>();
            for (int i = 0; i < Golden.Value.Cases.Length; i++) d.Add(i);
            return d;
        }
    }

    [Fact]
    public void Fixture_was_made_from_this_tokenizer_model()
    {
        var model = Model();
        var f = Golden.Value;
        Assert.Equal(f.ModelSha256, Convert.ToHexStringLower(SHA256.HashData(model)));
        var t = Llama2();
        Assert.Equal(f.VocabSize, t.VocabSize);
        Assert.Equal(f.BosId, t.BosId);
        Assert.Equal([f.EosId], t.EosIds);
        Assert.True(f.Cases.Length >= 25, $"{f.Cases.Length} cases (sentencepiece {f.SentencepieceVersion})");
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void Ids_equal_sentencepiece_and_decoding_gives_the_text_back(int i)
    {
        var c = Golden.Value.Cases[i];
        var t = Llama2();
        Assert.Equal(c.Ids, t.Encode(c.Text, addBos: false));
        Assert.Equal([1, .. c.Ids], t.Encode(c.Text, addBos: true));
        Assert.Equal([1, .. c.Ids], t.Encode(c.Text));
        Assert.Equal(c.Decoded, t.Decode(c.Ids));
        Assert.Equal(c.Decoded, t.Decode([1, .. c.Ids, 2]));   // control tokens print nothing
    }

    /// <summary>Controls and &lt;unk&gt; in odd places, invalid and unfinished UTF-8 from byte pieces: the text
    /// sentencepiece's decoder gives, whole and streamed.</summary>
    [Fact]
    public void Decoding_edge_cases_match_sentencepiece()
    {
        var t = Llama2();
        Assert.NotEmpty(Golden.Value.DecodeCases);
        foreach (var c in Golden.Value.DecodeCases)
        {
            Assert.Equal(c.Decoded, t.Decode(c.Ids));
            var d = t.NewStreamDecoder(startOfText: true);
            Assert.Equal(c.Decoded, string.Concat(c.Ids.Select(d.Add)) + d.Finish());
        }
    }

    [Fact]
    public void Round_trips_where_sentencepiece_does()
    {
        var t = Llama2();
        foreach (var c in Golden.Value.Cases.Where(c => !c.Text.Contains('\u2581')))
            Assert.Equal(c.Text, t.Decode(t.Encode(c.Text)));
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void Streaming_gives_the_same_text_and_never_half_a_character(int i)
    {
        var c = Golden.Value.Cases[i];
        var t = Llama2();
        var d = t.NewStreamDecoder(startOfText: true);
        var chunks = c.Ids.Select(d.Add).ToList();
        chunks.Add(d.Finish());
        Assert.Equal(c.Decoded, string.Concat(chunks));
        foreach (var s in chunks)
        {
            Assert.DoesNotContain('\uFFFD', s);
            Assert.False(s.Length > 0 && char.IsHighSurrogate(s[^1]), "a chunk ends inside a surrogate pair");
        }
    }

    [Fact]
    public void Byte_fallback_tokens_of_an_emoji_print_nothing_until_the_last()
    {
        var t = Llama2();
        var ids = t.Encode("😀", addBos: false);   // "▁" then four byte pieces F0 9F 98 80
        Assert.Equal(5, ids.Length);
        Assert.Equal("<0xF0>", t.Piece(ids[1]));
        var d = t.NewStreamDecoder();
        Assert.Equal([" ", "", "", "", "😀"], ids.Select(d.Add));
        Assert.Equal("", d.Finish());
    }

    [Fact]
    public void An_unfinished_character_prints_as_replacement_at_the_end_and_before_a_new_piece()
    {
        var t = Llama2();
        var emoji = t.Encode("😀", addBos: false);
        var d = t.NewStreamDecoder();
        Assert.Equal("", d.Add(emoji[1]));
        Assert.Equal("", d.Add(emoji[2]));
        Assert.Equal("\uFFFD\uFFFD", d.Finish());
        Assert.Equal("\uFFFD Hello", t.NewStreamDecoder() is var d2 && d2.Add(emoji[1]) == "" ? d2.Add(15043) : "not held back");
    }

    [Fact]
    public void The_first_words_space_is_dropped_only_at_the_start_of_the_text()
    {
        var t = Llama2();
        int[] ids = [15043, 3186];   // "▁Hello", "▁world"
        var start = t.NewStreamDecoder(startOfText: true);
        Assert.Equal(["Hello", " world"], ids.Select(start.Add));
        var continuing = t.NewStreamDecoder();
        Assert.Equal([" Hello", " world"], ids.Select(continuing.Add));
        var afterBos = t.NewStreamDecoder(startOfText: true);
        Assert.Equal(["", "Hello", " world"], new[] { 1, 15043, 3186 }.Select(afterBos.Add));
    }

    [Fact]
    public void Unknown_prints_as_sentencepiece_does_and_ids_past_the_vocabulary_print_nothing()
    {
        var t = Llama2();
        Assert.Equal("a \u2047  b", t.Decode([263, 0, 289]));
        Assert.Equal("a", t.Decode([263, 32000, 40000, -1]));
        Assert.True(t.IsEos(2));
        Assert.False(t.IsEos(1));
    }

    /// <summary>Random sequences of ordinary pieces: our decoder and the library's agree, and streaming equals
    /// whole-sequence decoding for any ids at all (bytes, controls, unknown included).</summary>
    [Fact]
    public void Random_sequences_decode_like_the_library_and_stream_like_the_whole()
    {
        var model = Model();
        var t = Llama2();
        var lib = LlamaTokenizer.Create(new MemoryStream(model), false, false);
        Prop.ForAll(ArbMap.Default.ArbFor<int>(), seed =>
        {
            var rng = new Random(seed);
            var any = Enumerable.Range(0, rng.Next(0, 30)).Select(_ => rng.Next(-2, t.VocabSize + 3)).ToArray();
            var d = t.NewStreamDecoder(startOfText: true);
            string streamed = string.Concat(any.Select(d.Add)) + d.Finish();
            var plain = Enumerable.Range(0, rng.Next(0, 30)).Select(_ => rng.Next(259, t.VocabSize)).ToArray();
            return (streamed == t.Decode(any)).Label($"stream vs whole, seed {seed}")
                .And((t.Decode(plain) == lib.Decode(plain)).Label($"ours vs library on [{string.Join(",", plain)}]"));
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(200));
    }

    [Fact]
    public void Load_reads_bos_eos_and_add_bos_from_the_model_folder()
    {
        var model = Model();
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("tokenizer.model"), model);
        var config = LlamaConfig.Parse("""{"model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2}"""u8);

        var t = Tokenizer.Load(dir.Path, config);
        Assert.True(t.AddBos);
        Assert.Equal([2], t.EosIds);
        Assert.Equal(Path.Combine(dir.Path, "tokenizer.model"), t.Path);

        File.WriteAllText(dir.File("tokenizer_config.json"), """{"add_bos_token": false, "add_eos_token": false, "legacy": true}""");
        File.WriteAllText(dir.File("generation_config.json"), """{"bos_token_id": 1, "eos_token_id": [2, 13]}""");
        t = Tokenizer.Load(dir.Path, config);
        Assert.False(t.AddBos);
        Assert.Equal([263], t.Encode("a"));
        Assert.Equal([2, 13], t.EosIds);
        Assert.True(t.IsEos(13));

        File.WriteAllText(dir.File("tokenizer_config.json"), """{"add_bos_token": "yes"}""");
        var e = Assert.Throws<BitDeltaException>(() => Tokenizer.Load(dir.Path, config));
        Assert.Equal($"{dir.File("tokenizer_config.json")}: add_bos_token is \"yes\", expected true or false", e.Message);

        File.WriteAllText(dir.File("tokenizer_config.json"), """{"add_prefix_space": false}""");
        e = Assert.Throws<BitDeltaException>(() => Tokenizer.Load(dir.Path, config));
        Assert.Contains("add_prefix_space is false", e.Message);

        File.WriteAllText(dir.File("tokenizer_config.json"), "{");
        e = Assert.Throws<BitDeltaException>(() => Tokenizer.Load(dir.Path, config));
        Assert.StartsWith($"{dir.File("tokenizer_config.json")}: not valid JSON", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        File.Delete(dir.File("tokenizer_config.json"));
        e = Assert.Throws<BitDeltaException>(() => Tokenizer.Load(dir.Path, config with { EosTokenIds = [32005] }));
        Assert.Contains("special token id 32005 (from config.json) is outside the vocabulary of 32000", e.Message);
    }

    static readonly LlamaConfig AnyConfig = LlamaConfig.Parse("""{"model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 10}"""u8);

    [Fact]
    public void A_folder_without_tokenizer_and_a_bad_tokenizer_model_are_clear_errors()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<BitDeltaException>(() => Tokenizer.Load(dir.Path, AnyConfig));
        Assert.Equal($"{dir.Path}: no tokenizer.model (SentencePiece: Llama-2, Mistral) or tokenizer.json (byte-level BPE: Llama-3)", e.Message);
        File.WriteAllBytes(dir.File("tokenizer.model"), Encoding.UTF8.GetBytes("this is not a protobuf"));
        e = Assert.Throws<BitDeltaException>(() => Tokenizer.Load(dir.Path, AnyConfig));
        Assert.StartsWith($"{dir.File("tokenizer.model")}: not a SentencePiece model", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}

using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace BitDeltaNative.Models;

/// <summary>
/// A byte-level BPE tokenizer read from Hugging Face's <c>tokenizer.json</c> (the tokenizers library's format),
/// as Llama-3 ships it: added tokens split out of the text first, then a regex pre-tokenizer, then BPE over the
/// GPT-2 byte alphabet. Microsoft.ML.Tokenizers 2.0.1 has no reader for this file, so it is read here and only
/// the merging is left to its <see cref="BpeTokenizer"/>. Anything this reader does not reproduce exactly
/// (normalizers, other pre-tokenizers, SentencePiece-style files) is refused by name.
/// </summary>
internal sealed class ByteLevelBpe
{
    /// <summary>ByteLevel's own split when it runs without a Split before it (GPT-2's pattern, tokenizers' byte_level.rs).</summary>
    const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for
    /// U+0100 onwards, in byte order.</summary>
    static readonly char[] ByteToChar = BuildByteAlphabet();
    static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    static char[] BuildByteAlphabet()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            map[b] = (b is >= 33 and <= 126) || (b is >= 161 and <= 172) || (b is >= 174 and <= 255) ? (char)b : (char)next++;
        return map;
    }

    readonly BpeTokenizer bpe;
    readonly Dictionary<string, int> vocab;
    readonly bool ignoreMerges;
    readonly Regex split;
    readonly Regex? addedSplit;
    readonly Dictionary<string, int> addedIds;

    /// <summary>Token text by id (vocabulary entries in the byte alphabet, added tokens as written).</summary>
    public string[] Pieces { get; }
    /// <summary>Per id: an added token marked special (BOS, EOS, chat markers), which decoding leaves out.</summary>
    public bool[] IsSpecial { get; }
    /// <summary>Per id: an added token (its text is matched in the input before pre-tokenization).</summary>
    public bool[] IsAdded { get; }

    ByteLevelBpe(BpeTokenizer bpe, Dictionary<string, int> vocab, bool ignoreMerges, Regex split,
                 Dictionary<string, int> addedIds, HashSet<int> special, string[] pieces)
    {
        this.bpe = bpe;
        this.vocab = vocab;
        this.ignoreMerges = ignoreMerges;
        this.split = split;
        this.addedIds = addedIds;
        // Longest first, so that at one position the longest added token wins (tokenizers' AddedVocabulary
        // matches leftmost-longest).
        addedSplit = addedIds.Count == 0 ? null
            : new Regex(string.Join("|", addedIds.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)), RegexOptions.CultureInvariant);
        Pieces = pieces;
        IsSpecial = [.. Enumerable.Range(0, pieces.Length).Select(special.Contains)];
        var added = addedIds.Values.ToHashSet();
        IsAdded = [.. Enumerable.Range(0, pieces.Length).Select(added.Contains)];
    }

    public static ByteLevelBpe Read(byte[] json, string path)
    {
        BitDeltaException Bad(string what) => new($"{path}: {what}");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw Bad($"not valid JSON ({e.Message.ReplaceLineEndings(" ")})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad("not a JSON object");
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object) throw Bad("model is missing");
            string type = Str(model, "type") ?? "";
            if (type != "BPE") throw Bad($"model.type is \"{type}\"; only byte-level BPE (Llama-3) is read from tokenizer.json");
            if (Bool(model, "byte_fallback"))
                throw Bad("model.byte_fallback is true: a SentencePiece-style tokenizer.json (Llama-2, Mistral), which is read from the checkpoint's tokenizer.model instead");
            foreach (var f in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
                if (Str(model, f) is { Length: > 0 } v) throw Bad($"model.{f} is \"{v}\", which is not supported");
            if (model.TryGetProperty("dropout", out var dr) && dr.ValueKind == JsonValueKind.Number && dr.GetDouble() != 0)
                throw Bad("model.dropout is set; BPE dropout is for training and is not supported");
            if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind != JsonValueKind.Null)
                throw Bad($"normalizer {Str(norm, "type") ?? "?"} is not supported (byte-level BPE as Llama-3 ships it has none)");
            if (!root.TryGetProperty("decoder", out var dec) || Str(dec, "type") != "ByteLevel")
                throw Bad($"decoder is {(dec.ValueKind == JsonValueKind.Object ? Str(dec, "type") : "missing")}; only ByteLevel is supported");
            var split = ReadPreTokenizer(root, Bad);

            if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object) throw Bad("model.vocab is missing");
            var vocab = new Dictionary<string, int>();
            foreach (var p in vocabEl.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                    throw Bad($"model.vocab '{p.Name}' has id {p.Value.GetRawText()}, expected a non-negative integer");
                vocab[p.Name] = id;
            }
            if (!model.TryGetProperty("merges", out var mergesEl) || mergesEl.ValueKind != JsonValueKind.Array) throw Bad("model.merges is missing");
            var merges = new List<string>(mergesEl.GetArrayLength());
            foreach (var m in mergesEl.EnumerateArray())
            {
                // tokenizers ≥ 0.20 writes a merge as a pair ["a", "b"]; earlier versions as one string "a b".
                if (m.ValueKind == JsonValueKind.String) merges.Add(m.GetString()!);
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                {
                    string a = m[0].GetString()!, b = m[1].GetString()!;
                    if (a.Contains(' ') || b.Contains(' ')) throw Bad($"model.merges holds a pair with a space ('{a}', '{b}'), which the BPE library cannot take");
                    merges.Add(a + " " + b);
                }
                else throw Bad($"model.merges holds {m.GetRawText()}, expected \"a b\" or [\"a\", \"b\"]");
            }

            var addedIds = new Dictionary<string, int>();
            var special = new HashSet<int>();
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var a in added.EnumerateArray())
                {
                    string content = Str(a, "content") ?? throw Bad("added_tokens entry without content");
                    if (!a.TryGetProperty("id", out var idEl) || !idEl.TryGetInt32(out int id) || id < 0)
                        throw Bad($"added_tokens '{content}' has no valid id");
                    foreach (var flag in new[] { "lstrip", "rstrip", "single_word" })
                        if (Bool(a, flag)) throw Bad($"added_tokens '{content}' has {flag} true, which is not supported");
                    if (content.Length == 0) throw Bad("added_tokens holds an empty token");
                    addedIds[content] = id;
                    if (Bool(a, "special")) special.Add(id);
                }

            int size = Math.Max(vocab.Count == 0 ? 0 : vocab.Values.Max(), addedIds.Count == 0 ? -1 : addedIds.Values.Max()) + 1;
            var pieces = new string[size];
            foreach (var (s, id) in vocab) pieces[id] = s;
            foreach (var (s, id) in addedIds) pieces[id] = s;
            for (int i = 0; i < size; i++) pieces[i] ??= "";

            BpeTokenizer bpe;
            try
            {
                // The text reaching the library is already one pre-token: its pre-tokenizer must not split it
                // again (the default one splits at spaces), hence a pattern that takes the whole string.
                bpe = BpeTokenizer.Create(new BpeOptions(vocab)
                {
                    Merges = merges,
                    ByteLevel = true,
                    PreTokenizer = new RegexPreTokenizer(new Regex("(?s).+", RegexOptions.CultureInvariant), null),
                });
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
            {
                throw Bad($"the BPE vocabulary or merges were refused by the tokenizer library ({e.Message.ReplaceLineEndings(" ")})");
            }
            return new ByteLevelBpe(bpe, vocab, Bool(model, "ignore_merges"), split, addedIds, special, pieces);
        }
    }

    /// <summary>Either ByteLevel alone (GPT-2's regex), or a Sequence of a Split on a regex ("Isolated") and a
    /// ByteLevel that does not split again, as Llama-3 has. No prefix space in either.</summary>
    static Regex ReadPreTokenizer(JsonElement root, Func<string, BitDeltaException> bad)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object) throw bad("pre_tokenizer is missing");
        string? pattern = null;
        string type = Str(pre, "type") ?? "";
        JsonElement byteLevel;
        if (type == "ByteLevel")
        {
            byteLevel = pre;
            if (pre.TryGetProperty("use_regex", out var ur) && ur.ValueKind == JsonValueKind.False)
                throw bad("pre_tokenizer ByteLevel has use_regex false and nothing splits the text");
            pattern = Gpt2Pattern;
        }
        else if (type == "Sequence" && pre.TryGetProperty("pretokenizers", out var seq) && seq.ValueKind == JsonValueKind.Array
                 && seq.GetArrayLength() == 2 && Str(seq[0], "type") == "Split" && Str(seq[1], "type") == "ByteLevel")
        {
            var s = seq[0];
            if (!s.TryGetProperty("pattern", out var pat) || Str(pat, "Regex") is not { } re)
                throw bad("pre_tokenizer Split has no pattern.Regex (a String pattern is not supported)");
            if (Str(s, "behavior") != "Isolated" || Bool(s, "invert"))
                throw bad($"pre_tokenizer Split has behavior {Str(s, "behavior")} / invert {Bool(s, "invert")}; only Isolated, not inverted, is supported");
            byteLevel = seq[1];
            if (Bool(byteLevel, "use_regex")) throw bad("pre_tokenizer ByteLevel after a Split has use_regex true, which is not supported");
            pattern = re;
        }
        else throw bad($"pre_tokenizer {type} is not supported (supported: ByteLevel, or Sequence [Split, ByteLevel] as in Llama-3)");
        if (Bool(byteLevel, "add_prefix_space")) throw bad("pre_tokenizer ByteLevel has add_prefix_space true, which is not supported");
        try { return new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled); }
        catch (ArgumentException e) { throw bad($"pre_tokenizer pattern does not compile as a .NET regex ({e.Message.ReplaceLineEndings(" ")})"); }
    }

    static string? Str(JsonElement e, string field) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    static bool Bool(JsonElement e, string field) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.True;

    // ---- encoding ----

    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        int pos = 0;
        if (addedSplit != null)
            foreach (Match m in addedSplit.Matches(text))
            {
                EncodePlain(text.AsSpan(pos, m.Index - pos), ids);
                ids.Add(addedIds[m.Value]);
                pos = m.Index + m.Length;
            }
        EncodePlain(text.AsSpan(pos), ids);
        return ids;
    }

    void EncodePlain(ReadOnlySpan<char> text, List<int> ids)
    {
        if (text.IsEmpty) return;
        foreach (var (start, length) in PreTokenize(text))
        {
            var word = text.Slice(start, length);
            // ignore_merges (tokenizers' BPE): a pre-token that is itself in the vocabulary is that token,
            // whatever the merges would make of it. Llama-3 sets it.
            if (ignoreMerges && vocab.TryGetValue(ToByteAlphabet(word), out int id)) { ids.Add(id); continue; }
            ids.AddRange(bpe.EncodeToIds(word.ToString()));
        }
    }

    /// <summary>
    /// The regex split, on code points as the tokenizers library (Oniguruma) sees them. .NET's regex sees UTF-16
    /// units, so a letter outside the BMP (𝔘, CJK extension B) would not match \p{L}: each such code point is
    /// replaced, for the match only, by one BMP character of the same class (a CJK ideograph for letters, an
    /// Arabic-Indic digit for numbers, © for the rest; no pattern names those literally), and the offsets are
    /// mapped back.
    /// </summary>
    List<(int Start, int Length)> PreTokenize(ReadOnlySpan<char> text)
    {
        string matched;
        int[]? starts = null;
        if (text.IndexOfAnyInRange('\uD800', '\uDFFF') < 0) matched = text.ToString();
        else
        {
            var sb = new StringBuilder(text.Length);
            var st = new List<int>(text.Length + 1);
            for (int i = 0; i < text.Length;)
            {
                st.Add(i);
                if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                {
                    sb.Append(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1])) switch
                    {
                        <= UnicodeCategory.OtherLetter => '\u4E00',
                        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => '\u0660',
                        _ => '\u00A9',
                    });
                    i += 2;
                }
                else { sb.Append(text[i]); i++; }
            }
            st.Add(text.Length);
            matched = sb.ToString();
            starts = [.. st];
        }
        var spans = new List<(int, int)>();
        int covered = 0;
        foreach (Match m in split.Matches(matched))
        {
            int a = starts?[m.Index] ?? m.Index, b = starts?[m.Index + m.Length] ?? m.Index + m.Length;
            // "Isolated": text between matches is a pre-token of its own too (none with Llama-3's pattern).
            if (a > covered) spans.Add((covered, a - covered));
            if (b > a) spans.Add((a, b - a));
            covered = b;
        }
        if (covered < text.Length) spans.Add((covered, text.Length - covered));
        return spans;
    }

    static string ToByteAlphabet(ReadOnlySpan<char> s)
    {
        var bytes = Encoding.UTF8.GetBytes(s.ToArray());
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>The bytes a token stands for: each character of the byte alphabet is its byte; any other
    /// character (in added tokens) is its own UTF-8, as tokenizers' ByteLevel decoder does.</summary>
    public static byte[] PieceBytes(string piece)
    {
        var bytes = new List<byte>(piece.Length);
        Span<byte> buf = stackalloc byte[4];
        foreach (var rune in piece.EnumerateRunes())
        {
            if (rune.IsBmp && CharToByte.TryGetValue((char)rune.Value, out byte b)) bytes.Add(b);
            else bytes.AddRange(buf[..rune.EncodeToUtf8(buf)]);
        }
        return [.. bytes];
    }
}

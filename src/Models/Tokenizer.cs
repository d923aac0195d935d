using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Microsoft.ML.Tokenizers;

namespace BitDeltaNative.Models;

/// <summary>
/// The tokenizer of a Llama or Mistral checkpoint, in one of two forms:
/// <list type="bullet">
/// <item>SentencePiece BPE from <c>tokenizer.model</c> (Llama-2, Mistral), encoded by Microsoft.ML.Tokenizers'
/// <see cref="LlamaTokenizer"/>: the same ids as Google's sentencepiece on the strings of tests/fixtures/tokenizer.
/// Text that looks like a special token ("&lt;s&gt;") is plain text, as in sentencepiece.</item>
/// <item>Byte-level BPE from Hugging Face's <c>tokenizer.json</c> (Llama-3), which that library cannot read:
/// see <see cref="ByteLevelBpe"/>. Added tokens in the text ("&lt;|eot_id|&gt;") are those tokens, as in HF.</item>
/// </list>
/// Decoding is ours in both cases, piece by piece, so that streaming and whole-sequence decoding are one code
/// path. BOS is added by us, as tokenizer_config.json says (<c>add_bos_token</c>, default true as in HF's
/// LlamaTokenizer), with the BOS id from config.json.
/// </summary>
public sealed class Tokenizer
{
    public const string ModelFileName = "tokenizer.model";
    public const string HfJsonFileName = "tokenizer.json";
    public const string ConfigFileName = "tokenizer_config.json";
    public const string GenerationConfigFileName = "generation_config.json";

    /// <summary>sentencepiece's ModelProto.SentencePiece.Type (sentencepiece_model.proto); byte-level BPE uses
    /// Normal, and Control for its special added tokens.</summary>
    enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    /// <summary>SentencePiece's word-boundary marker, U+2581, which stands for a space inside pieces.</summary>
    const char SpaceMarker = '\u2581';
    /// <summary>What sentencepiece prints for &lt;unk&gt; (its default unk_surface, " ⁇ ").</summary>
    const string UnknownSurface = " \u2047 ";

    readonly Func<string, IReadOnlyList<int>> encodeText;
    /// <summary>Per id, the UTF-8 bytes a piece decodes to (marker → space; a byte piece → its byte).</summary>
    readonly byte[][] surface;
    readonly PieceType[] types;
    readonly string[] pieces;
    readonly HashSet<int> eos;
    /// <summary>SentencePiece's dummy prefix: the encoder puts a space before the text, the decoder takes it off.</summary>
    readonly bool dropsDummyPrefix;

    public string Path { get; }
    public int VocabSize => pieces.Length;
    /// <summary>config.json's bos_token_id; for a SentencePiece model without one, the model's &lt;s&gt;.</summary>
    public int? BosId { get; }
    /// <summary>Ids that end generation: config.json's eos_token_id and generation_config.json's, all of them.</summary>
    public IReadOnlyList<int> EosIds { get; }
    /// <summary>Whether <see cref="Encode(string)"/> starts with BOS (tokenizer_config.json <c>add_bos_token</c>).</summary>
    public bool AddBos { get; }
    /// <summary>How bytes that cannot form a character are shown: one U+FFFD per byte (sentencepiece), or one
    /// per maximal ill-formed sequence (HF's ByteLevel decoder, Rust's from_utf8_lossy).</summary>
    internal bool ReplacesPerByte { get; }

    Tokenizer(string path, Func<string, IReadOnlyList<int>> encodeText, string[] pieces, PieceType[] types, byte[][] surface,
              bool dropsDummyPrefix, bool replacesPerByte, int? bosId, IReadOnlyList<int> eosIds, bool addBos)
    {
        Path = path;
        this.encodeText = encodeText;
        this.pieces = pieces;
        this.types = types;
        this.surface = surface;
        this.dropsDummyPrefix = dropsDummyPrefix;
        ReplacesPerByte = replacesPerByte;
        BosId = bosId;
        EosIds = eosIds;
        eos = [.. eosIds];
        AddBos = addBos;
        foreach (int id in eosIds.Concat(bosId is { } b ? [b] : []))
            if ((uint)id >= (uint)pieces.Length)
                throw new BitDeltaException($"{path}: special token id {id} (from config.json) is outside the vocabulary of {pieces.Length}");
    }

    /// <summary>
    /// The tokenizer of a model folder: <c>tokenizer.model</c> (SentencePiece) when present, as Llama-2 and
    /// Mistral ship it; else <c>tokenizer.json</c> when it is byte-level BPE, as Llama-3 ships it.
    /// </summary>
    public static Tokenizer Load(string modelDir, LlamaConfig config)
    {
        string modelPath = System.IO.Path.Combine(modelDir, ModelFileName);
        string jsonPath = System.IO.Path.Combine(modelDir, HfJsonFileName);
        bool sentencePiece = File.Exists(modelPath);
        if (!sentencePiece && !File.Exists(jsonPath))
            throw new BitDeltaException($"{modelDir}: no tokenizer.model (SentencePiece: Llama-2, Mistral) or tokenizer.json (byte-level BPE: Llama-3)");
        string path = sentencePiece ? modelPath : jsonPath;
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BitDeltaException($"{path}: cannot read: {e.Message.ReplaceLineEndings(" ")}", e);
        }
        bool addBos = ReadTokenizerConfig(System.IO.Path.Combine(modelDir, ConfigFileName), sentencePiece);
        var eosIds = config.EosTokenIds.Union(ReadGenerationEos(System.IO.Path.Combine(modelDir, GenerationConfigFileName))).ToList();
        return sentencePiece
            ? FromSentencePiece(bytes, path, config.BosTokenId, eosIds, addBos)
            : FromHfJson(bytes, path, config.BosTokenId, eosIds, addBos);
    }

    /// <summary>A tokenizer over SentencePiece model bytes. Where <paramref name="bosId"/> is null or
    /// <paramref name="eosIds"/> is empty, the model's own &lt;s&gt; / &lt;/s&gt; ids are used.</summary>
    public static Tokenizer FromSentencePiece(byte[] model, string path, int? bosId, IReadOnlyList<int> eosIds, bool addBos = true)
    {
        LlamaTokenizer sp;
        try { sp = LlamaTokenizer.Create(new MemoryStream(model), addBeginOfSentence: false, addEndOfSentence: false); }
        catch (Exception e) when (e is not BitDeltaException)
        {
            throw new BitDeltaException($"{path}: not a SentencePiece model ({e.Message.ReplaceLineEndings(" ")})", e);
        }
        var (pieces, types) = ReadPieces(model, path);
        if (pieces.Length != sp.Vocabulary.Count)
            throw new BitDeltaException($"{path}: holds {pieces.Length} pieces but the tokenizer library read {sp.Vocabulary.Count}");
        var surface = new byte[pieces.Length][];
        for (int i = 0; i < pieces.Length; i++)
            surface[i] = types[i] switch
            {
                PieceType.Control => [],
                PieceType.Unknown => Encoding.UTF8.GetBytes(UnknownSurface),
                PieceType.Byte => [ParseBytePiece(pieces[i], path)],
                _ => Encoding.UTF8.GetBytes(pieces[i].Replace(SpaceMarker, ' ')),
            };
        return new Tokenizer(path, text => sp.EncodeToIds(text), pieces, types, surface,
            dropsDummyPrefix: sp.AddDummyPrefix, replacesPerByte: true,
            bosId ?? sp.BeginningOfSentenceId, eosIds.Count > 0 ? eosIds : [sp.EndOfSentenceId], addBos);
    }

    /// <summary>A tokenizer over the bytes of a Hugging Face tokenizer.json holding byte-level BPE. Special added
    /// tokens decode to nothing (HF's skip_special_tokens), other added tokens to their text.</summary>
    public static Tokenizer FromHfJson(byte[] json, string path, int? bosId, IReadOnlyList<int> eosIds, bool addBos = true)
    {
        var bpe = ByteLevelBpe.Read(json, path);
        var pieces = bpe.Pieces;
        var types = new PieceType[pieces.Length];
        var surface = new byte[pieces.Length][];
        for (int i = 0; i < pieces.Length; i++)
        {
            // Ids that are neither in the vocabulary nor added (holes) print nothing, like controls.
            bool control = bpe.IsSpecial[i] || pieces[i].Length == 0;
            types[i] = control ? PieceType.Control : PieceType.Normal;
            surface[i] = control ? [] : ByteLevelBpe.PieceBytes(pieces[i]);
        }
        if (addBos && bosId is null)
            throw new BitDeltaException($"{path}: BOS is to be added (add_bos_token) but config.json has no bos_token_id");
        return new Tokenizer(path, bpe.Encode, pieces, types, surface,
            dropsDummyPrefix: false, replacesPerByte: false, bosId, eosIds, addBos);
    }

    /// <summary>add_bos_token from tokenizer_config.json; true when the file or the field is absent (HF's
    /// LlamaTokenizer default). For SentencePiece, <c>add_prefix_space: false</c> is refused: the dummy prefix
    /// comes from tokenizer.model and cannot be turned off here, so the ids would differ from HF's.</summary>
    static bool ReadTokenizerConfig(string path, bool sentencePiece)
    {
        if (!File.Exists(path)) return true;
        using var doc = ReadJson(path);
        var root = doc.RootElement;
        bool addBos = true;
        if (root.TryGetProperty("add_bos_token", out var b) && b.ValueKind != JsonValueKind.Null)
        {
            if (b.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                throw new BitDeltaException($"{path}: add_bos_token is {b.GetRawText()}, expected true or false");
            addBos = b.GetBoolean();
        }
        if (sentencePiece && root.TryGetProperty("add_prefix_space", out var ps) && ps.ValueKind == JsonValueKind.False)
            throw new BitDeltaException($"{path}: add_prefix_space is false, which is not supported (SentencePiece's dummy prefix is always added)");
        return addBos;
    }

    /// <summary>generation_config.json's eos_token_id (an int or a list), which HF's generate() stops on.</summary>
    static IEnumerable<int> ReadGenerationEos(string path)
    {
        if (!File.Exists(path)) return [];
        using var doc = ReadJson(path);
        if (!doc.RootElement.TryGetProperty("eos_token_id", out var v) || v.ValueKind == JsonValueKind.Null) return [];
        var ids = new List<int>();
        foreach (var e in v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToList() : [v])
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id))
                throw new BitDeltaException($"{path}: eos_token_id holds {e.GetRawText()}, expected integers");
            ids.Add(id);
        }
        return ids;
    }

    static JsonDocument ReadJson(string path)
    {
        try
        {
            var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (doc.RootElement.ValueKind == JsonValueKind.Object) return doc;
            doc.Dispose();
            throw new BitDeltaException($"{path}: not a JSON object");
        }
        catch (JsonException e) { throw new BitDeltaException($"{path}: not valid JSON ({e.Message.ReplaceLineEndings(" ")})", e); }
        catch (IOException e) { throw new BitDeltaException($"{path}: cannot read: {e.Message.ReplaceLineEndings(" ")}", e); }
    }

    /// <summary>Pieces and their types from the ModelProto (sentencepiece_model.proto: field 1 is the repeated
    /// SentencePiece {1: piece, 2: score, 3: type}); the library does not expose the types.</summary>
    static (string[] Pieces, PieceType[] Types) ReadPieces(byte[] model, string path)
    {
        var pieces = new List<string>();
        var types = new List<PieceType>();
        try
        {
            var input = new CodedInputStream(model);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                if (WireFormat.GetTagFieldNumber(tag) != 1 || WireFormat.GetTagWireType(tag) != WireFormat.WireType.LengthDelimited)
                {
                    input.SkipLastField();
                    continue;
                }
                var sub = new CodedInputStream(input.ReadBytes().ToByteArray());
                string piece = "";
                var type = PieceType.Normal;
                uint t;
                while ((t = sub.ReadTag()) != 0)
                {
                    switch (WireFormat.GetTagFieldNumber(t))
                    {
                        case 1 when WireFormat.GetTagWireType(t) == WireFormat.WireType.LengthDelimited: piece = sub.ReadString(); break;
                        case 3 when WireFormat.GetTagWireType(t) == WireFormat.WireType.Varint: type = (PieceType)sub.ReadEnum(); break;
                        default: sub.SkipLastField(); break;
                    }
                }
                pieces.Add(piece);
                types.Add(type);
            }
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new BitDeltaException($"{path}: not a SentencePiece model ({e.Message.ReplaceLineEndings(" ")})", e);
        }
        return ([.. pieces], [.. types]);
    }

    static byte ParseBytePiece(string piece, string path) =>
        piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b)
            ? b : throw new BitDeltaException($"{path}: byte piece '{piece}' is not of the form <0xNN>");

    // ---- encoding ----

    /// <summary>Token ids of <paramref name="text"/>, with BOS first when the checkpoint asks for it.</summary>
    public int[] Encode(string text) => Encode(text, AddBos);

    /// <summary>Token ids of <paramref name="text"/>, with BOS first when <paramref name="addBos"/>.</summary>
    public int[] Encode(string text, bool addBos)
    {
        var ids = encodeText(text);
        if (!addBos) return [.. ids];
        if (BosId is not { } bos) throw new BitDeltaException($"{Path}: BOS asked for but config.json has no bos_token_id");
        var r = new int[ids.Count + 1];
        r[0] = bos;
        for (int i = 0; i < ids.Count; i++) r[i + 1] = ids[i];
        return r;
    }

    public bool IsEos(int id) => eos.Contains(id);

    /// <summary>The vocabulary entry of an id, as stored (with ▁ markers, "&lt;0x0A&gt;" for bytes).</summary>
    public string Piece(int id) => (uint)id < (uint)pieces.Length ? pieces[id]
        : throw new ArgumentOutOfRangeException(nameof(id), $"token id {id} is outside the vocabulary of {pieces.Length}");

    // ---- decoding ----

    /// <summary>
    /// The text of a whole sequence, as sentencepiece's DecodeIds gives it (or, for byte-level BPE, HF's decode
    /// with skip_special_tokens and without clean_up_tokenization_spaces): control and special tokens (BOS,
    /// EOS) print nothing, &lt;unk&gt; prints " ⁇ ", bytes are joined into UTF-8, and for SentencePiece the space of
    /// the first word (the dummy prefix the encoder added) is dropped. Bytes that cannot form a character print
    /// U+FFFD. Ids outside the vocabulary (a model whose vocab_size is padded past the tokenizer's) print nothing.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids) => Decode(ids, startOfText: true);

    /// <summary>The text of tokens that continue a prompt: as <see cref="Decode(ReadOnlySpan{int})"/>, but the
    /// first word keeps its space ("Answer:" + " 75", not "75").</summary>
    public string DecodeContinuation(IEnumerable<int> ids) => Decode(ids.ToArray(), startOfText: false);

    string Decode(ReadOnlySpan<int> ids, bool startOfText)
    {
        var d = new StreamDecoder(this, startOfText);
        var sb = new StringBuilder();
        foreach (int id in ids) sb.Append(d.Add(id));
        sb.Append(d.Finish());
        return sb.ToString();
    }

    public string Decode(IEnumerable<int> ids) => Decode(ids.ToArray());

    /// <summary>A decoder for generated tokens, fed one at a time. <paramref name="startOfText"/>: the tokens
    /// begin the text (drop the first word's space); false for tokens that continue a prompt.</summary>
    public StreamDecoder NewStreamDecoder(bool startOfText = false) => new(this, startOfText);

    /// <summary>The special (control) tokens by their text: &lt;s&gt;, &lt;/s&gt;, Llama-3's &lt;|eot_id|&gt; and the like.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => specials ??= Enumerable.Range(0, pieces.Length)
        .Where(i => types[i] == PieceType.Control && pieces[i].Length > 0)
        .GroupBy(i => pieces[i]).ToDictionary(g => g.Key, g => g.First());

    IReadOnlyDictionary<string, int>? specials;

    /// <summary>
    /// Text in which special tokens appear as their text (a rendered chat template) to ids: each special token's text
    /// becomes its id, and the text between them is encoded on its own without BOS, as Hugging Face encodes a rendered
    /// chat with add_special_tokens=False.
    /// </summary>
    public int[] EncodeWithSpecials(string text)
    {
        var names = SpecialTokens.Keys.OrderByDescending(k => k.Length).ToArray();
        var ids = new List<int>();
        int from = 0;
        while (from < text.Length)
        {
            int best = -1;
            string? hit = null;
            foreach (var n in names)
            {
                int at = text.IndexOf(n, from, StringComparison.Ordinal);
                if (at >= 0 && (best < 0 || at < best)) { best = at; hit = n; }
            }
            int end = best < 0 ? text.Length : best;
            if (end > from) ids.AddRange(Encode(text[from..end], addBos: false));
            if (hit == null) break;
            ids.Add(SpecialTokens[hit]);
            from = best + hit.Length;
        }
        return [.. ids];
    }

    /// <summary>The bytes id prints; at the start of the text a leading marker (the dummy prefix) is dropped,
    /// as sentencepiece does for the first piece that prints something.</summary>
    internal ReadOnlySpan<byte> Surface(int id, ref bool atStart)
    {
        if ((uint)id >= (uint)surface.Length) return [];
        var s = surface[id];
        if (s.Length == 0) return s;
        bool strip = atStart && dropsDummyPrefix && types[id] is not (PieceType.Byte or PieceType.Unknown) && pieces[id][0] == SpaceMarker;
        atStart = false;
        return strip ? s.AsSpan(1) : s;
    }
}

/// <summary>
/// Turns generated token ids into text as they come: each <see cref="Add"/> returns the text that is complete
/// so far and not yet returned. A character split over byte-fallback tokens (an emoji is four) is held back
/// until its last byte arrives, so no half character or U+FFFD is printed early. Bytes that cannot become a
/// character print one U+FFFD each, as sentencepiece's decoder (and HF's ByteFallback decoder) prints them.
/// The concatenation of every <see cref="Add"/> and <see cref="Finish"/> equals
/// <see cref="Tokenizer.Decode(ReadOnlySpan{int})"/> of the same ids.
/// </summary>
public sealed class StreamDecoder
{
    readonly Tokenizer tokenizer;
    readonly byte[] pending = new byte[4];
    int pendingCount;
    bool atStart;

    internal StreamDecoder(Tokenizer tokenizer, bool startOfText)
    {
        this.tokenizer = tokenizer;
        atStart = startOfText;
    }

    /// <summary>The text that <paramref name="id"/> completes (may be empty).</summary>
    public string Add(int id)
    {
        var bytes = tokenizer.Surface(id, ref atStart);
        if (pendingCount == 0 && Ascii(bytes)) return Encoding.ASCII.GetString(bytes);
        var sb = new StringBuilder();
        foreach (byte b in bytes) Push(b, sb);
        return sb.ToString();
    }

    /// <summary>At the end of the sequence: the bytes of an unfinished character, as U+FFFD (one per byte for
    /// SentencePiece, one in all for byte-level BPE).</summary>
    public string Finish()
    {
        var s = pendingCount == 0 ? "" : new string('\uFFFD', tokenizer.ReplacesPerByte ? pendingCount : 1);
        pendingCount = 0;
        return s;
    }

    static bool Ascii(ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes) if (b >= 0x80) return false;
        return true;
    }

    void Push(byte b, StringBuilder sb)
    {
        pending[pendingCount++] = b;
        while (pendingCount > 0)
        {
            int need = Utf8.SequenceLength(pending[0]);
            int have = Math.Min(pendingCount, need);
            int valid = Utf8.ValidPrefix(pending.AsSpan(0, have));
            if (need == 0 || valid < have)
            {
                // The bytes from the first one cannot make a character. sentencepiece replaces the first byte
                // alone and looks at the next as a possible start; Rust's from_utf8_lossy (HF's ByteLevel
                // decoder) replaces the longest well-formed start of a sequence, which is at least that byte.
                sb.Append('\uFFFD');
                Drop(tokenizer.ReplacesPerByte ? 1 : Math.Max(1, valid));
                continue;
            }
            if (pendingCount < need) return;
            sb.Append(Encoding.UTF8.GetString(pending, 0, need));
            Drop(need);
        }
    }

    void Drop(int n)
    {
        pendingCount -= n;
        Array.Copy(pending, n, pending, 0, pendingCount);
    }
}

/// <summary>Well-formed UTF-8 as Unicode 15 §3.9, Table 3-7 defines it (no overlongs, no surrogates, nothing past U+10FFFF).</summary>
static class Utf8
{
    /// <summary>Bytes in the sequence this lead byte starts; 0 when it cannot start one.</summary>
    public static int SequenceLength(byte lead) => lead switch
    {
        < 0x80 => 1,
        >= 0xC2 and <= 0xDF => 2,
        >= 0xE0 and <= 0xEF => 3,
        >= 0xF0 and <= 0xF4 => 4,
        _ => 0,
    };

    /// <summary>How many of the bytes, from the lead byte on, are well-formed so far.</summary>
    public static int ValidPrefix(ReadOnlySpan<byte> s)
    {
        if (s.Length == 0 || SequenceLength(s[0]) == 0) return 0;
        for (int i = 1; i < s.Length; i++)
        {
            byte b = s[i];
            // The second byte's range depends on the lead; later bytes are plain continuations.
            (byte lo, byte hi) = i > 1 ? ((byte)0x80, (byte)0xBF) : s[0] switch
            {
                0xE0 => ((byte)0xA0, (byte)0xBF),
                0xED => ((byte)0x80, (byte)0x9F),
                0xF0 => ((byte)0x90, (byte)0xBF),
                0xF4 => ((byte)0x80, (byte)0x8F),
                _ => ((byte)0x80, (byte)0xBF),
            };
            if (b < lo || b > hi) return i;
        }
        return s.Length;
    }
}

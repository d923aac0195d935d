using System.Text.Json;
using BitDeltaNative.Models;

namespace BitDeltaNative.Serving;

/// <summary>
/// How chat messages become prompt tokens. A checkpoint's own template is tokenizer_config.json's <c>chat_template</c>
/// (a string, or a list of named templates of which "default" is taken), rendered by <see cref="JinjaTemplate"/> with
/// <c>messages</c>, <c>bos_token</c>, <c>eos_token</c> and <c>add_generation_prompt = true</c>, then tokenized with
/// special tokens read as themselves (<see cref="Tokenizer.EncodeWithSpecials"/>), as transformers'
/// apply_chat_template(tokenize=True) does.
///
/// Without one, the default is Llama-2-chat's format as Meta's reference code builds it (llama/generation.py,
/// <c>chat_completion</c>): an optional system message first, folded into the first user turn between
/// <c>&lt;&lt;SYS&gt;&gt;\n</c> and <c>\n&lt;&lt;/SYS&gt;&gt;\n\n</c>; then user and assistant alternate, the last
/// is the user's; each finished exchange is BOS + "[INST] {user} [/INST] {assistant} " + EOS, the open one
/// BOS + "[INST] {user} [/INST]", contents stripped; BOS and EOS are the special ids, never text.
/// </summary>
public sealed class ChatTemplate
{
    const string BeginSys = "<<SYS>>\n", EndSys = "\n<</SYS>>\n\n";
    readonly Tokenizer tokenizer;
    readonly JinjaTemplate? jinja;
    readonly string bos = "", eos = "";

    /// <summary>"llama-2-chat (default)" or where the checkpoint's template came from.</summary>
    public string Name { get; }

    ChatTemplate(Tokenizer tokenizer, JinjaTemplate? jinja, string name, string bos, string eos)
    {
        this.tokenizer = tokenizer;
        this.jinja = jinja;
        Name = name;
        this.bos = bos;
        this.eos = eos;
    }

    public static ChatTemplate Default(Tokenizer tokenizer) => new(tokenizer, null, "llama-2-chat (default)", "", "");

    /// <summary>The template of a model folder: its tokenizer_config.json's chat_template when it has one, else the default.
    /// A template that cannot be parsed is an error naming the file.</summary>
    public static ChatTemplate Load(string modelDir, Tokenizer tokenizer)
    {
        string path = Path.Combine(modelDir, Tokenizer.ConfigFileName);
        if (!File.Exists(path)) return Default(tokenizer);
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        if (!root.TryGetProperty("chat_template", out var t) || t.ValueKind == JsonValueKind.Null) return Default(tokenizer);
        string? source = t.ValueKind == JsonValueKind.String ? t.GetString()
            : t.ValueKind == JsonValueKind.Array
                ? t.EnumerateArray().Where(e => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("name", out var n) && n.GetString() == "default")
                    .Select(e => e.TryGetProperty("template", out var s) ? s.GetString() : null).FirstOrDefault()
                : null;
        if (source == null) throw new BitDeltaException($"{path}: chat_template is neither a string nor a list holding a template named 'default'");
        try { return new ChatTemplate(tokenizer, JinjaTemplate.Parse(source), $"chat_template of {path}", TokenText(root, "bos_token"), TokenText(root, "eos_token")); }
        catch (BitDeltaException e) { throw new BitDeltaException($"{path}: {e.Message}", e); }
    }

    /// <summary>bos_token / eos_token: a string, or an object with its "content" (AddedToken as transformers saves it).</summary>
    static string TokenText(JsonElement root, string name) =>
        !root.TryGetProperty(name, out var v) ? "" : v.ValueKind switch
        {
            JsonValueKind.String => v.GetString()!,
            JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString()!,
            _ => "",
        };

    /// <summary>The prompt tokens for <paramref name="messages"/> (role, content). A conversation the template refuses
    /// (roles out of order, say) is a <see cref="BitDeltaException"/>.</summary>
    public int[] Encode(IReadOnlyList<(string Role, string Content)> messages)
    {
        if (messages.Count == 0) throw new BitDeltaException("messages: at least one message is needed");
        if (jinja == null) return EncodeDefault(messages);
        string text = jinja.Render(new Dictionary<string, object?>
        {
            ["messages"] = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["bos_token"] = bos,
            ["eos_token"] = eos,
            ["add_generation_prompt"] = true,
        });
        var ids = tokenizer.EncodeWithSpecials(text);
        if (ids.Length == 0) throw new BitDeltaException("the chat template rendered these messages as nothing");
        return ids;
    }

    int[] EncodeDefault(IReadOnlyList<(string Role, string Content)> messages)
    {
        var turns = messages.ToList();
        for (int i = 0; i < turns.Count; i++)
            if (turns[i].Role is not ("system" or "user" or "assistant"))
                throw new BitDeltaException($"messages[{i}].role: '{turns[i].Role}' is not one of system, user, assistant");
        int first = 0;
        if (turns[0].Role == "system")
        {
            if (turns.Count < 2 || turns[1].Role != "user") throw new BitDeltaException("messages[1]: a system message must be followed by a user message");
            turns[1] = ("user", BeginSys + turns[0].Content + EndSys + turns[1].Content);
            first = 1;
        }
        for (int i = first; i < turns.Count; i++)
        {
            string want = (i - first) % 2 == 0 ? "user" : "assistant";
            if (turns[i].Role != want)
                throw new BitDeltaException($"messages[{i}].role: expected '{want}' (after an optional system message, user and assistant alternate)");
        }
        if (turns[^1].Role != "user") throw new BitDeltaException($"messages[{turns.Count - 1}]: the last message must be the user's");
        int eosId = tokenizer.EosIds[0];
        var ids = new List<int>();
        for (int i = first; i + 1 < turns.Count; i += 2)
        {
            ids.AddRange(tokenizer.Encode($"[INST] {turns[i].Content.Trim()} [/INST] {turns[i + 1].Content.Trim()} ", addBos: true));
            ids.Add(eosId);
        }
        ids.AddRange(tokenizer.Encode($"[INST] {turns[^1].Content.Trim()} [/INST]", addBos: true));
        return [.. ids];
    }
}

using BitDeltaNative.Models;

namespace BitDeltaNative.Serving;

/// <summary>
/// The default chat format, used where the checkpoint's tokenizer_config.json has no <c>chat_template</c>: Llama-2-chat's,
/// as Meta's reference code builds it (llama/generation.py, <c>chat_completion</c>). An optional system message goes
/// first and is folded into the first user turn between <c>&lt;&lt;SYS&gt;&gt;\n</c> and <c>\n&lt;&lt;/SYS&gt;&gt;\n\n</c>;
/// then user and assistant turns alternate, and the last is the user's. Each finished exchange is
/// BOS + "[INST] {user} [/INST] {assistant} " + EOS, the open one BOS + "[INST] {user} [/INST]", contents stripped
/// of surrounding white space; BOS and EOS are the special ids, never text.
/// </summary>
public static class ChatTemplate
{
    public const string Name = "llama-2-chat";
    const string BeginSys = "<<SYS>>\n", EndSys = "\n<</SYS>>\n\n";

    /// <summary>The prompt tokens for <paramref name="messages"/> (role, content). Roles out of order are a
    /// <see cref="BitDeltaException"/> that names the message.</summary>
    public static int[] Encode(Tokenizer tokenizer, IReadOnlyList<(string Role, string Content)> messages)
    {
        if (messages.Count == 0) throw new BitDeltaException("messages: at least one message is needed");
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
        int eos = tokenizer.EosIds[0];
        var ids = new List<int>();
        for (int i = first; i + 1 < turns.Count; i += 2)
        {
            ids.AddRange(tokenizer.Encode($"[INST] {turns[i].Content.Trim()} [/INST] {turns[i + 1].Content.Trim()} ", addBos: true));
            ids.Add(eos);
        }
        ids.AddRange(tokenizer.Encode($"[INST] {turns[^1].Content.Trim()} [/INST]", addBos: true));
        return [.. ids];
    }
}

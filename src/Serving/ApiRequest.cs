using System.Text.Json;
using BitDeltaNative.Models;

namespace BitDeltaNative.Serving;

/// <summary>An error as OpenAI's API reports it: HTTP status and <c>{"error": {message, type, param, code}}</c>.</summary>
public sealed class ApiError(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error")
    : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type;
}

/// <summary>A checked request: what the scheduler runs, plus how to answer.</summary>
public sealed record ApiRequest(CompletionRequest Completion, bool Stream, bool IncludeUsage);

/// <summary>
/// Reads the JSON bodies of <c>POST /v1/completions</c> and <c>POST /v1/chat/completions</c> (OpenAI's API reference):
/// every field the server honours is checked for type and range, and each mistake is one <see cref="ApiError"/> that
/// names the field. Fields that would change the answer but are not implemented (n &gt; 1, logprobs, echo, suffix,
/// penalties, logit_bias, tools) are refused rather than ignored. Beyond OpenAI, as vLLM has them: <c>top_k</c> (0 or −1 = off)
/// and <c>ignore_eos</c> (generate max_tokens whatever the model says; for load tests).
/// </summary>
public static class ApiRequestParser
{
    /// <param name="context">tokens a sequence may hold: prompt plus max_tokens must fit</param>
    public static ApiRequest Parse(JsonElement body, bool chat, Tokenizer tokenizer, ChatTemplate template, Func<string, bool> knowsModel, int context)
    {
        if (body.ValueKind != JsonValueKind.Object) throw new ApiError(400, "the request body must be a JSON object");
        string model = String(body, "model") ?? throw new ApiError(400, "you must provide a model parameter", "model");
        if (!knowsModel(model)) throw new ApiError(404, $"The model '{model}' does not exist", "model", "model_not_found");

        foreach (var (name, ok) in new (string, Func<JsonElement, bool>)[]
                 {
                     ("n", e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int n) && n == 1),
                     ("best_of", e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int n) && n == 1),
                     ("logprobs", e => e.ValueKind is JsonValueKind.False),
                     ("top_logprobs", _ => false),
                     ("echo", e => e.ValueKind is JsonValueKind.False),
                     ("suffix", _ => false),
                     ("presence_penalty", e => e.ValueKind == JsonValueKind.Number && e.GetDouble() == 0),
                     ("frequency_penalty", e => e.ValueKind == JsonValueKind.Number && e.GetDouble() == 0),
                     ("logit_bias", e => e.ValueKind == JsonValueKind.Object && !e.EnumerateObject().Any()),
                     ("tools", _ => false),
                     ("functions", _ => false),
                 })
            if (body.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null && !ok(v))
                throw new ApiError(400, $"'{name}' is not supported by this server (only its default value)", name, "unsupported_parameter");

        int[] prompt = chat ? ChatPrompt(body, template) : CompletionPrompt(body, tokenizer);
        if (prompt.Length >= context)
            throw new ApiError(400, $"This model's maximum context length is {context} tokens. However, your prompt is {prompt.Length} tokens, " +
                                    "which leaves no room for a completion. Please reduce the length of the prompt.", chat ? "messages" : "prompt", "context_length_exceeded");
        int? asked = Int(body, "max_tokens") ?? (chat ? Int(body, "max_completion_tokens") : null);
        int maxTokens = asked ?? (chat ? context - prompt.Length : 16);
        string maxName = body.TryGetProperty("max_tokens", out _) || !chat ? "max_tokens" : "max_completion_tokens";
        if (maxTokens < 1) throw new ApiError(400, $"'{maxName}' must be at least 1, got {maxTokens}", maxName);
        if ((long)prompt.Length + maxTokens > context)
            throw new ApiError(400, $"This model's maximum context length is {context} tokens. However, you requested {prompt.Length + (long)maxTokens} tokens " +
                                    $"({prompt.Length} in the {(chat ? "messages" : "prompt")}, {maxTokens} in the completion). Please reduce the length of the " +
                                    $"{(chat ? "messages" : "prompt")} or the completion.", maxName, "context_length_exceeded");

        float temperature = (float)(Number(body, "temperature") ?? 1.0);
        if (!(temperature >= 0 && temperature <= 2)) throw new ApiError(400, $"'temperature' must be in [0, 2], got {temperature}", "temperature");
        float topP = (float)(Number(body, "top_p") ?? 1.0);
        if (!(topP > 0 && topP <= 1)) throw new ApiError(400, $"'top_p' must be in (0, 1], got {topP}", "top_p");
        int topK = Int(body, "top_k") ?? 0;
        if (topK < -1) throw new ApiError(400, $"'top_k' must be ≥ 0 (0 or −1: off), got {topK}", "top_k");
        long? seed = Long(body, "seed");
        // Without a seed each request draws anew, as OpenAI's API does.
        ulong seedBits = seed.HasValue ? unchecked((ulong)seed.Value) : (ulong)Random.Shared.NextInt64();
        var stop = Stops(body);
        bool stream = Bool(body, "stream") ?? false;
        bool ignoreEos = Bool(body, "ignore_eos") ?? false;
        bool includeUsage = false;
        if (body.TryGetProperty("stream_options", out var so) && so.ValueKind != JsonValueKind.Null)
        {
            if (so.ValueKind != JsonValueKind.Object) throw new ApiError(400, "'stream_options' must be an object", "stream_options");
            if (!stream) throw new ApiError(400, "'stream_options' is only allowed when 'stream' is true", "stream_options");
            includeUsage = Bool(so, "include_usage", "stream_options.include_usage") ?? false;
        }
        var sampling = new SamplingOptions(temperature, Math.Max(topK, 0), topP, seedBits);
        return new ApiRequest(new CompletionRequest(model, prompt, maxTokens, sampling, stop, ignoreEos), stream, includeUsage);
    }

    static int[] CompletionPrompt(JsonElement body, Tokenizer tokenizer)
    {
        if (!body.TryGetProperty("prompt", out var p) || p.ValueKind == JsonValueKind.Null)
            throw new ApiError(400, "you must provide a prompt", "prompt");
        // A string, an array of token ids, or a one-element array of either (batches of prompts: send several requests).
        if (p.ValueKind == JsonValueKind.Array && p.GetArrayLength() == 1 && p[0].ValueKind is JsonValueKind.String or JsonValueKind.Array) p = p[0];
        int[] ids;
        if (p.ValueKind == JsonValueKind.String) ids = tokenizer.Encode(p.GetString()!);
        else if (p.ValueKind == JsonValueKind.Array && p.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number))
        {
            ids = p.EnumerateArray().Select(e => e.TryGetInt32(out int id) ? id : -1).ToArray();
            int bad = Array.FindIndex(ids, id => id < 0 || id >= tokenizer.VocabSize);
            if (bad >= 0) throw new ApiError(400, $"prompt[{bad}]: token ids must be integers in 0 … {tokenizer.VocabSize - 1}", "prompt");
        }
        else throw new ApiError(400, "'prompt' must be a string, an array of token ids, or a one-element array of either", "prompt");
        if (ids.Length == 0) throw new ApiError(400, "the prompt is empty (no tokens)", "prompt");
        return ids;
    }

    static int[] ChatPrompt(JsonElement body, ChatTemplate template)
    {
        if (!body.TryGetProperty("messages", out var m) || m.ValueKind != JsonValueKind.Array)
            throw new ApiError(400, "'messages' must be an array of {role, content}", "messages");
        var list = new List<(string, string)>();
        int i = 0;
        foreach (var e in m.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Object) throw new ApiError(400, $"messages[{i}] must be an object", $"messages[{i}]");
            string role = String(e, "role", $"messages[{i}].role") ?? throw new ApiError(400, $"messages[{i}].role is missing", $"messages[{i}].role");
            list.Add((role, Content(e, i)));
            i++;
        }
        try { return template.Encode(list); }
        catch (BitDeltaException ex) { throw new ApiError(400, ex.Message, "messages"); }
    }

    /// <summary>A message's content: a string, or an array of parts of which only {"type": "text", "text": …} are taken.</summary>
    static string Content(JsonElement message, int i)
    {
        string param = $"messages[{i}].content";
        if (!message.TryGetProperty("content", out var c) || c.ValueKind == JsonValueKind.Null) return "";
        if (c.ValueKind == JsonValueKind.String) return c.GetString()!;
        if (c.ValueKind != JsonValueKind.Array) throw new ApiError(400, $"'{param}' must be a string or an array of text parts", param);
        var text = new System.Text.StringBuilder();
        foreach (var part in c.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object || String(part, "type", param) != "text")
                throw new ApiError(400, $"'{param}': only parts of type 'text' are supported", param);
            text.Append(String(part, "text", param) ?? "");
        }
        return text.ToString();
    }

    static IReadOnlyList<string> Stops(JsonElement body)
    {
        if (!body.TryGetProperty("stop", out var s) || s.ValueKind == JsonValueKind.Null) return [];
        var list = s.ValueKind switch
        {
            JsonValueKind.String => [s.GetString()!],
            JsonValueKind.Array when s.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String) => s.EnumerateArray().Select(e => e.GetString()!).ToList(),
            _ => throw new ApiError(400, "'stop' must be a string or an array of strings", "stop"),
        };
        if (list.Count > 4) throw new ApiError(400, $"'stop' holds at most 4 sequences, got {list.Count}", "stop");
        if (list.Any(x => x.Length == 0)) throw new ApiError(400, "'stop' sequences must not be empty", "stop");
        return list;
    }

    static string? String(JsonElement o, string name, string? param = null)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw new ApiError(400, $"'{param ?? name}' must be a string, got {Kind(v)}", param ?? name);
    }

    static bool? Bool(JsonElement o, string name, string? param = null)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw new ApiError(400, $"'{param ?? name}' must be a boolean, got {Kind(v)}", param ?? name);
    }

    static double? Number(JsonElement o, string name)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new ApiError(400, $"'{name}' must be a number, got {Kind(v)}", name);
    }

    static long? Long(JsonElement o, string name)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long x)) return x;
        throw new ApiError(400, $"'{name}' must be an integer, got {Kind(v)}", name);
    }

    static int? Int(JsonElement o, string name)
    {
        long? x = Long(o, name);
        if (x is > int.MaxValue or < int.MinValue) throw new ApiError(400, $"'{name}' is out of range: {x}", name);
        return (int?)x;
    }

    static string Kind(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        JsonValueKind.String => "a string",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => v.ValueKind.ToString().ToLowerInvariant(),
    };
}

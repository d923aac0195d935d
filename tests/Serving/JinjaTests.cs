using System.Text.Json;
using BitDeltaNative.Serving;

namespace BitDeltaNative.Tests.Serving;

/// <summary>The Jinja subset against jinja2 itself: real chat templates (Llama-2-chat, Mistral-Instruct, Llama-3-Instruct,
/// Zephyr, ChatML) and one of ours that touches every supported construct, rendered by jinja2 as transformers sets it
/// up (tools/oracle/chat_templates.py → tests/fixtures/chat/templates.json), output for output and error for error.</summary>
public class JinjaTests
{
    public static TheoryData<string> Templates
    {
        get
        {
            var d = new TheoryData<string>();
            using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Dir("chat", "templates.json")));
            foreach (var t in doc.RootElement.EnumerateArray()) d.Add(t.GetProperty("name").GetString()!);
            return d;
        }
    }

    [Theory]
    [MemberData(nameof(Templates))]
    public void RendersAsJinja2Does(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Dir("chat", "templates.json")));
        var t = doc.RootElement.EnumerateArray().Single(x => x.GetProperty("name").GetString() == name);
        var template = JinjaTemplate.Parse(t.GetProperty("template").GetString()!);
        int n = 0;
        foreach (var c in t.GetProperty("cases").EnumerateArray())
        {
            var vars = new Dictionary<string, object?>
            {
                ["messages"] = JinjaTemplate.FromJson(c.GetProperty("messages")),
                ["bos_token"] = t.GetProperty("bos_token").GetString(),
                ["eos_token"] = t.GetProperty("eos_token").GetString(),
                ["add_generation_prompt"] = c.GetProperty("add_generation_prompt").GetBoolean(),
            };
            if (c.TryGetProperty("output", out var want)) Assert.Equal(want.GetString(), template.Render(vars));
            else
            {
                var e = Assert.Throws<BitDeltaException>(() => template.Render(vars));
                Assert.Equal($"chat template: {c.GetProperty("error").GetString()}", e.Message);
            }
            n++;
        }
        Assert.Equal(12, n);
    }

    [Theory]
    [InlineData("{% if x %}", "missing '{% endif %}'")]
    [InlineData("{{ x ", "never closed")]
    [InlineData("{% macro m() %}{% endmacro %}", "'macro' is not supported")]
    [InlineData("{% endfor %}", "without its opening tag")]
    [InlineData("{{ 'a' + }}", "unexpected")]
    [InlineData("{{ x | frobnicate }}", null)]
    public void BadTemplatesAreClearErrors(string source, string? says)
    {
        if (says != null)
        {
            var e = Assert.Throws<BitDeltaException>(() => JinjaTemplate.Parse(source));
            Assert.Contains(says, e.Message);
            Assert.StartsWith("chat template:", e.Message);
        }
        else
        {
            var t = JinjaTemplate.Parse(source);
            var e = Assert.Throws<BitDeltaException>(() => t.Render(new Dictionary<string, object?> { ["x"] = "a" }));
            Assert.Contains("frobnicate", e.Message);
        }
    }
}

/// <summary>A checkpoint's chat_template through <see cref="ChatTemplate"/>: Llama-2-chat's Jinja template gives the same
/// tokens as Meta's reference format (our default), special tokens read as ids; refusals come through; the server
/// uses it for chat requests.</summary>
public sealed class ChatTemplateTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    static string Llama2Template()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Dir("chat", "templates.json")));
        return doc.RootElement.EnumerateArray().First(t => t.GetProperty("name").GetString()!.StartsWith("llama-2-chat")).GetProperty("template").GetString()!;
    }

    static string FolderWith(Tests.Tensors.TempDir dir, object config)
    {
        File.WriteAllText(dir.File("tokenizer_config.json"), JsonSerializer.Serialize(config));
        return dir.Path;
    }

    public static TheoryData<string[]> Conversations => new()
    {
        new[] { "user", "Hello!" },
        new[] { "system", "Be brief.", "user", "What is 2 + 2?" },
        new[] { "user", " Q: 2 + 2? ", "assistant", " 4 ", "user", "And 3 + 3?" },
        new[] { "system", "Pirate.", "user", "hi", "assistant", "Ahoy", "user", "Where?" },
    };

    [Theory]
    [MemberData(nameof(Conversations))]
    public void Llama2JinjaTemplateEqualsTheReferenceFormat(string[] flat)
    {
        var messages = flat.Chunk(2).Select(p => (p[0], p[1])).ToList();
        using var dir = new Tests.Tensors.TempDir();
        var chat = ChatTemplate.Load(FolderWith(dir, new { chat_template = Llama2Template(), bos_token = "<s>", eos_token = new { content = "</s>" } }), fx.Tokenizer);
        Assert.StartsWith("chat_template of", chat.Name);
        Assert.Equal(ChatTemplate.Default(fx.Tokenizer).Encode(messages), chat.Encode(messages));
    }

    [Fact]
    public async Task ServerChatUsesTheCheckpointTemplate()
    {
        using var dir = new Tests.Tensors.TempDir();
        var chat = ChatTemplate.Load(FolderWith(dir, new { chat_template = new[] { new { name = "default", template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:" } } }), fx.Tokenizer);
        var want = fx.Tokenizer.Encode("user: What is 7 + 8?\nassistant:", addBos: false);
        Assert.Equal(want, chat.Encode([("user", "What is 7 + 8?")]));
        var e = Assert.Throws<BitDeltaException>(() => ChatTemplate.Load(FolderWith(dir, new { chat_template = Llama2Template(), bos_token = "<s>", eos_token = "</s>" }), fx.Tokenizer)
            .Encode([("user", "a"), ("user", "b")]));
        Assert.Contains("Conversation roles must alternate", e.Message);

        await using var s = await TestServer.Start(fx, resident: 1, chat: chat);
        var (status, body) = await s.Post("/v1/chat/completions", new { model = "a", messages = new[] { new { role = "user", content = "What is 7 + 8?" } }, max_tokens = 4, temperature = 0 });
        Assert.Equal(System.Net.HttpStatusCode.OK, status);
        Assert.Equal(want.Length, (int)body["usage"]!["prompt_tokens"]!);
        var (bad, err) = await s.Post("/v1/chat/completions", new { model = "a", messages = Array.Empty<object>() });
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, bad);
        Assert.Equal("messages", (string?)err["error"]!["param"]);
    }

    [Fact]
    public void BrokenTemplateIsAnErrorNamingTheFile()
    {
        using var dir = new Tests.Tensors.TempDir();
        var e = Assert.Throws<BitDeltaException>(() => ChatTemplate.Load(FolderWith(dir, new { chat_template = "{% if x %}never closed" }), fx.Tokenizer));
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.Contains("endif", e.Message);
        Assert.Equal("llama-2-chat (default)", ChatTemplate.Load(Fixtures.Demo("base"), fx.Tokenizer).Name);
    }
}

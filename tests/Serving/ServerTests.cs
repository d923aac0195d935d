using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using BitDeltaNative.Models;
using BitDeltaNative.Serving;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Serving;

/// <summary>
/// The demo pair (demo/) on the managed CPU device: tenant a is the demo fine-tune compressed over the demo base,
/// tenant b the same signs with every scale × 2.5. <see cref="Alone"/> gives what a tenant generates by itself
/// (<see cref="Engine.Generate"/>, one request, its own engine), computed before any server of a test runs, since
/// the server's scheduler thread then owns the model.
/// </summary>
public sealed class ServerFixture : IDisposable
{
    readonly TempDir dir = new();
    readonly Dictionary<string, string> alone = [];
    public string BaseDir { get; } = Fixtures.Demo("base");
    public string A { get; }
    public string B { get; }
    public Tokenizer Tokenizer { get; }
    public LlamaModel Model { get; }

    public ServerFixture()
    {
        A = dir.File("a.safetensors");
        B = dir.File("b.safetensors");
        Compressor.Compress(BaseDir, Fixtures.Demo("finetuned"), A);
        using (var f = DeltaFile.Open(A))
            f.WriteWithScales(B, f.Scales().ToDictionary(kv => kv.Key, kv => kv.Value * 2.5f), new Dictionary<string, string>());
        var config = LlamaConfig.Load(BaseDir);
        Tokenizer = Tokenizer.Load(BaseDir, config);
        Model = LlamaModel.Load(BaseDir, Device.Cpu);
    }

    /// <summary>The text tenant <paramref name="model"/> generates alone for <paramref name="prompt"/>, and whether it
    /// stopped at EOS.</summary>
    public (string Text, bool Eos) Alone(string model, string prompt, int maxTokens, SamplingOptions? sampling = null)
    {
        string key = $"{model}\u0001{prompt}\u0001{maxTokens}\u0001{sampling}";
        lock (alone)
        {
            if (!alone.TryGetValue(key, out var text))
            {
                using var engine = new Engine(Model, 2, BaseDir);
                engine.AddDelta("a", A);
                engine.AddDelta("b", B);
                var ids = engine.Generate([(model, Tokenizer.Encode(prompt))], maxTokens, sampling ?? new SamplingOptions(), Tokenizer.EosIds)[0];
                text = (ids.Length < maxTokens ? "E" : "L") + Tokenizer.DecodeContinuation(ids);
                alone[key] = text;
            }
            return (text[1..], text[0] == 'E');
        }
    }

    public void Dispose()
    {
        Model.Dispose();
        dir.Dispose();
    }
}

/// <summary>One server (engine, tenant cache, scheduler, Kestrel on a free loopback port) and a client for it.</summary>
public sealed class TestServer : IAsyncDisposable
{
    public Engine Engine { get; }
    public TenantCache Tenants { get; }
    public Scheduler Scheduler { get; }
    public Server Server { get; }
    public HttpClient Http { get; }

    TestServer(Engine engine, TenantCache tenants, Scheduler scheduler, Server server)
    {
        Engine = engine;
        Tenants = tenants;
        Scheduler = scheduler;
        Server = server;
        Http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(2) };
    }

    public static async Task<TestServer> Start(ServerFixture fx, int resident = 2, SchedulerOptions? options = null, bool startScheduler = true, long poolBudget = long.MaxValue,
                                               ChatTemplate? chat = null)
    {
        var engine = new Engine(fx.Model, resident, fx.BaseDir);
        var tenants = new TenantCache(engine, [("a", fx.A), ("b", fx.B)], poolBudget);
        var scheduler = new Scheduler(engine, tenants, fx.Tokenizer, options ?? new SchedulerOptions(MaxBatch: 8, Context: 256));
        var server = await Server.StartAsync(scheduler, tenants, fx.Tokenizer, "127.0.0.1", 0, startScheduler, chat);
        return new TestServer(engine, tenants, scheduler, server);
    }

    public async Task<(HttpStatusCode Status, JsonNode Body)> Post(string path, object body)
    {
        using var r = await Http.PostAsync(path, new StringContent(body as string ?? JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"));
        return (r.StatusCode, JsonNode.Parse(await r.Content.ReadAsStringAsync())!);
    }

    /// <summary>A streamed request's events: each <c>data:</c> payload in order ("[DONE]" included).</summary>
    public async Task<List<string>> PostStream(string path, object body)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json") };
        using var r = await Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal("text/event-stream", r.Content.Headers.ContentType?.MediaType);
        string all = await r.Content.ReadAsStringAsync();
        var events = all.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e));
        return events.Select(e => e["data: ".Length..]).ToList();
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        Engine.Dispose();
    }
}

public sealed class ServerTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;
    static readonly string[] Prompts = ["Once upon a time,", "Question: What is 23 + 45?\nAnswer:", "Question: What is 7 + 8?\nAnswer:", "The cat"];
    static readonly string[] Models = [Engine.BaseName, "a", "b"];

    static object Greedy(string model, string prompt, int maxTokens, bool stream = false) =>
        new { model, prompt, max_tokens = maxTokens, temperature = 0, stream };

    [Fact]
    public async Task ModelsHealthPageAndUnknownRoute()
    {
        await using var s = await TestServer.Start(fx, resident: 1);
        var models = JsonNode.Parse(await s.Http.GetStringAsync("/v1/models", Ct))!;
        Assert.Equal("list", (string?)models["object"]);
        var ids = models["data"]!.AsArray().Select(m => (string)m!["id"]!).ToArray();
        Assert.Equal(["base", "a", "b"], ids);
        Assert.All(models["data"]!.AsArray(), m => Assert.Equal("model", (string?)m!["object"]));
        var health = JsonNode.Parse(await s.Http.GetStringAsync("/health", Ct))!;
        Assert.Equal("ok", (string?)health["status"]);
        string page = await s.Http.GetStringAsync("/", Ct);
        Assert.Contains("<title>bitdelta serve</title>", page);
        Assert.Contains("/v1/chat/completions", page);
        using var missing = await s.Http.GetAsync("/v2/nothing", Ct);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("not_found", (string?)JsonNode.Parse(await missing.Content.ReadAsStringAsync(Ct))!["error"]!["code"]);
    }

    /// <summary>Requests of every tenant at once, batched by the scheduler, give what each tenant gives alone.</summary>
    [Fact]
    public async Task ConcurrentGreedyRequestsEqualEachTenantAlone()
    {
        const int max = 24;
        var cases = Models.SelectMany(m => Prompts.Select(p => (Model: m, Prompt: p))).ToList();
        var want = cases.Select(c => fx.Alone(c.Model, c.Prompt, max)).ToList();
        Assert.Contains(want, w => w.Text != want[0].Text);   // the tenants differ, so equality means something
        await using var s = await TestServer.Start(fx);
        var got = await Task.WhenAll(cases.Select(c => s.Post("/v1/completions", Greedy(c.Model, c.Prompt, max))));
        for (int i = 0; i < cases.Count; i++)
        {
            Assert.Equal(HttpStatusCode.OK, got[i].Status);
            var body = got[i].Body;
            Assert.Equal("text_completion", (string?)body["object"]);
            Assert.Equal(cases[i].Model, (string?)body["model"]);
            Assert.Equal(want[i].Text, (string?)body["choices"]![0]!["text"]);
            Assert.Equal(want[i].Eos ? "stop" : "length", (string?)body["choices"]![0]!["finish_reason"]);
            var usage = body["usage"]!;
            Assert.Equal(fx.Tokenizer.Encode(cases[i].Prompt).Length, (int)usage["prompt_tokens"]!);
            Assert.Equal((int)usage["prompt_tokens"]! + (int)usage["completion_tokens"]!, (int)usage["total_tokens"]!);
        }
        // Batched: fewer steps than the requests' tokens one by one.
        Assert.True(s.Scheduler.Metrics.FinishedCount(FinishReason.Length) + s.Scheduler.Metrics.FinishedCount(FinishReason.Stop) == cases.Count);
        string metrics = await s.Http.GetStringAsync("/metrics", Ct);
        long generated = got.Sum(g => (long)g.Body["usage"]!["completion_tokens"]!);
        long fromMetrics = metrics.Split('\n').Where(l => l.StartsWith("bitdelta_generation_tokens_total{")).Sum(l => long.Parse(l.Split(' ')[1]));
        Assert.Equal(generated, fromMetrics);
        long steps = long.Parse(metrics.Split('\n').Single(l => l.StartsWith("bitdelta_steps_total ")).Split(' ')[1]);
        Assert.True(steps < generated, $"{steps} steps for {generated} tokens: not batched");
    }

    /// <summary>Prompts longer than the prefill chunk go in over several steps while others decode; same text.</summary>
    [Fact]
    public async Task ChunkedPrefillGivesTheSameText()
    {
        const int max = 16;
        string longPrompt = string.Concat(Enumerable.Repeat("Once upon a time, a little cat went to the park. ", 6));
        var want = fx.Alone("a", longPrompt, max);
        var wantShort = fx.Alone("b", Prompts[1], max);
        Assert.True(fx.Tokenizer.Encode(longPrompt).Length > 40);
        await using var s = await TestServer.Start(fx, options: new SchedulerOptions(MaxBatch: 4, Context: 256, PrefillChunk: 7));
        var got = await Task.WhenAll(s.Post("/v1/completions", Greedy("a", longPrompt, max)), s.Post("/v1/completions", Greedy("b", Prompts[1], max)));
        Assert.Equal(want.Text, (string?)got[0].Body["choices"]![0]!["text"]);
        Assert.Equal(wantShort.Text, (string?)got[1].Body["choices"]![0]!["text"]);
    }

    [Fact]
    public async Task StreamingSendsTheSameTextAsChunksThenDone()
    {
        const int max = 20;
        var want = fx.Alone("a", Prompts[0], max);
        await using var s = await TestServer.Start(fx);
        var events = await s.PostStream("/v1/completions", new { model = "a", prompt = Prompts[0], max_tokens = max, temperature = 0, stream = true, stream_options = new { include_usage = true } });
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e)!).ToList();
        Assert.True(chunks.Count >= 3, "text should come in several chunks");
        Assert.All(chunks, c => Assert.Equal("text_completion", (string?)c["object"]));
        Assert.Single(chunks.Select(c => (string?)c["id"]).Distinct());
        var usage = chunks[^1];
        Assert.Empty(usage["choices"]!.AsArray());
        Assert.Equal(want.Eos ? "stop" : "length", (string?)chunks[^2]["choices"]![0]!["finish_reason"]);
        string text = string.Concat(chunks[..^1].Select(c => (string?)c["choices"]![0]!["text"]));
        Assert.Equal(want.Text, text);
        Assert.InRange((int)usage["usage"]!["completion_tokens"]!, 1, max);

        var chat = await s.PostStream("/v1/chat/completions", new { model = "b", messages = new[] { new { role = "user", content = "Hi" } }, max_tokens = 8, temperature = 0, stream = true });
        var first = JsonNode.Parse(chat[0])!;
        Assert.Equal("chat.completion.chunk", (string?)first["object"]);
        Assert.Equal("assistant", (string?)first["choices"]![0]!["delta"]!["role"]);
        Assert.NotNull(JsonNode.Parse(chat[^2])!["choices"]![0]!["finish_reason"]);
    }

    /// <summary>Chat goes through the default template (Llama-2-chat's format) and answers as the assistant.</summary>
    [Fact]
    public async Task ChatUsesTheDefaultTemplate()
    {
        var messages = new[] { ("system", "Be brief."), ("user", "What is 2 + 2?"), ("assistant", "4"), ("user", "And 3 + 3?") };
        var ids = ChatTemplate.Default(fx.Tokenizer).Encode(messages);
        int bos = fx.Tokenizer.BosId!.Value, eos = fx.Tokenizer.EosIds[0];
        int[] first = [.. fx.Tokenizer.Encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2 + 2? [/INST] 4 ", addBos: true), eos];
        int[] second = fx.Tokenizer.Encode("[INST] And 3 + 3? [/INST]", addBos: true);
        Assert.Equal([.. first, .. second], ids);
        Assert.Equal(2, ids.Count(i => i == bos));
        await using var s = await TestServer.Start(fx);
        var (status, body) = await s.Post("/v1/chat/completions", new { model = "a", messages = messages.Select(m => new { role = m.Item1, content = m.Item2 }), max_tokens = 6, temperature = 0 });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("chat.completion", (string?)body["object"]);
        Assert.Equal("assistant", (string?)body["choices"]![0]!["message"]!["role"]);
        Assert.Equal(ids.Length, (int)body["usage"]!["prompt_tokens"]!);
        foreach (var bad in new[] { new[] { ("assistant", "x") }, new[] { ("user", "x"), ("user", "y") }, new[] { ("user", "x"), ("assistant", "y") }, new[] { ("tool", "x") } })
            Assert.Throws<BitDeltaException>(() => ChatTemplate.Default(fx.Tokenizer).Encode(bad));
    }

    /// <summary>A seed fixes sampled text, and it is the text `generate --seed` gives for that tenant alone.</summary>
    [Fact]
    public async Task SeededSamplingIsReproducibleAndMatchesGenerateAlone()
    {
        var sampling = new SamplingOptions(0.9f, 0, 0.95f, 1234);
        var want = fx.Alone("b", Prompts[0], 20, sampling);
        await using var s = await TestServer.Start(fx);
        var body = new { model = "b", prompt = Prompts[0], max_tokens = 20, temperature = 0.9, top_p = 0.95, seed = 1234 };
        var greedyMate = Greedy("a", Prompts[1], 20);
        var got = await Task.WhenAll(s.Post("/v1/completions", body), s.Post("/v1/completions", body), s.Post("/v1/completions", greedyMate));
        Assert.Equal(want.Text, (string?)got[0].Body["choices"]![0]!["text"]);
        Assert.Equal(want.Text, (string?)got[1].Body["choices"]![0]!["text"]);
    }

    [Fact]
    public async Task StopSequencesCutTheTextBeforeThem()
    {
        var want = fx.Alone(Engine.BaseName, Prompts[0], 40);
        string[] words = want.Text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(words.Length > 6);
        string stop = " " + words[4];
        int at = want.Text.IndexOf(stop, StringComparison.Ordinal);
        await using var s = await TestServer.Start(fx);
        var (_, body) = await s.Post("/v1/completions", new { model = "base", prompt = Prompts[0], max_tokens = 40, temperature = 0, stop = new[] { "never here", stop } });
        Assert.Equal(want.Text[..at], (string?)body["choices"]![0]!["text"]);
        Assert.Equal("stop", (string?)body["choices"]![0]!["finish_reason"]);
        var events = await s.PostStream("/v1/completions", new { model = "base", prompt = Prompts[0], max_tokens = 40, temperature = 0, stop, stream = true });
        string streamed = string.Concat(events[..^1].Select(e => (string?)JsonNode.Parse(e)!["choices"]![0]!["text"]));
        Assert.Equal(want.Text[..at], streamed);
    }

    public static TheoryData<string, int, string?, string?> BadRequests => new()
    {
        { "{bad json", 400, null, null },
        { "[1, 2]", 400, null, null },
        { """{"prompt": "x"}""", 400, "model", null },
        { """{"model": 3, "prompt": "x"}""", 400, "model", null },
        { """{"model": "nobody", "prompt": "x"}""", 404, "model", "model_not_found" },
        { """{"model": "a"}""", 400, "prompt", null },
        { """{"model": "a", "prompt": {"text": "x"}}""", 400, "prompt", null },
        { """{"model": "a", "prompt": [1, 99999]}""", 400, "prompt", null },
        { """{"model": "a", "prompt": []}""", 400, "prompt", null },
        { """{"model": "a", "prompt": "x", "max_tokens": "ten"}""", 400, "max_tokens", null },
        { """{"model": "a", "prompt": "x", "max_tokens": 0}""", 400, "max_tokens", null },
        { """{"model": "a", "prompt": "x", "max_tokens": 100000}""", 400, "max_tokens", "context_length_exceeded" },
        { """{"model": "a", "prompt": "x", "max_tokens": 1.5}""", 400, "max_tokens", null },
        { """{"model": "a", "prompt": "x", "temperature": 3}""", 400, "temperature", null },
        { """{"model": "a", "prompt": "x", "temperature": "hot"}""", 400, "temperature", null },
        { """{"model": "a", "prompt": "x", "top_p": 0}""", 400, "top_p", null },
        { """{"model": "a", "prompt": "x", "seed": "s"}""", 400, "seed", null },
        { """{"model": "a", "prompt": "x", "stop": 5}""", 400, "stop", null },
        { """{"model": "a", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}""", 400, "stop", null },
        { """{"model": "a", "prompt": "x", "stream": "yes"}""", 400, "stream", null },
        { """{"model": "a", "prompt": "x", "n": 2}""", 400, "n", "unsupported_parameter" },
        { """{"model": "a", "prompt": "x", "logprobs": 3}""", 400, "logprobs", "unsupported_parameter" },
        { """{"model": "a", "messages": "hi"}""", 400, "messages", null },
        { """{"model": "a", "messages": [{"role": "user"}, {"role": "user", "content": "x"}]}""", 400, "messages", null },
        { """{"model": "a", "messages": [{"role": "robot", "content": "x"}]}""", 400, "messages", null },
        { """{"model": "a", "messages": [{"role": "user", "content": 7}]}""", 400, "messages[0].content", null },
    };

    /// <summary>Each bad request gets a 4xx with OpenAI's error object naming the field; the server keeps serving.</summary>
    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task BadRequestsGetOpenAiErrors(string body, int status, string? param, string? code)
    {
        await using var s = await TestServer.Start(fx, resident: 1);
        string path = body.Contains("\"messages\"") ? "/v1/chat/completions" : "/v1/completions";
        var (got, json) = await s.Post(path, body);
        Assert.Equal(status, (int)got);
        var error = json["error"]!;
        Assert.False(string.IsNullOrWhiteSpace((string?)error["message"]));
        Assert.Equal(status == 404 || status == 400 ? "invalid_request_error" : "server_error", (string?)error["type"]);
        Assert.Equal(param, (string?)error["param"]);
        if (code != null) Assert.Equal(code, (string?)error["code"]);
        var (ok, answer) = await s.Post("/v1/completions", Greedy("base", "The cat", 3));
        Assert.Equal(HttpStatusCode.OK, ok);
        Assert.NotNull((string?)answer["choices"]![0]!["text"]);
    }

    [Fact]
    public async Task PromptAtTheContextLimitIsRefused()
    {
        await using var s = await TestServer.Start(fx, resident: 1, options: new SchedulerOptions(MaxBatch: 2, Context: 32));
        var (status, body) = await s.Post("/v1/completions", new { model = "a", prompt = Enumerable.Repeat(5, 32).ToArray() });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("context_length_exceeded", (string?)body["error"]!["code"]);
        (status, body) = await s.Post("/v1/completions", new { model = "a", prompt = Enumerable.Repeat(5, 20).ToArray(), max_tokens = 13 });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("33 tokens", (string?)body["error"]!["message"]);
        // Chat without max_tokens gets what is left of the context.
        (status, body) = await s.Post("/v1/chat/completions", new { model = "a", messages = new[] { new { role = "user", content = "Hi" } }, temperature = 0, ignore_eos = true });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(32, (int)body["usage"]!["total_tokens"]!);
        Assert.Equal("length", (string?)body["choices"]![0]!["finish_reason"]);
    }

    /// <summary>Past --max-queue waiting requests the server answers 429 at once (here the scheduler does not run, so
    /// the queue cannot drain); stopping the server ends the queued request with 503.</summary>
    [Fact]
    public async Task FullQueueAnswers429()
    {
        var s = await TestServer.Start(fx, resident: 1, options: new SchedulerOptions(MaxBatch: 1, Context: 64, MaxQueue: 1), startScheduler: false);
        var queued = s.Post("/v1/completions", Greedy("a", "The cat", 4));
        for (int i = 0; i < 2000 && s.Scheduler.Queued == 0; i++) await Task.Delay(10, Ct);
        Assert.Equal(1, s.Scheduler.Queued);
        var (status, body) = await s.Post("/v1/completions", Greedy("b", "The cat", 4));
        Assert.Equal((HttpStatusCode)429, status);
        Assert.Equal("rate_limit_exceeded", (string?)body["error"]!["code"]);
        Assert.Contains("bitdelta_requests_rejected_total 1", await s.Http.GetStringAsync("/metrics", Ct));
        var stopping = s.Server.DisposeAsync().AsTask();
        var (last, _) = await queued;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, last);
        await stopping;
        await s.DisposeAsync();
    }

    /// <summary>A client that goes away frees its batch slot at once: with one slot, the next request runs.</summary>
    [Fact]
    public async Task DisconnectedClientFreesItsSlot()
    {
        const int max = 8;
        var want = fx.Alone("b", Prompts[1], max);
        await using var s = await TestServer.Start(fx, options: new SchedulerOptions(MaxBatch: 1, Context: 256));
        using (var cts = new CancellationTokenSource())
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent(JsonSerializer.Serialize(new { model = "a", prompt = "The cat", max_tokens = 240, ignore_eos = true, stream = true }), Encoding.UTF8, "application/json"),
            };
            using var r = await s.Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            using var stream = await r.Content.ReadAsStreamAsync(cts.Token);
            var buf = new byte[64];
            Assert.True(await stream.ReadAsync(buf, cts.Token) > 0);   // it is running
            cts.Cancel();
        }
        for (int i = 0; i < 3000 && s.Scheduler.Metrics.FinishedCount(FinishReason.Cancelled) == 0; i++) await Task.Delay(10, Ct);
        Assert.Equal(1, s.Scheduler.Metrics.FinishedCount(FinishReason.Cancelled));
        var (status, body) = await s.Post("/v1/completions", Greedy("b", Prompts[1], max));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(want.Text, (string?)body["choices"]![0]!["text"]);
        Assert.True(s.Scheduler.Metrics.GeneratedTokens < 240, "the cancelled request ran to its end");
    }

    /// <summary>One resident slot, two tenants: each request swaps its tenant in, evicting the idle one, and the text is
    /// what each tenant gives alone; requests of both at once take turns.</summary>
    [Fact]
    public async Task TenantsSwapInOnDemandLeastRecentlyUsedFirst()
    {
        const int max = 10;
        var wantA = fx.Alone("a", Prompts[2], max);
        var wantB = fx.Alone("b", Prompts[2], max);
        Assert.NotEqual(wantA.Text, wantB.Text);
        await using var s = await TestServer.Start(fx, resident: 1);
        Assert.False(s.Tenants.IsResident("a"));
        foreach (var (m, want) in new[] { ("a", wantA), ("b", wantB), ("a", wantA) })
        {
            var (_, body) = await s.Post("/v1/completions", Greedy(m, Prompts[2], max));
            Assert.Equal(want.Text, (string?)body["choices"]![0]!["text"]);
            Assert.True(s.Tenants.IsResident(m));
        }
        Assert.Equal(3, s.Tenants.SwapIns);
        Assert.Equal(2, s.Tenants.Evictions);
        var both = await Task.WhenAll(s.Post("/v1/completions", Greedy("b", Prompts[2], max)), s.Post("/v1/completions", Greedy("a", Prompts[2], max)),
                                      s.Post("/v1/completions", Greedy("base", Prompts[2], max)));
        Assert.Equal(wantB.Text, (string?)both[0].Body["choices"]![0]!["text"]);
        Assert.Equal(wantA.Text, (string?)both[1].Body["choices"]![0]!["text"]);
        string metrics = await s.Http.GetStringAsync("/metrics", Ct);
        Assert.Contains($"bitdelta_delta_swap_ins_total {s.Tenants.SwapIns}", metrics);
        Assert.Contains("bitdelta_tenant_memory_bytes{model=", metrics);
        Assert.Contains("bitdelta_gpu_memory_bytes{part=\"kv_cache\"}", metrics);
    }

    /// <summary>A budget too small for one more tenant's whole tensors: the request fails with a 500 naming the budget,
    /// and the base still serves.</summary>
    [Fact]
    public async Task TenantOverTheBudgetFailsClearly()
    {
        var probe = await TestServer.Start(fx, resident: 1);
        long poolOnly = probe.Engine.Pool.ByteLength;
        await probe.DisposeAsync();
        await using var s = await TestServer.Start(fx, resident: 1, poolBudget: poolOnly + 1);
        var (status, body) = await s.Post("/v1/completions", Greedy("a", "The cat", 3));
        Assert.Equal(HttpStatusCode.InternalServerError, status);
        Assert.Contains("budget", (string?)body["error"]!["message"]);
        (status, _) = await s.Post("/v1/completions", Greedy("base", "The cat", 3));
        Assert.Equal(HttpStatusCode.OK, status);
    }

    /// <summary>The load test against the server with one resident slot and three models: tenants must take turns
    /// (swapping), and every request still completes with all its tokens, none starved.</summary>
    [Fact]
    public async Task LoadOverSwappingTenantsCompletesEveryRequest()
    {
        await using var s = await TestServer.Start(fx, resident: 1);
        var rep = await LoadTest.RunAsync(s.Server.Address, ["a", "b", "base"], clients: 6, TimeSpan.FromSeconds(2), maxTokens: 12,
                                          _ => JsonValue.Create("The cat"), Ct);
        Assert.Null(rep.FirstError);
        Assert.Equal(0, rep.Errors);
        Assert.True(rep.Requests >= 6, $"{rep.Requests} requests");
        Assert.Equal(12L * rep.Requests, rep.Tokens);
        Assert.Equal(rep.Requests, rep.Latency.Length);
        Assert.Equal(rep.Requests, rep.TimeToFirstToken.Length);
        Assert.True(s.Tenants.SwapIns >= 2);
        Assert.True(LoadReport.Percentile(rep.TimeToFirstToken, 0.99) <= LoadReport.Percentile(rep.Latency, 0.99));
    }

    /// <summary>A client that stops reading its stream does not stall the batch: another request runs to the end meanwhile,
    /// with the text its tenant gives alone.</summary>
    [Fact]
    public async Task SlowReaderDoesNotStallOthers()
    {
        const int max = 10;
        var want = fx.Alone("b", Prompts[2], max);
        await using var s = await TestServer.Start(fx, options: new SchedulerOptions(MaxBatch: 2, Context: 256));
        using var cts = new CancellationTokenSource();
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(new { model = "a", prompt = "The cat", max_tokens = 240, ignore_eos = true, stream = true }), Encoding.UTF8, "application/json"),
        };
        using var slow = await s.Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, cts.Token);   // and never read
        for (int i = 0; i < 3000 && s.Scheduler.Running == 0; i++) await Task.Delay(10, Ct);
        var (status, body) = await s.Post("/v1/completions", Greedy("b", Prompts[2], max));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(want.Text, (string?)body["choices"]![0]!["text"]);
        Assert.Equal(0, s.Scheduler.Metrics.FinishedCount(FinishReason.Cancelled));
        cts.Cancel();
    }
}

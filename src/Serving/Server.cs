using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using BitDeltaNative.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace BitDeltaNative.Serving;

/// <summary>
/// <c>bitdelta serve</c>'s HTTP side on ASP.NET Core (Kestrel): OpenAI's API over the <see cref="Scheduler"/>, where
/// <c>model</c> names a tenant or <c>base</c>. <c>GET /v1/models</c>, <c>POST /v1/completions</c>,
/// <c>POST /v1/chat/completions</c> (with <c>stream: true</c> as server-sent events: one <c>data: {chunk}</c> per
/// piece of text, then <c>data: [DONE]</c>), <c>GET /health</c>, <c>GET /metrics</c> (Prometheus), and a chat page at
/// <c>/</c>. Every error is OpenAI's JSON error object with a 4xx (or 500 when a step failed); the server keeps serving.
/// </summary>
public sealed class Server : IAsyncDisposable
{
    readonly WebApplication app;
    readonly Scheduler scheduler;
    readonly TenantCache tenants;
    readonly Tokenizer tokenizer;
    readonly ChatTemplate chatTemplate;
    readonly long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    // Text as it is (quotes, '+', non-ASCII), not \uXXXX: the output is JSON for clients, never embedded in HTML.
    static readonly JsonSerializerOptions Plain = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Where it listens, e.g. http://127.0.0.1:8000/ (the real port when 0 was asked).</summary>
    public Uri Address { get; private set; } = null!;

    Server(WebApplication app, Scheduler scheduler, TenantCache tenants, Tokenizer tokenizer, ChatTemplate chatTemplate)
    {
        this.chatTemplate = chatTemplate;
        this.app = app;
        this.scheduler = scheduler;
        this.tenants = tenants;
        this.tokenizer = tokenizer;
    }

    /// <summary>Starts listening on <paramref name="host"/>:<paramref name="port"/> (0: any free port). The scheduler
    /// is started here too unless <paramref name="startScheduler"/> is false (tests that need a queue that does not move).</summary>
    /// <param name="chatTemplate">how chat messages become tokens (default: <see cref="ChatTemplate.Default"/>)</param>
    public static async Task<Server> StartAsync(Scheduler scheduler, TenantCache tenants, Tokenizer tokenizer, string host, int port, bool startScheduler = true,
                                                ChatTemplate? chatTemplate = null)
    {
        if (!IPAddress.TryParse(host == "localhost" ? "127.0.0.1" : host, out var ip)) throw new BitDeltaException($"--host: '{host}' is not an IP address");
        if (port is < 0 or > 65535) throw new BitDeltaException($"--port must be in 0 … 65535, got {port}");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(ip, port));
        var app = builder.Build();
        var server = new Server(app, scheduler, tenants, tokenizer, chatTemplate ?? ChatTemplate.Default(tokenizer));
        server.Map();
        if (startScheduler) scheduler.Start();
        try { await app.StartAsync(); }
        catch (IOException e) { throw new BitDeltaException($"cannot listen on {host}:{port}: {e.Message}", e); }
        var addr = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(addr.EndsWith('/') ? addr : addr + "/");
        return server;
    }

    void Map()
    {
        app.MapGet("/", async ctx =>
        {
            ctx.Response.ContentType = "text/html; charset=utf-8";
            using var s = typeof(Server).Assembly.GetManifestResourceStream("BitDeltaNative.Serving.index.html")!;
            await s.CopyToAsync(ctx.Response.Body);
        });
        app.MapGet("/health", ctx => Json(ctx, 200, new JsonObject
        {
            ["status"] = "ok",
            ["models"] = tenants.Names.Count + 1,
            ["running"] = scheduler.Running,
            ["queued"] = scheduler.Queued,
        }));
        app.MapGet("/metrics", async ctx =>
        {
            ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await ctx.Response.WriteAsync(scheduler.Metrics.Render());
        });
        app.MapGet("/v1/models", ctx =>
        {
            var data = new JsonArray();
            foreach (var name in tenants.Names.OrderBy(n => n, StringComparer.Ordinal).Prepend(Engine.BaseName))
                data.Add(new JsonObject
                {
                    ["id"] = name,
                    ["object"] = "model",
                    ["created"] = created,
                    ["owned_by"] = "bitdelta",
                    ["root"] = name,
                    ["parent"] = name == Engine.BaseName ? null : Engine.BaseName,
                    ["resident"] = name == Engine.BaseName || tenants.IsResident(name),
                });
            return Json(ctx, 200, new JsonObject { ["object"] = "list", ["data"] = data });
        });
        app.MapPost("/v1/completions", ctx => Complete(ctx, chat: false));
        app.MapPost("/v1/chat/completions", ctx => Complete(ctx, chat: true));
        app.MapFallback(ctx => Error(ctx, new ApiError(404, $"no route {ctx.Request.Method} {ctx.Request.Path}", code: "not_found")));
    }

    async Task Complete(HttpContext ctx, bool chat)
    {
        ApiRequest req;
        Completion completion;
        try
        {
            JsonElement body;
            try
            {
                using var doc = await JsonDocument.ParseAsync(ctx.Request.Body, default, ctx.RequestAborted);
                body = doc.RootElement.Clone();
            }
            catch (JsonException e) { throw new ApiError(400, $"could not parse the JSON body: {e.Message}"); }
            req = ApiRequestParser.Parse(body, chat, tokenizer, chatTemplate, tenants.Knows, scheduler.Options.Context);
            try { completion = scheduler.Submit(req.Completion, ctx.RequestAborted); }
            catch (QueueFullException e) { throw new ApiError(429, e.Message, code: "rate_limit_exceeded", type: "rate_limit_error"); }
        }
        catch (ApiError e)
        {
            await Error(ctx, e);
            return;
        }
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
        string model = req.Completion.Model;
        if (req.Stream) await Stream(ctx, completion, req, chat, id, model);
        else await Whole(ctx, completion, chat, id, model);
    }

    async Task Whole(HttpContext ctx, Completion completion, bool chat, string id, string model)
    {
        var text = new StringBuilder();
        CompletionEvent last = default;
        await foreach (var e in completion.Events.ReadAllAsync())
        {
            text.Append(e.Text);
            last = e;
        }
        if (last.Finish is null or FinishReason.Cancelled)
        {
            // Either the client went away (nobody to answer) or the server is stopping.
            if (!ctx.RequestAborted.IsCancellationRequested) await Error(ctx, new ApiError(503, "the server is shutting down", type: "server_error"));
            return;
        }
        if (last.Finish == FinishReason.Error)
        {
            await Error(ctx, new ApiError(500, last.Error ?? "generation failed", type: "server_error"));
            return;
        }
        var choice = new JsonObject { ["index"] = 0 };
        if (chat) choice["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text.ToString() };
        else
        {
            choice["text"] = text.ToString();
            choice["logprobs"] = null;
        }
        choice["finish_reason"] = Reason(last.Finish.Value);
        await Json(ctx, 200, new JsonObject
        {
            ["id"] = id,
            ["object"] = chat ? "chat.completion" : "text_completion",
            ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            ["model"] = model,
            ["choices"] = new JsonArray(choice),
            ["usage"] = Usage(last),
        });
    }

    async Task Stream(HttpContext ctx, Completion completion, ApiRequest req, bool chat, string id, string model)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream; charset=utf-8";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        long createdAt = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        JsonObject Chunk(JsonObject choice) => new()
        {
            ["id"] = id,
            ["object"] = chat ? "chat.completion.chunk" : "text_completion",
            ["created"] = createdAt,
            ["model"] = model,
            ["choices"] = new JsonArray(choice),
        };
        JsonObject Choice(string? text, FinishReason? finish, bool first = false)
        {
            var c = new JsonObject { ["index"] = 0 };
            if (chat)
            {
                var delta = new JsonObject();
                if (first) delta["role"] = "assistant";
                if (text != null) delta["content"] = text;
                c["delta"] = delta;
            }
            else
            {
                c["text"] = text ?? "";
                c["logprobs"] = null;
            }
            c["finish_reason"] = finish is { } f ? Reason(f) : null;
            return c;
        }
        try
        {
            if (chat) await Event(ctx, Chunk(Choice(null, null, first: true)));
            await foreach (var e in completion.Events.ReadAllAsync(ctx.RequestAborted))
            {
                if (e.Finish == FinishReason.Cancelled) return;
                if (e.Finish == FinishReason.Error)
                {
                    await Event(ctx, ErrorBody(new ApiError(500, e.Error ?? "generation failed", type: "server_error")));
                    break;
                }
                if (e.Text.Length > 0) await Event(ctx, Chunk(Choice(e.Text, null)));
                if (e.Finish is { } f)
                {
                    await Event(ctx, Chunk(Choice(chat ? null : "", f)));
                    if (req.IncludeUsage)
                    {
                        var u = Chunk(Choice(null, null));
                        u["choices"] = new JsonArray();
                        u["usage"] = Usage(e);
                        await Event(ctx, u);
                    }
                }
            }
            await ctx.Response.WriteAsync("data: [DONE]\n\n");
            await ctx.Response.Body.FlushAsync();
        }
        catch (OperationCanceledException) { }   // the client went away; the scheduler drops the sequence
        catch (IOException) { }
    }

    static async Task Event(HttpContext ctx, JsonObject o)
    {
        await ctx.Response.WriteAsync("data: " + o.ToJsonString(Plain) + "\n\n", ctx.RequestAborted);
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
    }

    static JsonObject Usage(CompletionEvent e) => new()
    {
        ["prompt_tokens"] = e.PromptTokens,
        ["completion_tokens"] = e.CompletionTokens,
        ["total_tokens"] = e.PromptTokens + e.CompletionTokens,
    };

    static string Reason(FinishReason r) => r switch
    {
        FinishReason.Stop => "stop",
        FinishReason.Length => "length",
        _ => r.ToString().ToLowerInvariant(),
    };

    static JsonObject ErrorBody(ApiError e) => new()
    {
        ["error"] = new JsonObject { ["message"] = e.Message, ["type"] = e.Type, ["param"] = e.Param, ["code"] = e.Code },
    };

    static Task Error(HttpContext ctx, ApiError e) => Json(ctx, e.Status, ErrorBody(e));

    static async Task Json(HttpContext ctx, int status, JsonObject o)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(o.ToJsonString(Plain));
    }

    int disposed;

    /// <summary>Stops the scheduler first, so open requests end (as cancelled) and Kestrel's graceful stop is quick.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 1) return;
        scheduler.Dispose();
        await app.StopAsync();
        await app.DisposeAsync();
    }
}

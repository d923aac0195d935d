using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace BitDeltaNative.Serving;

/// <summary>What a load run saw: completed requests, errors, generated tokens, and per request the time to first text
/// and the whole latency, in seconds.</summary>
public sealed record LoadReport(int Clients, int Models, double Seconds, int Requests, int Errors, long Tokens, double[] TimeToFirstToken, double[] Latency, string? FirstError)
{
    public double RequestsPerSecond => Requests / Seconds;
    public double TokensPerSecond => Tokens / Seconds;
    public static double Percentile(double[] xs, double p) => xs.Length == 0 ? double.NaN : xs.Order().ElementAt((int)Math.Min(xs.Length - 1, Math.Ceiling(p * xs.Length) - 1));
}

/// <summary>
/// A bounded load test against a server of ours: <c>clients</c> concurrent clients, each sending streamed completions
/// one after another (tenants in turn over <c>models</c>) until <c>duration</c> is over; requests started by then are
/// finished. Every request asks for exactly <c>maxTokens</c> tokens (ignore_eos), so runs compare. Only the given
/// address is contacted; callers pass a loopback one.
/// </summary>
public static class LoadTest
{
    public static async Task<LoadReport> RunAsync(Uri server, IReadOnlyList<string> models, int clients, TimeSpan duration, int maxTokens,
                                                  Func<int, JsonNode> prompt, CancellationToken cancel = default)
    {
        if (!server.IsLoopback) throw new BitDeltaException($"load test: {server} is not a loopback address");
        if (clients < 1 || models.Count == 0 || maxTokens < 1) throw new BitDeltaException("load test: needs at least one client, one model and one token");
        using var http = new HttpClient { BaseAddress = server, Timeout = duration + TimeSpan.FromMinutes(5) };
        var ttft = new List<double>();
        var latency = new List<double>();
        int requests = 0, errors = 0, counter = 0;
        long tokens = 0;
        string? firstError = null;
        var clock = Stopwatch.StartNew();

        async Task Client(int c)
        {
            for (int i = 0; clock.Elapsed < duration && !cancel.IsCancellationRequested; i++)
            {
                int n = Interlocked.Increment(ref counter) - 1;
                var body = new JsonObject
                {
                    ["model"] = models[n % models.Count],
                    ["prompt"] = prompt(n),
                    ["max_tokens"] = maxTokens,
                    ["temperature"] = 0,
                    ["ignore_eos"] = true,
                    ["stream"] = true,
                    ["stream_options"] = new JsonObject { ["include_usage"] = true },
                };
                long start = Stopwatch.GetTimestamp();
                double? first = null;
                long got = -1;
                string? error = null;
                try
                {
                    using var req = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
                    req.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
                    using var r = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, cancel);
                    if (!r.IsSuccessStatusCode) error = $"HTTP {(int)r.StatusCode}: {await r.Content.ReadAsStringAsync(cancel)}";
                    else
                    {
                        using var reader = new StreamReader(await r.Content.ReadAsStreamAsync(cancel));
                        while (await reader.ReadLineAsync(cancel) is { } line)
                        {
                            if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]") continue;
                            var o = JsonNode.Parse(line.AsSpan(6).ToString())!;
                            if (o["error"] is { } e) { error = (string?)e["message"] ?? "error event"; break; }
                            if (o["usage"] is { } u) got = (long)u["completion_tokens"]!;
                            else if (first == null && ((string?)o["choices"]?[0]?["text"])?.Length > 0) first = Stopwatch.GetElapsedTime(start).TotalSeconds;
                        }
                        if (error == null && got != maxTokens) error = $"expected {maxTokens} tokens, the usage says {got}";
                    }
                }
                catch (Exception e) when (e is HttpRequestException or IOException or JsonException or TaskCanceledException) { error = e.Message; }
                lock (latency)
                {
                    if (error != null)
                    {
                        errors++;
                        firstError ??= error;
                        continue;
                    }
                    requests++;
                    tokens += got;
                    latency.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
                    if (first != null) ttft.Add(first.Value);
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(() => Client(c), cancel)));
        return new LoadReport(clients, models.Count, clock.Elapsed.TotalSeconds, requests, errors, tokens, [.. ttft], [.. latency], firstError);
    }
}

using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using BitDeltaNative.Models;
using BitDeltaNative.Serving;
using Spectre.Console;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>
    /// The server under load (serve issue): an in-process <c>bitdelta serve</c> on a loopback port, then K concurrent
    /// clients over T tenants for a fixed time, each sending streamed completions of a fixed length one after another.
    /// Reports requests/s, tokens/s, time to first token and latency (p50, p99) and errors, which must be zero.
    /// </summary>
    static Command BenchServeCommand()
    {
        var baseDir = new Option<string?>("--base") { Description = "base model folder (with --delta tenants), or use --random-7b" };
        var delta = new Option<string[]>("--delta") { Description = "a tenant as NAME=FILE; give it once per tenant", AllowMultipleArgumentsPerToken = false };
        var random7b = new Option<bool>("--random-7b") { Description = "a Llama-2-7B-shaped f16 model of random weights with --tenants random tenants (no files)" };
        var tokenizerPath = new Option<string?>("--tokenizer") { Description = "with --random-7b: a SentencePiece tokenizer.model for the server's text (e.g. Llama-2's)" };
        var tenants = new Option<int>("--tenants") { Description = "with --random-7b: how many random tenants", DefaultValueFactory = _ => 16 };
        var clients = new Option<string>("--clients") { Description = "concurrent clients, comma-separated: one run each", DefaultValueFactory = _ => "1,8,32" };
        var duration = new Option<double>("--duration") { Description = "seconds each run sends new requests", DefaultValueFactory = _ => 20 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens generated per request (EOS ignored)", DefaultValueFactory = _ => 64 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "prompt length in tokens (random ids)", DefaultValueFactory = _ => 32 };
        var maxBatch = new Option<int>("--max-batch") { Description = "the server's batch (KV-cache slots)", DefaultValueFactory = _ => 32 };
        var resident = new Option<int?>("--resident") { Description = "tenants held on the device at once (default: all); fewer makes the server swap deltas in from disk" };
        var withBase = new Option<bool>("--with-base") { Description = "send requests to the base model too, as one more tenant" };
        var cmd = new Command("serve", "Load test of bitdelta serve on loopback: K clients over T tenants for a fixed time; requests/s, tokens/s, time to first token, errors.");
        foreach (var o in new Option[] { baseDir, delta, random7b, tokenizerPath, tenants, clients, duration, maxTokens, promptTokens, maxBatch, resident, withBase, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            var ks = IntList("--clients", r.GetValue(clients), 1, 4096, "positive integers");
            int nTok = r.GetValue(maxTokens), nPrompt = r.GetValue(promptTokens), batch = r.GetValue(maxBatch);
            double seconds = r.GetValue(duration);
            if (ks.Length == 0) throw new BitDeltaException("--clients: give at least one count");
            if (nTok < 1 || nPrompt < 1 || !(seconds > 0)) throw new BitDeltaException("--max-tokens, --prompt-tokens and --duration must be positive");
            string? dir = r.GetValue(baseDir);
            if ((dir == null) == !r.GetValue(random7b)) throw new BitDeltaException("give --base DIR or --random-7b (one of them)");
            var deltas = ParseDeltas(r.GetValue(delta) ?? []);
            if (deltas.Any(d => d.Name == null)) throw new BitDeltaException("--delta: name each tenant as NAME=FILE");
            if (dir == null && deltas.Count > 0) throw new BitDeltaException("--delta needs --base (with --random-7b the tenants are random)");

            var sw = Stopwatch.StartNew();
            using var model = dir != null
                ? LlamaModel.Load(dir, dev, progress: ProgressLine("loading weights"))
                : new LlamaModel(LlamaWeights.Random(Llama2_7B, DType.F16, dev, seed: 7), dev, 4096);
            Tokenizer tokenizer;
            if (dir != null) tokenizer = Tokenizer.Load(dir, model.Config);
            else
            {
                string tp = r.GetValue(tokenizerPath) ?? throw new BitDeltaException("--random-7b needs --tokenizer FILE (a SentencePiece tokenizer.model with 32000 pieces, e.g. Llama-2's)");
                if (!File.Exists(tp)) throw new BitDeltaException($"--tokenizer {tp}: file not found");
                tokenizer = Tokenizer.FromSentencePiece(File.ReadAllBytes(tp), tp, model.Config.BosTokenId, model.Config.EosTokenIds);
                if (tokenizer.VocabSize != model.Config.VocabSize)
                    throw new BitDeltaException($"--tokenizer {tp}: {tokenizer.VocabSize} pieces, the model has {model.Config.VocabSize}");
            }
            int nTenants = dir != null ? deltas.Count : r.GetValue(tenants);
            if (nTenants < 1 && !r.GetValue(withBase)) throw new BitDeltaException("no tenants: give --delta NAME=FILE, --tenants N, or --with-base");
            int ctx = Math.Min(model.MaxPositions, nPrompt + nTok + 1);
            var kvType = SchedulerOptions.KvTypeFor(model);
            if (r.GetValue(resident) is < 1) throw new BitDeltaException($"--resident must be at least 1, got {r.GetValue(resident)}");
            using var engine = new Engine(model, Math.Max(1, Math.Min(nTenants, r.GetValue(resident) ?? nTenants)), dir);
            var cache = new TenantCache(engine, deltas.Select(d => (d.Name!, d.Path)));
            if (dir == null)
                for (int t = 0; t < nTenants; t++) cache.AddRandom($"t{t}", (ulong)t + 1);
            var scheduler = new Scheduler(engine, cache, tokenizer, new SchedulerOptions(batch, ctx, MaxQueue: 1 << 16, KvDType: kvType));
            var server = Server.StartAsync(scheduler, cache, tokenizer, "127.0.0.1", 0, chatTemplate: dir != null ? ChatTemplate.Load(dir, tokenizer) : null).GetAwaiter().GetResult();
            var models = cache.Names.Order(StringComparer.Ordinal).Concat(r.GetValue(withBase) ? [Engine.BaseName] : []).ToList();
            Console.WriteLine($"bench serve on {dev}, {DateTime.UtcNow:yyyy-MM-dd}: {(dir ?? "random Llama-2-7B shapes, f16")} ({model.Weights.ByteLength / 1e9:F2} GB) " +
                              $"ready in {sw.Elapsed.TotalSeconds:F1} s; {models.Count} model(s) over {server.Address}, batch {batch}, KV cache {scheduler.KvCacheBytes / 1e9:F2} GB ({kvType})");
            Console.WriteLine($"each request: {nPrompt} prompt tokens (random ids), {nTok} tokens generated (EOS ignored), streamed; {seconds:F0} s of new requests per run");
            var rng = new Random(5);
            JsonNode Prompt(int i)
            {
                var ids = new JsonArray();
                if (tokenizer.BosId is { } bos) ids.Add(bos);
                lock (rng)
                    while (ids.Count < nPrompt) ids.Add(rng.Next(3, tokenizer.VocabSize));
                return ids;
            }
            try
            {
                // A short warm-up compiles the kernels and loads every tenant.
                LoadTest.RunAsync(server.Address, models, Math.Min(models.Count, batch), TimeSpan.FromSeconds(0.1), 2, Prompt).GetAwaiter().GetResult();
                int errors = 0;
                var table = new Table().AddColumns("clients", "tenants", "requests", "errors", "req/s", "tokens/s", "TTFT p50 ms", "TTFT p99 ms", "latency p50 s", "latency p99 s", "mean batch");
                foreach (int k in ks)
                {
                    long steps0 = scheduler.Metrics.Steps, tokens0 = scheduler.Metrics.GeneratedTokens;
                    var rep = LoadTest.RunAsync(server.Address, models, k, TimeSpan.FromSeconds(seconds), nTok, Prompt).GetAwaiter().GetResult();
                    long steps = scheduler.Metrics.Steps - steps0, toks = scheduler.Metrics.GeneratedTokens - tokens0;
                    table.AddRow($"{k}", $"{models.Count}", $"{rep.Requests}", $"{rep.Errors}", $"{rep.RequestsPerSecond:F2}", $"{rep.TokensPerSecond:F1}",
                                 $"{1e3 * LoadReport.Percentile(rep.TimeToFirstToken, 0.5):F0}", $"{1e3 * LoadReport.Percentile(rep.TimeToFirstToken, 0.99):F0}",
                                 $"{LoadReport.Percentile(rep.Latency, 0.5):F2}", $"{LoadReport.Percentile(rep.Latency, 0.99):F2}", steps > 0 ? $"{(double)toks / steps:F1}" : "-");
                    errors += rep.Errors;
                    if (rep.FirstError != null) Console.Error.WriteLine($"clients {k}: first error: {rep.FirstError}");
                }
                WriteTable(table);
                Console.WriteLine($"{engine.Pool.Capacity} resident at once; swap-ins {cache.SwapIns} (mean {(cache.SwapIns > 0 ? 1e3 * cache.SwapInSeconds / cache.SwapIns : 0):F0} ms, " +
                                  $"last {cache.LastSwapInMs:F0} ms), evictions {cache.Evictions}; mean batch = tokens generated per scheduler step");
                if (errors > 0) throw new BitDeltaException($"{errors} request(s) failed under load");
            }
            finally { server.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            return 0;
        }));
        return cmd;
    }
}

using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Models;
using BitDeltaNative.Serving;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command GenerateCommand()
    {
        var model = new Option<string>("--model", "--base") { Description = "Hugging Face model folder (config.json, *.safetensors, tokenizer.model); with deltas, their base", Required = true };
        var prompt = new Option<string[]>("--prompt") { Description = "prompt text, or NAME:TEXT for tenant NAME (a --delta name, or 'base'); give it several times to generate for several prompts in one batch", Required = true, AllowMultipleArgumentsPerToken = false };
        var maxTokens = new Option<int>("--max-tokens") { Description = "new tokens per prompt at most (generation also stops at EOS)", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "keep the k most likely tokens (0 = off)", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "keep the smallest set of tokens whose probability reaches p (1 = off)", DefaultValueFactory = _ => 1f };
        var delta = new Option<string[]>("--delta")
        {
            Description = "a delta file (bitdelta compress) made from --model. FILE alone: every prompt runs that compressed fine-tune. " +
                          "NAME=FILE, several times: each is a tenant, prompts pick one with NAME:TEXT (others run the base), all decoded in one batch",
            AllowMultipleArgumentsPerToken = false,
        };
        var seed = new Option<ulong>("--seed") { Description = "seed for sampling: the same seed gives the same text", DefaultValueFactory = _ => 0UL };
        var exact = new Option<bool>("--exact")
        {
            Description = "keep the KV cache and the prefill's linears in f32, as the golden fixtures were made; by default, on a CUDA GPU " +
                          "with an f16/bf16 model, the cache is in the weights' half type (as serve keeps it) and the prompt's linears take half x (as " +
                          "transformers runs a half model): the tensor-core prefill, half the cache bytes",
        };
        var cmd = new Command("generate", "Generate text from a Llama/Mistral checkpoint, or from many compressed fine-tunes of it in one batch. Streams tokens as they come (one prompt) and reports tokens/s at the end.");
        foreach (var o in new Option[] { model, delta, prompt, maxTokens, temperature, topK, topP, seed, exact, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            var options = new SamplingOptions(r.GetValue(temperature), r.GetValue(topK), r.GetValue(topP), r.GetValue(seed));
            options.Validate();
            string dir = r.GetValue(model)!;
            var deltas = ParseDeltas(r.GetValue(delta) ?? []);
            var texts = r.GetValue(prompt)!;
            // Named deltas: prompts say their tenant; checked before anything large is loaded.
            var tenants = deltas.Count > 0 && deltas[0].Name != null ? texts.Select(t => SplitTenant(t, deltas)).ToArray() : null;
            var sw = Stopwatch.StartNew();
            var config = LlamaConfig.Load(dir);
            // A single delta is checked against the base before anything large is loaded.
            using var d = deltas.Count == 1 && deltas[0].Name == null ? DeltaWeights.Load(deltas[0].Path, dir, config, dev) : null;
            var tokenizer = Tokenizer.Load(dir, config);
            using var m = LlamaModel.Load(dir, dev, progress: ProgressLine("loading weights"));
            Console.Error.WriteLine($"loaded {dir} on {dev} in {sw.Elapsed.TotalSeconds:F1} s ({m.Weights.ByteLength / 1e9:F2} GB)");
            if (d != null) Console.Error.WriteLine($"with delta {d.Path} ({d.ByteLength / 1e6:F2} MB on {dev})");
            var kvType = HalfOnGpu(m, r.GetValue(exact));
            using var engine = tenants != null ? new Engine(m, deltas.Count, dir) : null;
            if (engine != null)
                foreach (var (name, path) in deltas)
                {
                    var t0 = Stopwatch.StartNew();
                    engine.AddDelta(name!, path);
                    Console.Error.WriteLine($"tenant {name}: {path} loaded in {t0.Elapsed.TotalMilliseconds:F0} ms");
                }

            var promptTexts = tenants?.Select(t => t.Text).ToArray() ?? texts;
            var prompts = promptTexts.Select(t => tokenizer.Encode(t)).ToList();
            var decoders = texts.Select(_ => tokenizer.NewStreamDecoder()).ToArray();
            bool stream = texts.Length == 1;
            if (stream) Console.Write(promptTexts[0]);
            void OnToken(int i, int tok)
            {
                if (stream) Console.Write(decoders[i].Add(tok));
            }
            int[][] outputs;
            GenerationStats s;
            if (engine != null)
            {
                outputs = engine.Generate(tenants!.Select((t, i) => ((string?)t.Tenant, prompts[i])).ToList(), r.GetValue(maxTokens), options, tokenizer.EosIds, OnToken, kvType);
                s = engine.LastStats!;
            }
            else
            {
                var gen = new Generator(m, d) { KvDType = kvType };
                outputs = gen.Generate(prompts, r.GetValue(maxTokens), options, tokenizer.EosIds, OnToken);
                s = gen.LastStats!;
            }
            if (stream) Console.WriteLine(decoders[0].Finish());
            else
                for (int i = 0; i < texts.Length; i++)
                    Console.WriteLine($"[{i}]{(tenants != null ? $" ({tenants[i].Tenant})" : "")} {promptTexts[i]}{tokenizer.DecodeContinuation(outputs[i])}");
            Console.Error.WriteLine($"{s.GeneratedTokens} tokens for {texts.Length} prompt(s): prefill {s.PromptTokens} tokens in {s.Prefill.TotalMilliseconds:F0} ms, " +
                                    $"decode {s.DecodeTokensPerSecond:F1} tokens/s ({s.MsPerDecodeStep:F1} ms/step)");
            if (engine != null) Console.Error.WriteLine($"memory: {engine.Memory(engine.LastKvCacheBytes)}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// The precision generate runs at: on a CUDA GPU with f16/bf16 weights and without <paramref name="exact"/>, the KV
    /// cache in the weights' half type (as <c>serve</c> keeps it) and the prefill's linears on x rounded to it
    /// (<see cref="LlamaModel.HalfPrefill"/>, as transformers runs a half model): a 2401-token prompt's prefill on a
    /// Llama-2-7B-shaped checkpoint 0.3 s against 1.9 s in f32 (bench/RESULTS.md); the
    /// returned cache type, null for f32. Says which on stderr. Elsewhere (the CPU paths, the tests' goldens) f32.
    /// </summary>
    internal static DType? HalfOnGpu(LlamaModel m, bool exact)
    {
        var kv = SchedulerOptions.KvTypeFor(m);
        if (exact || m.Device.Kind != DeviceKind.Cuda || kv == DType.F32) return null;
        m.HalfPrefill = true;
        Console.Error.WriteLine($"precision: KV cache {kv.ToString().ToLowerInvariant()}, prefill linears on {kv.ToString().ToLowerInvariant()} x (--exact: f32)");
        return kv;
    }

    /// <summary>--delta values: all FILE alone (at most one) or all NAME=FILE with distinct, valid names; files must exist.</summary>
    internal static List<(string? Name, string Path)> ParseDeltas(string[] values)
    {
        var list = new List<(string?, string)>();
        foreach (var v in values)
        {
            int eq = v.IndexOf('=');
            // Text before the first '=' is the tenant's name, so a path that holds '=' needs a name in front of it.
            string? name = eq > 0 ? v[..eq] : null;
            string path = eq > 0 ? v[(eq + 1)..] : v;
            if (name != null) Engine.CheckName(name);
            if (!File.Exists(path)) throw new BitDeltaException($"--delta {v}: file '{path}' not found");
            list.Add((name, path));
        }
        if (list.Count > 1 && list.Any(x => x.Item1 == null))
            throw new BitDeltaException("--delta: with several deltas, name each one as NAME=FILE");
        var dup = list.Where(x => x.Item1 != null).GroupBy(x => x.Item1).FirstOrDefault(g => g.Count() > 1);
        if (dup != null) throw new BitDeltaException($"--delta: tenant '{dup.Key}' is given twice");
        return list;
    }

    /// <summary>NAME:TEXT where NAME is a tenant or 'base' gives (NAME, TEXT); any other text runs the base.</summary>
    internal static (string Tenant, string Text) SplitTenant(string prompt, List<(string? Name, string Path)> deltas)
    {
        int colon = prompt.IndexOf(':');
        if (colon > 0)
        {
            string name = prompt[..colon];
            if (name == Engine.BaseName || deltas.Any(d => d.Name == name)) return (name, prompt[(colon + 1)..]);
        }
        return (Engine.BaseName, prompt);
    }

    /// <summary>A one-line progress bar on stderr (on a terminal): what, a bar, done/total and elapsed seconds. It is
    /// reported synchronously so it never prints after the command's result.</summary>
    internal static IProgress<(int Done, int Total)> ProgressLine(string what) => new Line(what);

    sealed class Line(string what) : IProgress<(int Done, int Total)>
    {
        readonly Stopwatch clock = Stopwatch.StartNew();

        public TimeSpan Elapsed => clock.Elapsed;

        public void Report((int Done, int Total) p) => Report(p, "");

        /// <summary>The bar with <paramref name="note"/> (e.g. the last loss) before the elapsed time.</summary>
        public void Report((int Done, int Total) p, string note)
        {
            if (Console.IsErrorRedirected) return;
            const int Width = 30;
            int filled = p.Total > 0 ? (int)((long)Width * p.Done / p.Total) : Width;
            Console.Error.Write($"\r{what} [{new string('#', filled)}{new string('.', Width - filled)}] {p.Done}/{p.Total} {note}{clock.Elapsed.TotalSeconds:F1} s"
                                + (p.Done == p.Total ? "\n" : ""));
        }
    }
}

using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Models;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command GenerateCommand()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (config.json, *.safetensors, tokenizer.model)", Required = true };
        var prompt = new Option<string[]>("--prompt") { Description = "prompt text; give it several times to generate for several prompts in one batch", Required = true, AllowMultipleArgumentsPerToken = false };
        var maxTokens = new Option<int>("--max-tokens") { Description = "new tokens per prompt at most (generation also stops at EOS)", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "keep the k most likely tokens (0 = off)", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "keep the smallest set of tokens whose probability reaches p (1 = off)", DefaultValueFactory = _ => 1f };
        var delta = new Option<string?>("--delta") { Description = "a delta file (bitdelta compress) made from --model: generate from that compressed fine-tune over --model as its base" };
        var seed = new Option<ulong>("--seed") { Description = "seed for sampling: the same seed gives the same text", DefaultValueFactory = _ => 0UL };
        var cmd = new Command("generate", "Generate text from a Llama/Mistral checkpoint. Streams tokens as they come (one prompt) and reports tokens/s at the end.");
        foreach (var o in new Option[] { model, delta, prompt, maxTokens, temperature, topK, topP, seed, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            var options = new SamplingOptions(r.GetValue(temperature), r.GetValue(topK), r.GetValue(topP), r.GetValue(seed));
            options.Validate();
            string dir = r.GetValue(model)!;
            var sw = Stopwatch.StartNew();
            var config = LlamaConfig.Load(dir);
            // The delta is checked against the base before anything large is loaded.
            using var d = r.GetValue(delta) is { } deltaPath ? DeltaWeights.Load(deltaPath, dir, config, dev) : null;
            var tokenizer = Tokenizer.Load(dir, config);
            using var m = LlamaModel.Load(dir, dev, progress: ProgressLine("loading weights"));
            Console.Error.WriteLine($"loaded {dir} on {dev} in {sw.Elapsed.TotalSeconds:F1} s ({m.Weights.ByteLength / 1e9:F2} GB)");

            if (d != null) Console.Error.WriteLine($"with delta {d.Path} ({d.ByteLength / 1e6:F2} MB on {dev})");
            var texts = r.GetValue(prompt)!;
            var prompts = texts.Select(t => tokenizer.Encode(t)).ToList();
            var gen = new Generator(m, d);
            var decoders = texts.Select(_ => tokenizer.NewStreamDecoder()).ToArray();
            bool stream = texts.Length == 1;
            if (stream) Console.Write(texts[0]);
            var outputs = gen.Generate(prompts, r.GetValue(maxTokens), options, tokenizer.EosIds, (i, tok) =>
            {
                if (stream) Console.Write(decoders[i].Add(tok));
            });
            if (stream) Console.WriteLine(decoders[0].Finish());
            else
                for (int i = 0; i < texts.Length; i++)
                    Console.WriteLine($"[{i}] {texts[i]}{tokenizer.DecodeContinuation(outputs[i])}");
            var s = gen.LastStats!;
            Console.Error.WriteLine($"{s.GeneratedTokens} tokens for {texts.Length} prompt(s): prefill {s.PromptTokens} tokens in {s.Prefill.TotalMilliseconds:F0} ms, " +
                                    $"decode {s.DecodeTokensPerSecond:F1} tokens/s ({s.MsPerDecodeStep:F1} ms/step)");
            return 0;
        }));
        return cmd;
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

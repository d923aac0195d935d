using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Models;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>Load time, prefill tokens/s and decode tokens/s at several batch sizes for one checkpoint, with
    /// peak device memory: the numbers bench/RESULTS.md sets beside transformers' (tools/oracle/bench_hf_7b.py).</summary>
    static Command BenchModelCommand()
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder" };
        var random7b = new Option<bool>("--random-7b") { Description = "a Llama-2-7B-shaped f16 model of random weights made on the device (no files)" };
        var halfPrefill = new Option<bool>("--half-prefill") { Description = "also time the prefill with its linears on x rounded to the weights' half type (LlamaModel.HalfPrefill)" };
        var prefill = new Option<int>("--prefill") { Description = "prompt tokens for the prefill measurement", DefaultValueFactory = _ => 512 };
        var batches = new Option<string>("--batches") { Description = "decode batch sizes, comma-separated", DefaultValueFactory = _ => "1,16" };
        var newTokens = new Option<int>("--new-tokens") { Description = "decode steps per measurement", DefaultValueFactory = _ => 64 };
        var cmd = new Command("model", "Time loading, prefill and batched decode of a checkpoint (random prompts, greedy).");
        cmd.Options.Add(model);
        cmd.Options.Add(prefill);
        cmd.Options.Add(random7b);
        cmd.Options.Add(halfPrefill);
        cmd.Options.Add(batches);
        cmd.Options.Add(newTokens);
        cmd.Options.Add(DeviceOption);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            int n = r.GetValue(prefill), steps = r.GetValue(newTokens);
            var bs = ParseInts(r.GetValue(batches)!, "--batches");
            var sw = Stopwatch.StartNew();
            var dir = r.GetValue(model);
            if ((dir == null) == !r.GetValue(random7b)) throw new BitDeltaException("give --model DIR or --random-7b (one of them)");
            int maxPositions = Math.Max(n, 16 + steps) + 1;
            using var m = dir != null ? LlamaModel.Load(dir, dev, maxPositions)
                : new LlamaModel(LlamaWeights.Random(Llama2_7B, DType.F16, dev, seed: 7), dev, maxPositions);
            dev.Synchronize();
            Console.WriteLine($"device {dev}; load {sw.Elapsed.TotalSeconds:F2} s ({m.Weights.ByteLength / 1e9:F2} GB of weights, {dev.CompiledKernels} kernels compiled so far)");
            var rng = new Random(0);
            int[] Prompt(int len) => Enumerable.Range(0, len).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();

            // Prefill: one forward over n tokens, logits for the last one; warm-up first (kernel compilation).
            var ids = Prompt(n);
            var pos = Enumerable.Range(0, n).ToArray();
            using (var cache = m.NewCache(1, n))
            using (var logits = Tensor.Empty([1, m.Config.VocabSize], DType.F32, dev))
            {
                // median seconds of 3 prefills after a warm-up
                double Prefill()
                {
                    var times = new List<double>();
                    for (int i = 0; i < 4; i++)
                    {
                        dev.Synchronize();
                        sw.Restart();
                        m.Forward(ids, new int[n], pos, [n - 1], cache, logits);
                        dev.Synchronize();
                        if (i > 0) times.Add(sw.Elapsed.TotalSeconds);
                    }
                    return Median(times);
                }
                double t = Prefill();
                Console.WriteLine($"prefill {n} tokens: {n / t:F0} tokens/s ({t * 1000:F1} ms)");
                if (r.GetValue(halfPrefill))
                {
                    // the same prefill with x rounded to the weights' half type in the linears (GemmHalf)
                    m.HalfPrefill = true;
                    t = Prefill();
                    m.HalfPrefill = false;
                    Console.WriteLine($"prefill {n} tokens, half x in the linears: {n / t:F0} tokens/s ({t * 1000:F1} ms)");
                }
            }
            var gen = new Generator(m);
            foreach (int b in bs)
            {
                var prompts = Enumerable.Range(0, b).Select(_ => Prompt(16)).ToList();
                gen.Generate(prompts, 4, new SamplingOptions(), []);   // warm-up
                dev.Pool?.Trim();
                var stats = Enumerable.Range(0, 3).Select(_ => { gen.Generate(prompts, steps, new SamplingOptions(), []); return gen.LastStats!; }).ToList();
                var best = stats.OrderBy(s => s.MsPerDecodeStep).ElementAt(1);
                Console.WriteLine($"decode batch {b}: {best.DecodeTokensPerSecond:F1} tokens/s, {best.MsPerDecodeStep:F2} ms/step, {best.LaunchesPerDecodeStep:F0} kernel launches a step (median of 3 runs of {steps} tokens)");
            }
            if (dev.Pool != null)
                Console.WriteLine($"peak device memory through the pool: {dev.Pool.PeakBytesInUse / (double)(1L << 30):F2} GiB");
            return 0;
        }));
        return cmd;
    }

    internal static int[] ParseInts(string s, string option)
    {
        try { return s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray(); }
        catch (FormatException) { throw new BitDeltaException($"{option}: expected comma-separated integers, got '{s}'"); }
    }

    static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        return s[s.Count / 2];
    }
}

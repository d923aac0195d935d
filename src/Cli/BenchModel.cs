using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Kernels;
using BitDeltaNative.Models;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>Load time, prefill tokens/s and decode tokens/s at several batch sizes for one checkpoint, with
    /// peak device memory: the numbers bench/RESULTS.md sets beside transformers' (tools/oracle/bench_hf_7b.py).</summary>
    /// <summary>bench model's decode prompts, in tokens, unless --decode-context says otherwise.</summary>
    const int DefaultDecodeContext = 16;

    static Command BenchModelCommand()
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder" };
        var random7b = new Option<bool>("--random-7b") { Description = "a Llama-2-7B-shaped f16 model of random weights made on the device (no files)" };
        var randomMistral = new Option<bool>("--random-mistral-7b") { Description = "a Mistral-7B-v0.1-shaped f16 model of random weights made on the device (no files): 8 key-value heads, intermediate 14336, sliding window 4096" };
        var window = new Option<int?>("--window") { Description = "sliding attention window for this run, in tokens, in place of the model's own (random or loaded)" };
        var profilePrefill = new Option<bool>("--profile-prefill") { Description = "after the prefill timing, where one prefill's time goes, kernel by kernel (CUDA; with --half-prefill, that prefill too)" };
        var bf16 = new Option<bool>("--bf16") { Description = "with --random-7b or --random-mistral-7b: bf16 weights instead of f16" };
        var scalarAttention = new Option<bool>("--scalar-attention") { Description = "also time the prefill with the scalar attention kernel instead of the tensor-core one (Attention.UsePrefillMma off), and the tensor-core one with a single stage of K and V tiles, to compare" };
        var halfPrefill = new Option<bool>("--half-prefill") { Description = "also time the prefill with its linears on x rounded to the weights' half type (LlamaModel.HalfPrefill)" };
        var prefill = new Option<int>("--prefill") { Description = "prompt tokens for the prefill measurement", DefaultValueFactory = _ => 512 };
        var batches = new Option<string>("--batches") { Description = "decode batch sizes, comma-separated", DefaultValueFactory = _ => "1,16" };
        var newTokens = new Option<int>("--new-tokens") { Description = "decode steps per measurement", DefaultValueFactory = _ => 64 };
        var decodeContext = new Option<int>("--decode-context") { Description = "prompt tokens before the decode measurements: the context decode attention reads (the KV cache in the weights' half type, as serve keeps it)", DefaultValueFactory = _ => DefaultDecodeContext };
        var splitKeys = new Option<int?>("--split-keys") { Description = "keys per range of the decode attention kernel (flash-decoding's split), a multiple of 32; default: the engine's" };
        var randomDelta = new Option<bool>("--random-delta") { Description = "then decode again with a BitDelta delta of random signs on every linear: its decode rows as a one-slot pool (one launch a linear) and with the base and signs products apart, to compare" };
        var noGemvOne = new Option<bool>("--no-gemv-one") { Description = "decode linears of 1 and 2 rows without GemvOne (the streamed or base forms), to compare" };
        var tenantApart = new Option<bool>("--tenant-linears-apart") { Description = "a tenant's one-row step with each linear its own launch and SwiGLU another, not q/k/v in one and gate/up with SwiGLU in one (LlamaModel.TenantLinearsInOne off), to compare" };
        var noPdl = new Option<bool>("--no-pdl") { Description = "launch the one-row linears (GemvOne, GemvNorm) the plain way, not as dependent launches that overlap the kernel ahead (DependentLaunch.cs), to compare" };
        var noGemvNorm = new Option<bool>("--no-gemv-norm") { Description = "one-row steps without GemvNorm (norms, q/k/v, gate/up and SwiGLU as separate launches), to compare" };
        var gemvNormTenants = new Option<bool>("--gemv-norm-tenants") { Description = "one-row steps of a tenant through GemvNorm too (off by default: it did not win there), to compare" };
        var noStream = new Option<bool>("--no-stream") { Description = "decode linears of 1–3 rows without the tenant linear's streamed form (1 row: the GEMV; 2–3: the base form's three launches), to compare" };
        var cmd = new Command("model", "Time loading, prefill and batched decode of a checkpoint (random prompts, greedy).");
        cmd.Options.Add(model);
        cmd.Options.Add(prefill);
        cmd.Options.Add(random7b);
        cmd.Options.Add(randomMistral);
        cmd.Options.Add(window);
        cmd.Options.Add(profilePrefill);
        cmd.Options.Add(halfPrefill);
        cmd.Options.Add(scalarAttention);
        cmd.Options.Add(bf16);
        cmd.Options.Add(batches);
        cmd.Options.Add(newTokens);
        cmd.Options.Add(decodeContext);
        cmd.Options.Add(splitKeys);
        cmd.Options.Add(noStream);
        cmd.Options.Add(noGemvOne);
        cmd.Options.Add(noGemvNorm);
        cmd.Options.Add(noPdl);
        cmd.Options.Add(tenantApart);
        cmd.Options.Add(gemvNormTenants);
        cmd.Options.Add(randomDelta);
        cmd.Options.Add(DeviceOption);
        cmd.SetAction(r => Guard(() =>
        {
            var dir = r.GetValue(model);
            bool llama = r.GetValue(random7b), mistral = r.GetValue(randomMistral), profile = r.GetValue(profilePrefill);
            if ((dir != null ? 1 : 0) + (llama ? 1 : 0) + (mistral ? 1 : 0) != 1)
                throw new BitDeltaException("give --model DIR or --random-7b or --random-mistral-7b (exactly one of them)");
            int? win = r.GetValue(window);
            if (r.GetValue(bf16) && dir != null) throw new BitDeltaException("--bf16: only for --random-7b or --random-mistral-7b (a checkpoint has its own dtype)");
            if (win is < 1) throw new BitDeltaException($"--window: expected a sliding window of at least 1 token, got {win}");
            var deviceName = r.GetValue(DeviceOption)!;
            // Before the first device: ILGPU takes it with the context. Only where CUDA may be picked (the profile refuses others).
            if (profile && deviceName.ToLowerInvariant() is "cuda" or "gpu" or "auto") Device.Profiling = true;
            var dev = Device.Parse(deviceName);
            if (profile && dev.Kind != DeviceKind.Cuda) throw new BitDeltaException("--profile-prefill: needs --device cuda (it times with CUDA events)");
            RecordTo(r, dev);
            int n = r.GetValue(prefill), steps = r.GetValue(newTokens), context = r.GetValue(decodeContext);
            if (context < 1) throw new BitDeltaException($"--decode-context: expected at least 1 prompt token, got {context}");
            if (r.GetValue(splitKeys) is int sk)
            {
                if (sk < Attention.DecodeKeysPerStep || sk % Attention.DecodeKeysPerStep != 0)
                    throw new BitDeltaException($"--split-keys: expected a positive multiple of {Attention.DecodeKeysPerStep}, got {sk}");
                Attention.DecodeSplitKeys = sk;
            }
            if (r.GetValue(noStream)) TenantLinear.UseStream = false;
            if (r.GetValue(noGemvOne)) GemvOne.Use = false;
            if (r.GetValue(noGemvNorm)) GemvNorm.Use = false;
            if (r.GetValue(noPdl)) DependentLaunch.Use = false;
            if (r.GetValue(tenantApart)) LlamaModel.TenantLinearsInOne = false;
            if (r.GetValue(gemvNormTenants)) LlamaModel.FuseTenantRows = true;
            var bs = ParseInts(r.GetValue(batches)!, "--batches");
            var sw = Stopwatch.StartNew();
            int maxPositions = Math.Max(n, context + Math.Max(steps, 4)) + 1;   // the decode warm-up takes 4 tokens
            LlamaModel Make()
            {
                if (dir != null)
                {
                    if (win == null) return LlamaModel.Load(dir, dev, maxPositions);
                    // The model takes its config from its weights: load them under the config with the window replaced.
                    var loaded = LlamaConfig.Load(dir) with { SlidingWindow = win };
                    using var ck = Checkpoint.Open(dir);
                    return new LlamaModel(LlamaWeights.Load(ck, loaded, dev), dev, maxPositions);
                }
                var config = mistral ? Mistral7B : Llama2_7B;
                if (win != null) config = config with { SlidingWindow = win };
                return new LlamaModel(LlamaWeights.Random(config, r.GetValue(bf16) ? DType.BF16 : DType.F16, dev, seed: 7), dev, maxPositions);
            }
            using var m = Make();
            dev.Synchronize();
            Console.WriteLine($"device {dev}; load {sw.Elapsed.TotalSeconds:F2} s ({m.Weights.ByteLength / 1e9:F2} GB of weights, {dev.CompiledKernels} kernels compiled so far)");
            if (mistral || win != null)
                Console.WriteLine($"sliding window: {(m.Config.SlidingWindow is int w ? $"{w} tokens" : "none")}{(win != null ? " (--window)" : "")}");
            string label = (dir != null ? Path.GetFileName(Path.TrimEndingDirectorySeparator(dir)) : mistral ? "Mistral-7B random" : "Llama-2-7B random")
                + (r.GetValue(bf16) ? ", bf16" : "") + (win != null ? $", window {win}" : "");
            var rng = new Random(0);
            int[] Prompt(int len) => Enumerable.Range(0, len).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();

            // Prefill: one forward over n tokens, logits for the last one; warm-up first (kernel compilation).
            var ids = Prompt(n);
            var pos = Enumerable.Range(0, n).ToArray();
            // the KV cache as `serve` keeps it: the weights' half type on the GPU (f32 on the managed CPU)
            var kvType = BitDeltaNative.Serving.SchedulerOptions.KvTypeFor(m);
            Console.WriteLine($"KV cache {kvType}");
            using (var cache = m.NewCache(1, n, kvType))
            using (var logits = Tensor.Empty([1, m.Config.VocabSize], DType.F32, dev))
            {
                void Forward() => m.Forward(ids, new int[n], pos, [n - 1], cache, logits);
                // median seconds of 3 prefills after a warm-up
                double Prefill()
                {
                    var times = new List<double>();
                    for (int i = 0; i < 4; i++)
                    {
                        dev.Synchronize();
                        sw.Restart();
                        Forward();
                        dev.Synchronize();
                        if (i > 0) times.Add(sw.Elapsed.TotalSeconds);
                    }
                    return Median(times);
                }
                double t = Prefill();
                Console.WriteLine($"prefill {n} tokens: {n / t:F0} tokens/s ({t * 1000:F1} ms)");
                Record("bench model", $"{label}: prefill {n} tokens", t * 1000, "ms");
                if (r.GetValue(scalarAttention))
                {
                    Attention.UsePrefillMma = false;
                    try { t = Prefill(); }
                    finally { Attention.UsePrefillMma = true; }
                    Console.WriteLine($"prefill {n} tokens, scalar attention: {n / t:F0} tokens/s ({t * 1000:F1} ms)");
                    Record("bench model", $"{label}: prefill {n} tokens, scalar attention", t * 1000, "ms");
                    Attention.PrefillMmaStages = 1;
                    try { t = Prefill(); }
                    finally { Attention.PrefillMmaStages = 2; }
                    Console.WriteLine($"prefill {n} tokens, tensor-core attention with one stage of K and V: {n / t:F0} tokens/s ({t * 1000:F1} ms)");
                }
                if (r.GetValue(halfPrefill))
                {
                    // the same prefill with x rounded to the weights' half type in the linears (GemmHalf)
                    m.HalfPrefill = true;
                    t = Prefill();
                    m.HalfPrefill = false;
                    Console.WriteLine($"prefill {n} tokens, half x in the linears: {n / t:F0} tokens/s ({t * 1000:F1} ms)");
                    Record("bench model", $"{label}: prefill {n} tokens, half x", t * 1000, "ms");
                }
                if (profile)
                {
                    ProfilePrefill(m, dev, Forward, $"prefill {n} tokens", label);
                    if (r.GetValue(halfPrefill))
                    {
                        m.HalfPrefill = true;
                        ProfilePrefill(m, dev, Forward, $"prefill {n} tokens, half x", label);
                        m.HalfPrefill = false;
                    }
                }
            }
            // decode as serve runs it: the KV cache in the weights' half type on a GPU (what long contexts read)
            var kvDecode = BitDeltaNative.Serving.SchedulerOptions.KvTypeFor(m);
            void Decode(Generator gen, string what)
            {
                foreach (int b in bs)
                {
                    var prompts = Enumerable.Range(0, b).Select(_ => Prompt(context)).ToList();
                    gen.Generate(prompts, 4, new SamplingOptions(), []);   // warm-up
                    dev.Pool?.Trim();
                    var stats = Enumerable.Range(0, 3).Select(_ => { gen.Generate(prompts, steps, new SamplingOptions(), []); return gen.LastStats!; }).ToList();
                    var best = stats.OrderBy(s => s.MsPerDecodeStep).ElementAt(1);
                    Console.WriteLine($"decode batch {b}{what}{(context != DefaultDecodeContext ? $" at {context}+ positions" : "")}: {best.DecodeTokensPerSecond:F1} tokens/s, {best.MsPerDecodeStep:F2} ms/step, {best.LaunchesPerDecodeStep:F0} kernel launches a step (median of 3 runs of {steps} tokens)");
                }
            }
            Decode(new Generator(m) { KvDType = kvDecode }, "");
            if (r.GetValue(randomDelta))
            {
                using var delta = DeltaWeights.Random(m.Config, dev, 1);
                var was = LlamaModel.DeltaDecodeAsPool;
                try
                {
                    foreach (bool pool in new[] { true, false })
                    {
                        LlamaModel.DeltaDecodeAsPool = pool;
                        Decode(new Generator(m, delta) { KvDType = kvDecode }, pool ? ", random delta (rows ≤ 2 as a one-slot pool)" : ", random delta (base and signs products apart)");
                    }
                }
                finally { LlamaModel.DeltaDecodeAsPool = was; }
            }
            if (dev.Pool != null)
                Console.WriteLine($"peak device memory through the pool: {dev.Pool.PeakBytesInUse / (double)(1L << 30):F2} GiB");
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// Where one prefill's time goes (<c>bench model --profile-prefill</c>): the forward once more, already warm, with a
    /// timing event after every launch, summed per kernel as <see cref="StepProfile"/> does for a decode step. An event's
    /// interval is its kernel's run plus the gap before it.
    /// </summary>
    static void ProfilePrefill(LlamaModel m, Device dev, Action forward, string what, string label)
    {
        dev.Synchronize();
        dev.BeginTrace();
        forward();
        var trace = dev.EndTrace();
        double span = trace.Sum(t => t.Us) / 1e3;
        Console.WriteLine($"\n{what}{(m.Config.SlidingWindow is int w ? $", window {w}" : "")}: {trace.Count} launches, traced GPU span {span:F2} ms");
        PrintTrace(trace, span);
        Record("bench model", $"{label}, {what}: traced GPU span", span, "ms");
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

using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Kernels;
using BitDeltaNative.Models;
using BitDeltaNative.Serving;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>Llama-2-7B's config.json, for a model of its shapes with random weights.</summary>
    internal static LlamaConfig Llama2_7B => new()
    {
        Architecture = Architecture.Llama, HiddenSize = 4096, IntermediateSize = 11008, NumLayers = 32, NumHeads = 32, NumKvHeads = 32,
        HeadDim = 128, VocabSize = 32000, MaxPositionEmbeddings = 4096, RmsNormEps = 1e-5, RopeTheta = 10000, TieWordEmbeddings = false,
        DType = DType.F16, BosTokenId = 1, EosTokenIds = [2],
    };

    /// <summary>Mistral-7B-v0.1's config.json (grouped-query attention, a 4096-token sliding window), for a model of its
    /// shapes with random weights.</summary>
    internal static LlamaConfig Mistral7B => new()
    {
        Architecture = Architecture.Mistral, HiddenSize = 4096, IntermediateSize = 14336, NumLayers = 32, NumHeads = 32, NumKvHeads = 8,
        HeadDim = 128, VocabSize = 32000, MaxPositionEmbeddings = 32768, RmsNormEps = 1e-5, RopeTheta = 10000, SlidingWindow = 4096,
        TieWordEmbeddings = false, DType = DType.F16, BosTokenId = 1, EosTokenIds = [2],
    };

    /// <summary>
    /// The multi-tenant claim, measured (DESIGN.md; multi-tenant issue): B decode requests spread over T tenants in one
    /// batch, against the naive alternative of a full fp16 model per tenant (as many resident as fit, the rest swapped
    /// in from host memory), and the batched kernel alone at Llama-2-7B's shapes against the bytes it must read.
    /// </summary>
    static Command BenchMultitenantCommand()
    {
        var baseDir = new Option<string?>("--base") { Description = "base model folder; its tenants are random deltas of its shapes" };
        var random7b = new Option<bool>("--random-7b") { Description = "a Llama-2-7B-shaped f16 model of random weights made on the device (no files)" };
        var tenants = new Option<string>("--tenants") { Description = "tenant counts to measure, comma-separated", DefaultValueFactory = _ => "1,2,4,8,16,32" };
        var requests = new Option<int>("--requests") { Description = "decode requests in the batch (at least the tenant count: one per tenant then)", DefaultValueFactory = _ => 32 };
        var newTokens = new Option<int>("--new-tokens") { Description = "tokens decoded per request", DefaultValueFactory = _ => 32 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "prompt length (random ids)", DefaultValueFactory = _ => 16 };
        var kernel = new Option<bool>("--kernel-only") { Description = "only the kernel table (no model)" };
        var iters = new Option<int?>("--iters") { Description = "timed kernel samples per case (default 30 on CUDA, 2 elsewhere)" };
        var bitsRows = new Option<int?>("--bits-max-rows") { Description = "tenants with at most this many decode rows take the bit-serial form (default: the engine's)" };
        var bitsTenants = new Option<int?>("--bits-min-tenants") { Description = "… when at least this many tenants have so few (default: the engine's)" };
        var streamRows = new Option<int?>("--stream-max-rows") { Description = "take the streamed form for at most this many decode rows (default: the engine's)" };
        var noGemvOne = new Option<bool>("--no-gemv-one") { Description = "decode linears of 1 and 2 rows without GemvOne (to compare)" };
        var tenantApart = new Option<bool>("--tenant-linears-apart") { Description = "a tenant's one-row step with each linear its own launch and SwiGLU another, not q/k/v in one and gate/up with SwiGLU in one (LlamaModel.TenantLinearsInOne off), to compare" };
        var partsApart = new Option<bool>("--parts-apart") { Description = "multi-row batches with q, k, v and gate, up each its own launch, not q/k/v in one and gate/up in one (LlamaModel.TenantPartsInOne off), to compare" };
        var noPdl = new Option<bool>("--no-pdl") { Description = "launch the one-row linears (GemvOne, GemvNorm) the plain way, not as dependent launches that overlap the kernel ahead (DependentLaunch.cs), to compare" };
        var noGemvNorm = new Option<bool>("--no-gemv-norm") { Description = "one-row steps without GemvNorm (norms, q/k/v, gate/up and SwiGLU as separate launches), to compare" };
        var gemvNormTenants = new Option<bool>("--gemv-norm-tenants") { Description = "one-row steps of a tenant through GemvNorm too (off by default: it did not win there), to compare" };
        var noStream = new Option<bool>("--no-stream") { Description = "leave the streamed form out of the engine (to compare)" };
        var noBaseRing = new Option<bool>("--no-base-ring") { Description = "the base form's products for 9–32 rows with x loaded from global memory a step ahead, not through a shared-memory ring (to compare)" };
        var noFuseBits = new Option<bool>("--no-fuse-bits") { Description = "past the streamed form's rows, the bit-serial and base forms as seven launches, not three (to compare)" };
        var baseBlocks = new Option<int?>("--base-blocks") { Description = "blocks per multiprocessor the base form's split of K aims for (default: the engine's)" };
        var rate = new Option<bool>("--mma-rate") { Description = "also measure the tensor cores' rate on the f16 and b1 products alone" };
        var noOwn = new Option<bool>("--no-own-split") { Description = "one-group batches: x split by the streamed grid's preparation blocks, not by each base block (to compare)" };
        var ownRows = new Option<int?>("--own-split-max-rows") { Description = "one-group batches of at most this many rows have their base blocks split their own K range of x (default: the engine's), to compare" };
        var scFence = new Option<bool>("--sc-fence") { Description = "the streamed form's handoffs fenced with membar.gl, not fence.acq_rel.gpu (to compare)" };
        var baseRingForm = new Option<int?>("--base-ring-form") { Description = "the base products' ring for 9–32 rows: 1 (the group count a parameter) or 2 (one kernel a group count, its loop unrolled); default 1" };
        var bitsAhead = new Option<int?>("--bits-ahead") { Description = "past the streamed form's rows, how many chunks ahead the bit-serial products load their signs: 2 (default) or 3 (the planes one chunk ahead, 3 blocks a multiprocessor)" };
        var bitsSplit = new Option<int?>("--bits-split") { Description = "past the streamed form's rows, the bit-serial products' split of K: 1, 2 or 4 (default: by the batch's size)" };
        var streamBits = new Option<int?>("--stream-bits-split") { Description = "streamed form's tenant-row blocks: 1 (whole K a warp) or 4 (K in four pieces); default: the engine's" };
        var timeline = new Option<bool>("--timeline") { Description = "instead of the kernel table: when each block of one streamed call ran (per kind, per µs), at each tenant count of one row" };
        var profile = new Option<bool>("--step-profile") { Description = "instead of the decode table: where one decode step's time goes, kernel by kernel (CUDA), and the host's time to enqueue it" };
        var noKernels = new Option<bool>("--no-kernel-table") { Description = "leave the kernel table out" };
        var shapes = new Option<string?>("--shapes") { Description = "kernel table and timeline: shapes out×in, comma-separated (default: Llama-2-7B's 4096x4096,11008x4096,4096x11008; 12288x4096 is q/k/v in one, 22016x4096 gate/up)" };
        var split = new Option<string>("--mma-split") { Description = "kernel table: warps per 16 outputs (split-K) of the tensor-core form, comma-separated; 0 picks per shape", DefaultValueFactory = _ => "0" };
        var cmd = new Command("multitenant", "Decode throughput of many BitDelta tenants over one base in one batch, against full fp16 models per tenant, and the batched kernel's bandwidth at 7B shapes.");
        foreach (var o in new Option[] { baseDir, random7b, tenants, requests, newTokens, promptTokens, kernel, iters, split, bitsRows, bitsTenants, streamRows, noStream, noGemvOne, noGemvNorm, noPdl, tenantApart, partsApart, gemvNormTenants, noFuseBits, noBaseRing, baseRingForm, baseBlocks, rate, timeline, noOwn, ownRows, scFence, streamBits, bitsSplit, bitsAhead, profile, noKernels, shapes, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var name = r.GetValue(DeviceOption)!;
            // Before the first device: ILGPU takes it with the context. Only where CUDA may be picked (the profile refuses others).
            if (r.GetValue(profile) && name.ToLowerInvariant() is "cuda" or "gpu" or "auto") Device.Profiling = true;
            var dev = Device.Parse(name == "auto" && !Device.CudaAvailable ? "ilgpu-cpu" : name);
            var ts = IntList("--tenants", r.GetValue(tenants), 1, int.MaxValue, "positive integers");
            var splits = IntList("--mma-split", r.GetValue(split), 0, 8, "0 to 8");
            if (ts.Length == 0) throw new BitDeltaException("--tenants: give at least one count");
            int nReq = r.GetValue(requests), nNew = r.GetValue(newTokens), nPrompt = r.GetValue(promptTokens);
            if (nReq < 1 || nNew < 2 || nPrompt < 1) throw new BitDeltaException("--requests and --prompt-tokens must be at least 1, --new-tokens at least 2");
            bool cuda = dev.Kind == DeviceKind.Cuda;
            int samples = r.GetValue(iters) ?? (cuda ? 30 : 2);
            if (r.GetValue(profile) && !cuda) throw new BitDeltaException("--step-profile: needs --device cuda (it times with CUDA events)");
            var shapeList = ParseShapes(r.GetValue(shapes));
            RecordTo(r, dev);
            Console.WriteLine($"bench multitenant on {dev}, {DateTime.UtcNow:yyyy-MM-dd}");
            if (!cuda) Console.WriteLine("(not CUDA: these numbers only show that the benchmark runs)");
            if (r.GetValue(bitsRows) is int br) TenantLinear.BitsMaxRows = br;
            if (r.GetValue(bitsTenants) is int bt) TenantLinear.BitsMinTenants = bt;
            if (r.GetValue(streamRows) is int st) TenantLinear.StreamMaxRows = st;
            if (r.GetValue(noStream)) TenantLinear.UseStream = false;
            if (r.GetValue(noGemvOne)) GemvOne.Use = false;
            if (r.GetValue(noGemvNorm)) GemvNorm.Use = false;
            if (r.GetValue(noPdl)) DependentLaunch.Use = false;
            if (r.GetValue(tenantApart)) LlamaModel.TenantLinearsInOne = false;
            if (r.GetValue(partsApart)) LlamaModel.TenantPartsInOne = false;
            if (r.GetValue(gemvNormTenants)) LlamaModel.FuseTenantRows = true;
            if (r.GetValue(noFuseBits)) TenantLinear.FuseBits = false;
            if (r.GetValue(noBaseRing)) TenantLinear.BaseRing = false;
            if (r.GetValue(baseRingForm) is int brf)
            {
                if (brf is not (1 or 2)) throw new BitDeltaException($"--base-ring-form: 1 or 2, got {brf}");
                TenantLinear.BaseRingForm = brf;
            }
            if (r.GetValue(noOwn)) TenantLinear.StreamOwnSplitVecs = 0;
            if (r.GetValue(ownRows) is int orr) TenantLinear.StreamOwnSplitMaxRows = orr;
            if (r.GetValue(scFence)) TenantLinear.StreamLightFence = false;
            if (r.GetValue(streamBits) is int sbs)
            {
                if (sbs != 1 && sbs != 4) throw new BitDeltaException("--stream-bits-split: 1 or 4");
                TenantLinear.StreamBitsSplit = sbs;
            }
            if (r.GetValue(bitsAhead) is int ba)
            {
                if (ba is not (2 or 3)) throw new BitDeltaException($"--bits-ahead: 2 or 3, got {ba}");
                TenantLinear.BitsSignsAhead = ba;
            }
            if (r.GetValue(bitsSplit) is int bsp)
            {
                if (bsp is not (1 or 2 or 4)) throw new BitDeltaException($"--bits-split: 1, 2 or 4, got {bsp}");
                TenantLinear.BitsSplitOverride = bsp;
            }
            if (r.GetValue(baseBlocks) is int bb) TenantLinear.BaseBlocksPerSm = bb;
            Console.WriteLine($"bit-serial form: tenants of at most {TenantLinear.BitsMaxRows} decode rows, when at least {TenantLinear.BitsMinTenants} tenants are");
            Console.WriteLine(TenantLinear.UseStream ? $"streamed form: batches whose tenants all have so few rows, up to {TenantLinear.StreamMaxRows} decode rows" : "streamed form: off");
            Console.WriteLine($"past those rows: the base and bit-serial forms in {(TenantLinear.FuseBits ? $"three launches, the signs {TenantLinear.BitsSignsAhead} chunks ahead" : "seven launches")}");
            Console.WriteLine(TenantLinear.BaseRing ? $"base products of 9–32 rows: x through a shared-memory ring, form {TenantLinear.BaseRingForm}" : "base products of 9–32 rows: x from global memory");
            if (r.GetValue(rate) && dev.IsIlgpu) MmaRate(dev, cuda);
            if (r.GetValue(timeline))
            {
                if (!dev.IsIlgpu) throw new BitDeltaException("--timeline: the streamed form runs on ILGPU devices only (cuda, ilgpu-cpu)");
                Timeline(dev, ts, 9, shapeList);
                return 0;
            }

            if (dev.IsIlgpu && !r.GetValue(noKernels))
                foreach (int p in splits)
                {
                    TenantLinear.MmaSplit = p;
                    if (p > 0) Console.WriteLine($"\n--mma-split {p}");
                    KernelTable(dev, ts, nReq, samples, cuda, shapeList);
                }
            TenantLinear.MmaSplit = 0;
            if (r.GetValue(kernel)) return 0;

            string? dir = r.GetValue(baseDir);
            if ((dir == null) == !r.GetValue(random7b)) throw new BitDeltaException("give --base DIR or --random-7b (one of them)");
            var sw = Stopwatch.StartNew();
            using var model = dir != null
                ? LlamaModel.Load(dir, dev, progress: ProgressLine("loading weights"))
                : new LlamaModel(LlamaWeights.Random(Llama2_7B, DType.F16, dev, seed: 7), dev, 4096);
            dev.Synchronize();
            Console.WriteLine($"\nmodel: {(dir ?? "random Llama-2-7B shapes, f16")}, {model.Weights.ByteLength / 1e9:F2} GB of weights, ready in {sw.Elapsed.TotalSeconds:F1} s");
            if (r.GetValue(profile)) StepProfile(model, dev, ts, nPrompt);
            else ModelTable(model, dev, ts, nReq, nNew, nPrompt);
            return 0;
        }));
        return cmd;
    }

    /// <summary><paramref name="n"/> random W [out, in] (f16) and T tenants' signs, to take in turn: together over twice
    /// the L2, so that every call reads them from DRAM as a decode step does.</summary>
    static (Tensor[] Ws, Tensor[] Ss) RotatingWeights(Device dev, int outDim, int inDim, int T, int n)
    {
        var ws = new Tensor[n];
        var ss = new Tensor[n];
        for (int i = 0; i < n; i++)
        {
            ws[i] = Tensor.Empty([outDim, inDim], DType.F16, dev);
            RandomFill.Run(ws[i], (ulong)(i + 1), 0.05f);
            ss[i] = Tensor.Empty([T, outDim, inDim], DType.Sign1, dev);
            RandomFill.Run(ss[i], (ulong)(i + 100));
        }
        return (ws, ss);
    }

    /// <summary>A comma-separated option of integers in [min, max]; anything else is a one-line error naming the option.</summary>
    static int[] IntList(string option, string? text, int min, int max, string expected) =>
        (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.TryParse(s, out int v) && v >= min && v <= max ? v : throw new BitDeltaException($"{option}: expected {expected}, got '{s}'")).ToArray();

    /// <summary>Decode steps of the engine for each tenant count, the base alone, and the naive full-model alternative.</summary>
    static void ModelTable(LlamaModel model, Device dev, int[] ts, int nReq, int nNew, int nPrompt)
    {
        int maxT = ts.Max();
        using var engine = new Engine(model, maxT);
        var sw = Stopwatch.StartNew();
        for (int t = 0; t < maxT; t++) engine.AddRandom($"t{t}", (ulong)t + 1);
        dev.Synchronize();
        long perDelta = engine.Pool.BytesPerSlot;
        Console.WriteLine($"{maxT} random tenants made in {sw.Elapsed.TotalSeconds:F1} s: {perDelta / 1e9:F3} GB each (signs, scales, norm rows)");

        var rng = new Random(11);
        int vocab = model.Config.VocabSize;
        (double MsPerStep, double TokensPerSecond, long Kv, double Launches) Run(int requests, Func<int, string?> tenantOf)
        {
            var reqs = Enumerable.Range(0, requests).Select(i => (tenantOf(i), Enumerable.Range(0, nPrompt).Select(_ => rng.Next(3, vocab)).ToArray())).ToList();
            var options = new SamplingOptions();
            double best = double.MaxValue;
            GenerationStats? stats = null;
            for (int rep = 0; rep < 2; rep++)   // the first run compiles kernels and fills the pool
            {
                engine.Generate(reqs, nNew, options, []);
                if (engine.LastStats!.MsPerDecodeStep < best) { best = engine.LastStats.MsPerDecodeStep; stats = engine.LastStats; }
            }
            return (best, stats!.DecodeTokensPerSecond, engine.LastKvCacheBytes, stats.LaunchesPerDecodeStep);
        }

        // The naive alternative's pieces: a full fp16 model's decode step at the rows one tenant has (= the base alone
        // at that batch), and the time to bring a model's weights in from host memory.
        var baseStep = new Dictionary<int, double>();
        double BaseStep(int rows)
        {
            if (!baseStep.TryGetValue(rows, out double ms)) baseStep[rows] = ms = Run(rows, _ => null).MsPerStep;
            return ms;
        }
        double swapSeconds = SwapSeconds(model, dev);
        // The decode floor (speed issue): a step's weight bytes (base once, each tenant's signs once, the KV cache read) over
        // the copy kernel's rate at the 11008 shapes, where most of a step's bytes are.
        double copyGb = dev.Kind == DeviceKind.Cuda
            ? CopyRate(dev, 11008, 4096, 3, 30, 10, dev.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator ca ? ca.L2CacheSize : 50L << 20) : 0;
        long free = dev.Accelerator?.MemorySize ?? 0;
        Console.WriteLine($"host → device copy: {model.Weights.ByteLength / 1e9 / swapSeconds:F1} GB/s, so one full model swaps in in {swapSeconds:F2} s");

        Console.WriteLine($"\n{nPrompt}-token prompts, {nNew} new tokens each, greedy; ms/step is the better of 2 runs; request i goes to tenant i mod T");
        Console.WriteLine($"{"tenants",7} {"requests",8} {"ms/step",8} {"tokens/s",9} {"launches",8} {"base ms/step",12} {"/base",6} {"GB resident",11} {"naive fit",9} {"naive tok/s",11} {"speedup",8}");
        foreach (int T in ts)
            foreach (int B in new[] { T, Math.Max(nReq, T) }.Distinct())
            {
                var (ms, tps, kv, launches) = Run(B, i => $"t{i % T}");
                long resident = model.Weights.ByteLength + T * perDelta + kv;
                // Naive: one full fp16 model per tenant. As many as fit stay resident (beside one KV cache); the others are
                // swapped in once each and serve their requests to the end. Each model runs its own rows, one after another.
                int fit = free > 0 ? (int)Math.Max(1, (free - kv - (2L << 30)) / model.Weights.ByteLength) : 1;
                int rowsEach = (B + T - 1) / T;
                double naiveSeconds = T * nNew * BaseStep(rowsEach) / 1e3 + Math.Max(0, T - fit) * swapSeconds;
                double naiveTps = (double)B * nNew / naiveSeconds;
                double msBase = BaseStep(B);
                if (B == T)
                {
                    Record("multitenant decode", $"7B, {T} tenants × 1 request: ms/step", ms, "ms");
                    Record("multitenant decode", $"7B, {T} tenants × 1 request: launches/step", launches, "launches");
                    if (copyGb > 0)
                    {
                        double floorMs = (model.Weights.ByteLength + T * perDelta + kv) / copyGb / 1e6;
                        Record("multitenant decode", $"7B, {T} tenants × 1 request: of the bytes' floor", floorMs / ms, "fraction", "≥ 0.80 at 1, 8, 32 tenants",
                               T is 1 or 8 or 32 ? floorMs / ms >= 0.80 : null);
                    }
                    if (T == 16)
                    {
                        Record("multitenant decode", "7B, 16 tenants: base + deltas + KV cache", resident / 1e9, "GB", "< 30 GB", resident < 30e9);
                        Record("multitenant decode", "7B, 16 tenants: tokens/s over full fp16 models swapped", tps / naiveTps, "×", "≥ 5×", tps / naiveTps >= 5);
                    }
                }
                Console.WriteLine($"{T,7} {B,8} {ms,8:F2} {tps,9:F0} {launches,8:F0} {msBase,12:F2} {ms / msBase,6:F2} {resident / 1e9,11:F2} {fit,9} {naiveTps,11:F0} {tps / naiveTps,8:F1}");
            }
        Console.WriteLine("launches: kernel launches per decode step. base ms/step: the same batch on the base alone. GB resident: base + the tenants' deltas + KV cache. Naive: a full fp16 model per tenant " +
                          "(its step = the base's at its rows), swapping counted once per non-resident tenant (optimistic for it).");
        Console.WriteLine($"device pool: peak {dev.Pool?.PeakBytesInUse / 1e9:F2} GB in use");
    }

    /// <summary>Seconds to copy the model's weight bytes from (pageable) host memory to the device: a 1 GiB host
    /// buffer copied repeatedly, the median rate scaled to the model's size.</summary>
    static double SwapSeconds(LlamaModel model, Device dev)
    {
        if (!dev.IsIlgpu) return 0;
        int n = 1 << 30;
        var host = new byte[n];
        Random.Shared.NextBytes(host.AsSpan(0, 1 << 20));
        using var t = Tensor.Empty([n], DType.U8, dev);
        var rates = new List<double>();
        for (int i = 0; i < 4; i++)
        {
            var sw = Stopwatch.StartNew();
            t.View<byte>().CopyFromCPU(host);
            dev.Synchronize();
            if (i > 0) rates.Add(n / sw.Elapsed.TotalSeconds);
        }
        rates.Sort();
        return model.Weights.ByteLength / rates[rates.Count / 2];
    }

    /// <summary>
    /// The decode form of <see cref="TenantLinear.Run"/> alone at Llama-2-7B's linear shapes, for each tenant count T with one row per
    /// tenant and with the requests spread over T: µs per call and GB/s over the bytes it must read (W once, each
    /// tenant's signs once, x and y), against a 16-byte copy kernel in the same run. W and the sign pools rotate among
    /// buffers that together exceed the L2 twice over, so every call reads from DRAM.
    /// </summary>
    static void KernelTable(Device dev, int[] ts, int nReq, int samples, bool cuda, (int, int)[]? given)
    {
        long l2 = dev.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator ca ? ca.L2CacheSize : 50L << 20;
        var shapes = given ?? (cuda ? GemvShapes : [(256, 256), (688, 256)]);
        int warm = cuda ? 3 : 1, perSample = cuda ? 10 : 1;
        Console.WriteLine($"\nkernel: tenant linear (decode form), f16 base; median of {samples} samples of {perSample} launches");
        Console.WriteLine("  µs: as Run picks (a batch whose tenants all have few rows in one streamed kernel, TenantLinearStream.cs);");
        Console.WriteLine("  unstreamed: the same without the streamed form (bit-serial TenantLinearBits.cs after the base form TenantLinearBase.cs);");
        Console.WriteLine("  f16-mma: everything in the fused f16 tensor-core form (TenantLinearMma.cs); cuda-core: the fold-and-FMA form;");
        Console.WriteLine("  base-only: every row on the base, as Run picks");
        Console.WriteLine($"{"out×in",-12} {"tenants",7} {"rows",5} {"µs",8} {"GB/s",6} {"/copy",6} {"bit rows",8} {"f16-mma µs",10} {"cuda-core µs",12} {"base-only µs",12} {"unstreamed µs",13} {"base unstr.",11} {"copy GB/s",9} {"read GB/s",9}");
        foreach (var (outDim, inDim) in shapes)
        {
            long wBytes = DType.F16.ByteCount([outDim, inDim]);
            var rng = new Random(outDim + inDim);
            double copyGb = 0, readGb = 0;
            foreach (int T in ts.Distinct())
                foreach (int rows in new[] { T, Math.Max(T, nReq) }.Distinct())
                {
                    long sBytes = DType.Sign1.ByteCount([T, outDim, inDim]);
                    var (ws, ss) = RotatingWeights(dev, outDim, inDim, T, (int)Math.Clamp((2 * l2 + wBytes + sBytes - 1) / (wBytes + sBytes), 3, 64));
                    int nBuf = ws.Length;
                    using var scales = Tensor.From(Enumerable.Range(0, T).Select(i => 1e-3f * (i + 1)).ToArray(), [T], dev);
                    using var tenants = new TenantRows(Enumerable.Range(0, rows).Select(i => i % T).OrderBy(s => s).ToArray(), dev);
                    using var baseRows = TenantRows.All(rows, -1, dev);
                    using var x = Tensor.From(Check.Values(rng, (long)rows * inDim), [rows, inDim], dev);
                    using var y = Tensor.Empty([rows, outDim], DType.F32, dev);
                    int next = 0;
                    double Time(TenantRows who, bool mma, bool bits, bool stream = true)
                    {
                        TenantLinear.UseMma = mma;
                        TenantLinear.UseBits = bits;
                        TenantLinear.UseBase = bits;
                        bool streamWas = TenantLinear.UseStream;
                        TenantLinear.UseStream = stream && bits && streamWas;
                        try
                        {
                            return Median(dev, warm, samples, perSample, () =>
                            {
                                int b = next++ % nBuf;
                                TenantLinear.Run(x, ws[b], ss[b], scales, who, y);
                            });
                        }
                        finally
                        {
                            TenantLinear.UseMma = true;
                            TenantLinear.UseBits = true;
                            TenantLinear.UseBase = true;
                            TenantLinear.UseStream = streamWas;
                        }
                    }
                    double us = Time(tenants, true, true), usF16 = Time(tenants, true, false), usCore = Time(tenants, false, true);
                    double usBase = Time(baseRows, true, true), usOld = Time(tenants, true, true, stream: false);
                    double usBaseOld = Time(baseRows, true, true, stream: false);
                    if (copyGb == 0)
                    {
                        using var dst = Tensor.Empty([outDim, inDim], DType.F16, dev);
                        var copy = dev.Kernel<Action<Index1D, ArrayView<MatMul.Vec16>, ArrayView<MatMul.Vec16>>>(Copy16Kernel);
                        double usCopy = Median(dev, warm, samples, perSample, () => copy((int)(wBytes / 16), ws[next++ % nBuf].View<MatMul.Vec16>(), dst.View<MatMul.Vec16>()));
                        copyGb = 2.0 * wBytes / usCopy / 1e3;
                        var read = dev.Kernel<Action<Index1D, ArrayView<MatMul.Vec16>, ArrayView<MatMul.Vec16>>>(Read16Kernel);
                        double usRead = Median(dev, warm, samples, perSample, () => read((int)(wBytes / 64), ws[next++ % nBuf].View<MatMul.Vec16>(), dst.View<MatMul.Vec16>()));
                        readGb = wBytes / usRead / 1e3;
                        ReadPatterns(dev, outDim, inDim, warm, samples, perSample, () => ws[next++ % nBuf], dst);
                    }
                    if (T >= TenantLinear.BitsMinTenants && rows == T) ReadSignPatterns(dev, T, outDim, inDim, warm, samples, perSample, () => ss[next++ % nBuf]);
                    foreach (var t in ws) t.Dispose();
                    foreach (var t in ss) t.Dispose();
                    double bytes = wBytes + sBytes + 4.0 * rows * (inDim + outDim);
                    double gb = bytes / us / 1e3;
                    if (rows == T)
                        Record("multitenant kernel", $"{outDim}×{inDim}, {T} tenants × 1 row: of copy", gb / copyGb, "fraction", "≥ 0.70", gb / copyGb >= 0.70);
                    Console.WriteLine($"{$"{outDim}×{inDim}",-12} {T,7} {rows,5} {us,8:F1} {gb,6:F0} {gb / copyGb,6:F2} {tenants.BitsCount,8} {usF16,10:F1} {usCore,12:F1} {usBase,12:F1} {usOld,13:F1} {usBaseOld,11:F1} {copyGb,9:F0} {readGb,9:F0}");
                }
        }
        Console.WriteLine("GB/s: (W + every tenant's signs + x + y) / time. base-only: every row on the base (signs not read).");
        Console.WriteLine("copy: a 16-byte copy kernel over W's bytes (read + written); read: W's bytes read alone, 4 loads of 16 bytes in flight a thread.");
    }
}

public static partial class Cli
{
    /// <summary>The ceiling of a kernel that only reads: thread i reads 16-byte units i, i + n, i + 2n and i + 3n (n
    /// threads, four loads issued before any is used) and writes only if their XOR is a value random data never gives in
    /// practice, so nothing is optimised away. A GEMV's floor is its bytes over this, not over the copy's rate.</summary>
    static void Read16Kernel(Index1D i, ArrayView<MatMul.Vec16> src, ArrayView<MatMul.Vec16> sink)
    {
        var s = src.AsAligned(16);
        long n = s.Length / 4;
        var a = s[i];
        var b = s[i + n];
        var c = s[i + 2 * n];
        var d = s[i + 3 * n];
        uint x = a.X ^ a.Y ^ a.Z ^ a.W ^ b.X ^ b.Y ^ b.Z ^ b.W ^ c.X ^ c.Y ^ c.Z ^ c.W ^ d.X ^ d.Y ^ d.Z ^ d.W;
        if (x == 0x9E3779B9u && a.X == 0x7F7F7F7Fu) sink[0] = a;
    }

    /// <summary>W's bytes read in the base form's order (a warp per 16 rows × a K range, 8 rows × 64 bytes per
    /// instruction, 4 chunks of 64 inputs issued together) against the same bytes laid out so that each warp's chunk is
    /// 2 KB in a row (32 lanes × 16 bytes per instruction): does the order, not the count, of the loads set the rate?</summary>
    static void ReadPatterns(Device dev, int outDim, int inDim, int warm, int samples, int perSample, Func<Tensor> w, Tensor sink)
    {
        var (split, per) = TenantLinear.BaseSplit(dev, outDim, inDim);
        int tiles = outDim / 16, warps = tiles * split;
        var k = dev.GroupedKernel<Action<KernelConfig, ArrayView<MatMul.Vec16>, ArrayView<MatMul.Vec16>, int, int, int, int>>(ReadTileKernel);
        double Rate(int mode) => 2.0 * outDim * inDim / Median(dev, warm, samples, perSample,
            () => k(new KernelConfig((warps + 3) / 4, 128), w().View<MatMul.Vec16>(), sink.View<MatMul.Vec16>(), inDim, tiles, per, mode)) / 1e3;
        Console.WriteLine($"  read {outDim}×{inDim} as the base form walks it: row-major {Rate(0):F0} GB/s, chunk-contiguous {Rate(1):F0} GB/s ({warps} warps of {per} chunks)");
        int sms = dev.Accelerator?.NumMultiprocessors ?? 1;
        using var words = Tensor.Empty([8 * sms * 128], DType.I32, dev);
        var bulk = string.Join(", ", new[] { 1, 2, 4, 6 }.Select(b => $"{b}/SM {2.0 * outDim * inDim / Median(dev, warm, samples, perSample, () => Bulk.ReadProbe(w(), words, b * sms)) / 1e3:F0}"));
        Console.WriteLine($"  read {outDim}×{inDim} through the copy engine (Bulk.ReadProbe: a block streams its contiguous share through a ring of {Bulk.ProbeStages} × {Bulk.ProbeStageVecs * 16 / 1024} KB), blocks per SM: {bulk} GB/s");
    }

    static void ReadTileKernel(ArrayView<MatMul.Vec16> w16, ArrayView<MatMul.Vec16> sink, int inDim, int tiles, int per, int mode)
    {
        var w = w16.AsAligned(16);
        int warp = Grid.IdxX * 4 + Warp.WarpIdx, lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3, chunks = inDim / 64;
        int tile = warp % tiles, ks = warp / tiles, c0 = ks * per, c1 = Math.Min(chunks, c0 + per);
        if (c0 >= chunks) return;
        long wStride = inDim / 8, oG = (long)tile * 16 + g;
        long d1 = mode == 0 ? 4 : 32, d2 = mode == 0 ? 8 * wStride : 64, d3 = d2 + d1;
        uint x = 0;
        for (int c = c0; c < c1; c += 4)
        {
            // four chunks' loads (the last clamped to the range: re-reads hit the cache) before any is used
            long a0 = At(mode, oG, wStride, tile, chunks, c, lane, t), a1 = At(mode, oG, wStride, tile, chunks, Math.Min(c + 1, c1 - 1), lane, t);
            long a2 = At(mode, oG, wStride, tile, chunks, Math.Min(c + 2, c1 - 1), lane, t), a3 = At(mode, oG, wStride, tile, chunks, Math.Min(c + 3, c1 - 1), lane, t);
            MatMul.Vec16 p0 = w[a0], q0 = w[a0 + d1], r0 = w[a0 + d2], u0 = w[a0 + d3];
            MatMul.Vec16 p1 = w[a1], q1 = w[a1 + d1], r1 = w[a1 + d2], u1 = w[a1 + d3];
            MatMul.Vec16 p2 = w[a2], q2 = w[a2 + d1], r2 = w[a2 + d2], u2 = w[a2 + d3];
            MatMul.Vec16 p3 = w[a3], q3 = w[a3 + d1], r3 = w[a3 + d2], u3 = w[a3 + d3];
            x ^= Xor(p0) ^ Xor(q0) ^ Xor(r0) ^ Xor(u0) ^ Xor(p1) ^ Xor(q1) ^ Xor(r1) ^ Xor(u1);
            x ^= Xor(p2) ^ Xor(q2) ^ Xor(r2) ^ Xor(u2) ^ Xor(p3) ^ Xor(q3) ^ Xor(r3) ^ Xor(u3);
        }
        if (x == 0x9E3779B9u && lane == 31) sink[0] = new MatMul.Vec16 { X = x };
    }

    /// <summary>T tenants' signs read as the bit-serial products walk them (a warp per 32 outputs of one tenant, each
    /// 512-input chunk as 4 loads a lane of 64 bytes from each of the 32 rows, the next chunk's loads out before this one's
    /// are used) against the same bytes read by each warp as one contiguous span (4 × 512 bytes a step), in the same
    /// blocks of 4 warps with the same loads in flight: is it the order of the sign reads that holds that form back? Then
    /// both with two chunks a step (8 loads a lane in flight, 128 bytes of each row a step); then a warp walking its rows
    /// 8 at a time, 4 chunks a step (256 bytes of each of 8 rows a step, 4 loads a lane).</summary>
    static void ReadSignPatterns(Device dev, int T, int outDim, int inDim, int warm, int samples, int perSample, Func<Tensor> signs)
    {
        int whole = inDim / 512, rowsAll = T * outDim, warps = (rowsAll + 31) / 32;
        if (whole < 2 || rowsAll % 32 != 0) return;   // the probe reads whole chunks, two at a time in its last two forms
        using var sink = Tensor.Empty([4], DType.I32, dev);
        var k = dev.GroupedKernel<Action<KernelConfig, ArrayView<MatMul.Vec16>, ArrayView<MatMul.Vec16>, int, int, int>>(ReadSignsKernel);
        double bytes = (double)rowsAll * whole * 64, bytes2 = (double)rowsAll * (whole / 2 * 2) * 64, bytes4 = (double)rowsAll * (whole / 4 * 4) * 64;
        double Rate(int mode) => (mode == 4 ? bytes4 : mode >= 2 ? bytes2 : bytes) / Median(dev, warm, samples, perSample,
            () => k(new KernelConfig((warps + 3) / 4, 128), signs().View<MatMul.Vec16>(), sink.View<MatMul.Vec16>(), inDim / 128, rowsAll, mode)) / 1e3;
        Console.WriteLine($"  read {T} tenants' signs of {outDim}×{inDim} as the bit-serial products walk them: {Rate(0):F0} GB/s, each warp's span contiguous: {Rate(1):F0} GB/s; two chunks a step (128 bytes a row): {Rate(2):F0} GB/s, span: {Rate(3):F0} GB/s; a tile of 8 rows at a time, 256 bytes a row a step: {Rate(4):F0} GB/s");
    }

    static void ReadSignsKernel(ArrayView<MatMul.Vec16> signs16, ArrayView<MatMul.Vec16> sink, int vecs, int rowsAll, int mode)
    {
        var s = signs16.AsAligned(16);
        int warp = Grid.IdxX * 4 + Warp.WarpIdx, lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3, whole = vecs / 4;
        long r0 = 32L * warp;
        if (r0 + 32 > rowsAll || whole < (mode >= 2 ? 2 : 1)) return;   // whole chunks only (two for a two-chunk step)
        if (mode == 4)
        {
            // a tile of 8 rows at a time, 4 chunks a step: load j of lane (g, t) at row r0 + 8·tile + g, unit 4(c + j) + t, so
            // a row's 256 bytes come in one step (4 loads a lane, the next step's out before this one's are used)
            int quads = whole / 4, steps = 4 * quads;
            if (steps == 0) return;
            uint y = 0;
            long a0 = TileAt(r0, 0, quads, g, vecs, t);
            var p0 = s[a0];
            var p1 = s[a0 + 4];
            var p2 = s[a0 + 8];
            var p3 = s[a0 + 12];
            for (int k = 0; k < steps; k++)
            {
                var q0 = p0;
                var q1 = p1;
                var q2 = p2;
                var q3 = p3;
                if (k + 1 < steps)
                {
                    long a = TileAt(r0, k + 1, quads, g, vecs, t);
                    p0 = s[a];
                    p1 = s[a + 4];
                    p2 = s[a + 8];
                    p3 = s[a + 12];
                }
                y = (y << 1 | y >> 31) ^ Xor(q0) ^ Xor(q1) ^ Xor(q2) ^ Xor(q3);
            }
            if (y == 0x9E3779B9u && lane == 31) sink[0] = new MatMul.Vec16 { X = y };
            return;
        }
        // modes 0 and 2: chunk c's unit j of lane (g, t) at row r0 + g + 8j, unit 4c + t; modes 1 and 3: unit (4c + j)·32 +
        // lane of the warp's span. Modes 2 and 3 take two chunks a step (8 loads a lane in flight, 128 bytes a row a step).
        bool span = mode == 1 || mode == 3;
        int step = mode >= 2 ? 2 : 1;
        long b = span ? r0 * vecs + lane : (r0 + g) * vecs + t, dc = span ? 128 : 4, dj = span ? 32 : 8L * vecs;
        uint x = 0;
        var n0 = s[b];
        var n1 = s[b + dj];
        var n2 = s[b + 2 * dj];
        var n3 = s[b + 3 * dj];
        MatMul.Vec16 m0 = default, m1 = default, m2 = default, m3 = default;
        if (step == 2)
        {
            m0 = s[b + dc];
            m1 = s[b + dc + dj];
            m2 = s[b + dc + 2 * dj];
            m3 = s[b + dc + 3 * dj];
        }
        for (int c = 0; c + step <= whole; c += step)
        {
            var c0 = n0;
            var c1 = n1;
            var c2 = n2;
            var c3 = n3;
            var e0 = m0;
            var e1 = m1;
            var e2 = m2;
            var e3 = m3;
            if (c + 2 * step <= whole)
            {
                long a = b + (c + step) * dc;
                n0 = s[a];
                n1 = s[a + dj];
                n2 = s[a + 2 * dj];
                n3 = s[a + 3 * dj];
                if (step == 2)
                {
                    m0 = s[a + dc];
                    m1 = s[a + dc + dj];
                    m2 = s[a + dc + 2 * dj];
                    m3 = s[a + dc + 3 * dj];
                }
            }
            x = (x << 1 | x >> 31) ^ Xor(c0) ^ Xor(c1) ^ Xor(c2) ^ Xor(c3) ^ Xor(e0) ^ Xor(e1) ^ Xor(e2) ^ Xor(e3);
        }
        if (x == 0x9E3779B9u && lane == 31) sink[0] = new MatMul.Vec16 { X = x };
    }

    /// <summary>Step k of <see cref="ReadSignsKernel"/>'s tile walk: lane (g, t)'s first unit.</summary>
    static long TileAt(long r0, int k, int quads, int g, int vecs, int t) => (r0 + 8 * (k / quads) + g) * vecs + 16L * (k % quads) + t;

    static long At(int mode, long oG, long wStride, int tile, int chunks, int c, int lane, int t) =>
        mode == 0 ? oG * wStride + c * 8L + t : ((long)tile * chunks + c) * 128 + lane;

    static uint Xor(MatMul.Vec16 v) => v.X ^ v.Y ^ v.Z ^ v.W;

    /// <summary>
    /// The tensor cores' rate on one product shape alone: every warp runs 4 independent chains of the product (so
    /// its latency is hidden), on registers only. Tells whether the bit-serial form's b1 products or the f16 ones can
    /// keep up with the bytes (bench/NOTES.md).
    /// </summary>
    static void MmaRate(Device dev, bool cuda)
    {
        int iters = cuda ? 4096 : 4, blocks = cuda ? 132 * 8 : 2;
        using var sink = Tensor.Empty([blocks * 128], DType.I32, dev);
        var f16 = dev.GroupedKernel<Action<KernelConfig, ArrayView<int>, int>>(RateF16Kernel);
        var b1 = dev.GroupedKernel<Action<KernelConfig, ArrayView<int>, int>>(RateB1Kernel);
        double usF16 = Median(dev, 1, cuda ? 5 : 1, 1, () => f16(new KernelConfig(blocks, 128), sink.View<int>(), iters));
        double usB1 = Median(dev, 1, cuda ? 5 : 1, 1, () => b1(new KernelConfig(blocks, 128), sink.View<int>(), iters));
        double n = (double)blocks * 4 * iters * 4;   // products
        Console.WriteLine($"\ntensor-core rate, {blocks} blocks of 4 warps × 4 chains × {iters}: f16 m16n8k16 {n / usF16 / 1e3:F2} G products/s " +
                          $"({n * 2 * 16 * 8 * 16 / usF16 / 1e6:F0} TFLOP/s); b1 m16n8k256 and.popc {n / usB1 / 1e3:F2} G products/s " +
                          $"({n * 16 * 8 * 256 / usB1 / 1e6:F0} T bit-products/s)");
    }

    static void RateF16Kernel(ArrayView<int> sink, int iters)
    {
        var sa = SharedMemory.Allocate<float>(4 * 256);
        var sb = SharedMemory.Allocate<float>(4 * 128);
        int lane = Warp.LaneIdx, wi = Warp.WarpIdx;
        var a = sa.SubView(wi * 256, 256);
        var b = sb.SubView(wi * 128, 128);
        uint v = (uint)lane * 0x3C003C00u;
        Mma.Float4 d0 = default, d1 = default, d2 = default, d3 = default;
        for (int i = 0; i < iters; i++)
        {
            d0 = Mma.M16N8K16(v, v, v, v, v, v, d0.X, d0.Y, d0.Z, d0.W, a, b, lane);
            d1 = Mma.M16N8K16(v, v, v, v, v, v, d1.X, d1.Y, d1.Z, d1.W, a, b, lane);
            d2 = Mma.M16N8K16(v, v, v, v, v, v, d2.X, d2.Y, d2.Z, d2.W, a, b, lane);
            d3 = Mma.M16N8K16(v, v, v, v, v, v, d3.X, d3.Y, d3.Z, d3.W, a, b, lane);
        }
        sink[Grid.GlobalIndex.X] = (int)(d0.X + d1.Y + d2.Z + d3.W);
    }

    static void RateB1Kernel(ArrayView<int> sink, int iters)
    {
        int lane = Warp.LaneIdx;
        uint v = (uint)lane * 0x9E3779B9u;
        Mma.Int4 d0 = default, d1 = default, d2 = default, d3 = default;
        for (int i = 0; i < iters; i++)
        {
            d0 = Mma.M16N8K256And(v, v, v, v, v, v, d0.X, d0.Y, d0.Z, d0.W, lane);
            d1 = Mma.M16N8K256And(v, v, v, v, v, v, d1.X, d1.Y, d1.Z, d1.W, lane);
            d2 = Mma.M16N8K256And(v, v, v, v, v, v, d2.X, d2.Y, d2.Z, d2.W, lane);
            d3 = Mma.M16N8K256And(v, v, v, v, v, v, d3.X, d3.Y, d3.Z, d3.W, lane);
        }
        sink[Grid.GlobalIndex.X] = d0.X + d1.Y + d2.Z + d3.W;
    }
}

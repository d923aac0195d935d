using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using BitDeltaNative.Models;
using BitDeltaNative.Serving;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command ServeCommand()
    {
        var model = new Option<string>("--base", "--model") { Description = "the base model's Hugging Face folder (config.json, *.safetensors, tokenizer)", Required = true };
        var delta = new Option<string[]>("--delta") { Description = "a tenant as NAME=FILE (a delta made from --base by bitdelta compress); give it once per tenant", AllowMultipleArgumentsPerToken = false };
        var deltaDir = new Option<string?>("--deltas") { Description = "a folder of delta files: each *.safetensors is a tenant named after its file" };
        var host = new Option<string>("--host") { Description = "address to listen on (loopback by default; 0.0.0.0 exposes the server to the network)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0: any free port)", DefaultValueFactory = _ => 8000 };
        var maxBatch = new Option<int>("--max-batch") { Description = "sequences decoded together at most (KV-cache slots)", DefaultValueFactory = _ => 16 };
        var context = new Option<int>("--context") { Description = "tokens a sequence may hold, prompt and completion (default: the model's, at most 2048)" };
        var gpuMemory = new Option<double?>("--gpu-memory") { Description = "device memory budget in GB for base, KV cache and deltas; tenants beyond it load from disk on demand, evicting the least recently used idle one" };
        var slots = new Option<int?>("--resident") { Description = "tenants held on the device at once (default: as many as the budget allows, at most all)" };
        var maxQueue = new Option<int>("--max-queue") { Description = "requests waiting for a batch slot at most; more are refused with 429", DefaultValueFactory = _ => 256 };
        var prefillChunk = new Option<int>("--prefill-chunk") { Description = "prompt tokens per step at most, so long prompts do not stall running sequences", DefaultValueFactory = _ => 512 };
        var cmd = new Command("serve", "Serve a base model and many compressed fine-tunes over an OpenAI-compatible HTTP API (continuous batching across tenants), with a chat page at /.");
        foreach (var o in new Option[] { model, delta, deltaDir, host, port, maxBatch, context, gpuMemory, slots, maxQueue, prefillChunk, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            string dir = r.GetValue(model)!;
            var deltas = ParseDeltas(r.GetValue(delta) ?? []);
            if (deltas.Any(d => d.Name == null)) throw new BitDeltaException("--delta: name each tenant as NAME=FILE");
            var all = deltas.Select(d => (d.Name!, d.Path)).ToList();
            if (r.GetValue(deltaDir) is { } folder)
            {
                if (!Directory.Exists(folder)) throw new BitDeltaException($"--deltas {folder}: no such folder");
                foreach (var f in Directory.GetFiles(folder, "*.safetensors").Order(StringComparer.Ordinal))
                {
                    string name = Path.GetFileNameWithoutExtension(f);
                    Engine.CheckName(name);
                    if (all.Any(a => a.Item1 == name)) throw new BitDeltaException($"--deltas {folder}: tenant '{name}' is also given by --delta");
                    all.Add((name, f));
                }
            }
            var config = LlamaConfig.Load(dir);
            var tokenizer = Tokenizer.Load(dir, config);
            var sw = Stopwatch.StartNew();
            using var m = LlamaModel.Load(dir, dev, progress: ProgressLine("loading weights"));
            Console.Error.WriteLine($"loaded {dir} on {dev} in {sw.Elapsed.TotalSeconds:F1} s ({m.Weights.ByteLength / 1e9:F2} GB)");

            int ctx = r.GetValue(context) is > 0 and var c ? c : Math.Min(m.MaxPositions, 2048);
            var kvType = SchedulerOptions.KvTypeFor(m);
            int batch = r.GetValue(maxBatch);
            long kvBytes = KvCacheMemory.ByteCount(config, Math.Max(batch, 1), ctx, kvType);
            long? budget = r.GetValue(gpuMemory) is { } gb ? (long)(gb * 1e9) : dev.IsIlgpu && dev.Kind == DeviceKind.Cuda ? (long)(dev.Accelerator.MemorySize * 0.9) : null;
            long slotBytes = DeltaPool.SlotBytes(m.Weights);
            var whole = all.Select(t => { using var f = DeltaFile.Open(t.Item2); return f.ResidentBytes; }).ToList();
            var (capacity, poolBudget) = TenantCache.Plan(budget, m.Weights.ByteLength, kvBytes, slotBytes, whole, r.GetValue(slots));

            using var engine = new Engine(m, capacity, dir);
            var tenants = new TenantCache(engine, all, poolBudget);
            var scheduler = new Scheduler(engine, tenants, tokenizer, new SchedulerOptions(batch, ctx, r.GetValue(maxQueue), r.GetValue(prefillChunk), kvType));
            Console.Error.WriteLine($"{all.Count} tenant(s) registered, {capacity} resident at once ({slotBytes / 1e6:F1} MB each plus any whole tensors); " +
                                    $"KV cache {scheduler.KvCacheBytes / 1e9:F2} GB for {batch} sequences of {ctx} tokens ({kvType})");
            var chat = ChatTemplate.Load(dir, tokenizer);
            Console.Error.WriteLine($"chat template: {chat.Name}");
            var server = Server.StartAsync(scheduler, tenants, tokenizer, r.GetValue(host)!, r.GetValue(port), chatTemplate: chat).GetAwaiter().GetResult();
            Console.Error.WriteLine($"serving on {server.Address} (OpenAI API under /v1, chat page at /, metrics at /metrics); Ctrl+C stops");
            using var done = new ManualResetEventSlim();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx2 => { ctx2.Cancel = true; done.Set(); });
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx2 => { ctx2.Cancel = true; done.Set(); });
            done.Wait();
            Console.Error.WriteLine("stopping");
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            return 0;
        }));
        return cmd;
    }
}
